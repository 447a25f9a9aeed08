/** `make deps` on a machine that has everything: a fast no-op. As a non-root user: one clear line. */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { PROJECT_ROOT } from '../../node-runtime/constants.js';

const script = path.join(PROJECT_ROOT, 'scripts', 'deps.sh');

test('a second run of deps is a no-op that takes seconds', (t) => {
  const t0 = Date.now();
  const r = spawnSync('bash', [script], { encoding: 'utf8', timeout: 120_000 });
  const tookMs = Date.now() - t0;
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /Debian packages: all \d+ present/);
  t.regex(r.stdout, /criu \d+\.\d+\.\d+: cached at /);
  t.regex(r.stdout, /node modules: up to date/);
  t.true(tookMs < 30_000, `took ${tookMs} ms`);
});

test('deps run by a user other than root says so in one line', (t) => {
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'bash', script], { encoding: 'utf8', timeout: 30_000 });
  t.is(r.status, 1);
  t.is(r.stderr, 'podmotion deps: run as root: namespaces, CRIU and eBPF need it (try: sudo make deps).\n');
});

test('doctor reports every required check as passing on this machine, as JSON', (t) => {
  const r = spawnSync(process.execPath, [path.join(PROJECT_ROOT, 'dist', 'cli', 'podmotion.js'), 'doctor', '--json'], { encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 0, r.stdout);
  const out = JSON.parse(r.stdout) as { ok: boolean; checks: Array<{ name: string; ok: boolean; required: boolean }> };
  t.true(out.ok);
  const names = out.checks.map((c) => c.name);
  for (const n of ['root', 'kernel CHECKPOINT_RESTORE', 'kernel VXLAN', 'tool nats-server', 'criu']) t.true(names.includes(n), n);
  t.false(out.checks.find((c) => c.name === 'kernel MEM_SOFT_DIRTY')!.required, 'soft-dirty is reported, not required');
});
