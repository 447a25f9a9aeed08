/**
 * Redis (run as the redis user, its append-only file on a local volume) migrates twice while a checker
 * writes key k:N = N and increments a counter over one connection: every key is there with its value, the
 * counter equals the increments acknowledged, and the checker saw no error.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { cli, cliJson } from '../integration/helpers.js';
import { WORKLOADS } from '../../cli/load.js';
import { readClusterRecord } from '../../node-runtime/records.js';

const CLUSTER = 'itredis';
const PORT = 6379;

test.before(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  await cliJson(['cluster', 'up', '--nodes', '2', '--cluster', CLUSTER]);
});
test.after.always(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
});

test('two migrations under writes: every key present, the counter exact, no error', async (t) => {
  const pod = await cliJson(['pod', 'run', 'cache', '--node', 'node-1', '--port', String(PORT), '--user', 'redis', '--volume', 'data',
    '--cluster', CLUSTER, '--', path.join(WORKLOADS, 'redis_pod.sh'), String(PORT)]);
  const netns = (await readClusterRecord(CLUSTER))!.plan.client.netns;
  const checker = spawn('nsenter', [`--net=/run/netns/${netns}`, '--', 'python3', path.join(WORKLOADS, 'redis_checker.py'), pod.ip, String(PORT), '10'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  checker.stdout.on('data', (b: Buffer) => (out += b.toString()));
  checker.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const done = new Promise<number>((resolve) => checker.on('close', (code) => resolve(code ?? -1)));
  await new Promise((r) => setTimeout(r, 2000));
  for (const to of ['node-2', 'node-1']) {
    const r = await cli(['migrate', 'cache', '--to-node', to, '--wait', '--json', '--cluster', CLUSTER], 120_000);
    const s = JSON.parse(r.stdout);
    t.is(s.phase, 'Complete', JSON.stringify(s.error));
    t.is(s.results.TCPVerifying.preserved, s.results.TCPVerifying.connections);
    t.true(s.results.TCPVerifying.connections >= 1, "the checker's connection was live at the freeze");
    t.is(s.results.TCPVerifying.rst, 0);
    await new Promise((r) => setTimeout(r, 1500));
  }
  t.is(await done, 0, out);
  const res = JSON.parse(out.trim().split('\n').at(-1)!);
  t.is(res.errors, 0, out);
  t.true(res.keys > 1000, `${res.keys} keys written`);
  t.is(res.missing, 0);
  t.is(res.wrong, 0);
  t.is(res.counter, res.increments);
});
