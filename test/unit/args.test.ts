/** CLI configuration: flags, defaults, the pod command after --, and one-line usage errors. */
import test from 'ava';
import { clusterName, intOption, parse, requirePositional } from '../../cli/args.js';
import { UsageError } from '../../cli/output.js';
import { busFromEnv } from '../../bus/connection.js';

test('everything after -- belongs to the pod command, flags included', (t) => {
  const p = parse(['run', 'web', '--node', 'node-1', '--', 'python3', '-m', 'http.server', '--json'], { node: { type: 'string' } });
  t.deepEqual(p.positionals, ['run', 'web']);
  t.is(p.values['node'], 'node-1');
  t.deepEqual(p.rest, ['python3', '-m', 'http.server', '--json']);
  t.false(p.values['json']);
});

test('unknown flags are usage errors naming the flag', (t) => {
  const err = t.throws(() => parse(['--bogus'], {}));
  t.true(err instanceof UsageError);
  t.regex(err!.message, /--bogus/);
});

test('cluster name: flag, then PODMOTION_CLUSTER, then the default', (t) => {
  const saved = process.env['PODMOTION_CLUSTER'];
  try {
    delete process.env['PODMOTION_CLUSTER'];
    t.is(clusterName(parse([], {})), 'local');
    process.env['PODMOTION_CLUSTER'] = 'fromenv';
    t.is(clusterName(parse([], {})), 'fromenv');
    t.is(clusterName(parse(['--cluster', 'flag'], {})), 'flag');
  } finally {
    if (saved === undefined) delete process.env['PODMOTION_CLUSTER'];
    else process.env['PODMOTION_CLUSTER'] = saved;
  }
});

const intCases: Array<[string[], number | RegExp]> = [
  [[], 3],
  [['--nodes', '5'], 5],
  [['--nodes', '0'], /--nodes must be a whole number from 1 to 50 \(got 0\)/],
  [['--nodes', 'x'], /got x/],
  [['--nodes', '2.5'], /got 2.5/],
];
for (const [argv, want] of intCases) {
  test(`intOption ${argv.join(' ') || '(default)'}`, (t) => {
    const p = parse(argv, { nodes: { type: 'string' } });
    if (typeof want === 'number') t.is(intOption(p, 'nodes', 3, 1, 50), want);
    else t.regex(t.throws(() => intOption(p, 'nodes', 3, 1, 50))!.message, want);
  });
}

test('a missing positional says what is missing', (t) => {
  t.regex(t.throws(() => requirePositional(parse([], {}), 0, 'pod name'))!.message, /^missing pod name$/);
});

test('bus address from the environment', (t) => {
  t.is(busFromEnv({}), undefined);
  t.deepEqual(busFromEnv({ NATS_URL: 'nats://127.0.0.1:4222' }), { url: 'nats://127.0.0.1:4222' });
  t.deepEqual(busFromEnv({ NATS_URL: 'nats://h:1', PODMOTION_NKEY: '/x.nk' }), { url: 'nats://h:1', seedFile: '/x.nk' });
});
