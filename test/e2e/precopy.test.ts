/**
 * Memory strategies on a pod whose memory the pod itself can check (mem_writer.py): PreCopy and Cold move it
 * with its memory intact while one connection stays up; a failing pre-copy round and a cancel during
 * pre-copy roll back cleanly.
 */
import test from 'ava';
import path from 'node:path';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { cli, cliJson, snapshot } from '../integration/helpers.js';
import { readClusterRecord } from '../../node-runtime/records.js';
import { PYTHON, WORKLOADS } from '../../cli/load.js';
import { imagesLeft } from './helpers.js';

const CLUSTER = 'itpre';
const PORT = 7099;
let checker: ChildProcessWithoutNullStreams | undefined;
let ask: (() => Promise<string>) | undefined;

test.before(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  process.env['PODMOTION_TEST_HOOKS'] = '1';
  await cliJson(['cluster', 'up', '--nodes', '3', '--cluster', CLUSTER]);
  const pod = await cliJson(['pod', 'run', 'mem', '--node', 'node-1', '--port', String(PORT), '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'mem_writer.py'), String(PORT), '32', '10']);
  const client = (await readClusterRecord(CLUSTER))!.plan.client.netns;
  // One connection for the whole test: every "check" goes over it, so it must survive every move.
  const script = `import socket,sys\ns=socket.create_connection(("${pod.ip}",${PORT}),timeout=60)\nf=s.makefile("rb")\nfor line in sys.stdin:\n  s.sendall(b"check\\n"); print(f.readline().decode().strip(), flush=True)\n`;
  checker = spawn('nsenter', [`--net=/run/netns/${client}`, '--', PYTHON, '-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = createInterface({ input: checker.stdout })[Symbol.asyncIterator]();
  ask = async () => {
    checker!.stdin.write('check\n');
    const r = await lines.next();
    return r.done ? 'connection lost' : r.value;
  };
});
test.after.always(async () => {
  checker?.kill('SIGKILL');
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
});

async function where(): Promise<string> {
  return (await cliJson(['pod', 'list', '--cluster', CLUSTER])).pods.find((p: { name: string }) => p.name === 'mem').node;
}

test.serial('PreCopy moves a pod that keeps writing, with its memory intact and fewer bytes in the freeze', async (t) => {
  t.regex(await ask!(), /^ok 8192 \d+$/);
  const r = await cli(['migrate', 'mem', '--to-node', 'node-2', '--strategy', 'PreCopy', '--wait', '--json', '--cluster', CLUSTER], 240_000);
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'Complete', JSON.stringify(s.error));
  const pre = s.results.PreCopyMemory;
  t.true(pre.roundCount >= 2, `rounds: ${pre.roundCount}`);
  t.true(['converged', 'stalled', 'max-rounds', 'time-limit'].includes(pre.stopped));
  t.true(pre.memoryBytes >= 32 << 20);
  const ff = s.results.FinalFreeze;
  t.true(ff.referencedPages > 0, 'pages delivered by pre-copy travel by reference');
  t.true(ff.wireBytes < ff.bytes / 2, `freeze sent ${ff.wireBytes} of a ${ff.bytes}-byte checkpoint`);
  t.is(s.results.Restore.pagesFromCache, ff.referencedPages);
  t.regex(await ask!(), /^ok 8192 \d+$/, 'every page intact after the move, over the same connection');
  t.is(await where(), 'node-2');
  t.deepEqual(await imagesLeft(s.spec.id), [], 'checkpoint images and page caches are wiped');
});

test.serial('Cold moves the same pod with its memory intact', async (t) => {
  const r = await cli(['migrate', 'mem', '--to-node', 'node-3', '--strategy', 'Cold', '--wait', '--json', '--cluster', CLUSTER], 240_000);
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'Complete');
  t.is(s.results.FinalFreeze.referencedPages, undefined);
  t.regex(await ask!(), /^ok 8192 \d+$/);
  t.is(await where(), 'node-3');
});

test.serial('a failing pre-copy round rolls back; the pod and its connection carry on', async (t) => {
  const r = await cli(['migrate', 'mem', '--to-node', 'node-1', '--strategy', 'PreCopy', '--fail-at', 'PreCopyMemory', '--wait', '--json', '--cluster', CLUSTER], 240_000);
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'RolledBack');
  t.is(s.error.phase, 'PreCopyMemory');
  t.is(await where(), 'node-3');
  t.regex(await ask!(), /^ok 8192 \d+$/);
  t.false((await snapshot(CLUSTER)).netns.includes(`pm-${CLUSTER}-node-1-pod-mem`));
  t.deepEqual(await imagesLeft(s.spec.id), [], 'page caches of the attempt are gone');
});

test.serial('a cancel during pre-copy rolls back', async (t) => {
  const running = cli(['migrate', 'mem', '--to-node', 'node-1', '--strategy', 'PreCopy', '--pause-at', 'PreCopyMemory', '--wait', '--json', '--cluster', CLUSTER], 240_000);
  let id = '';
  for (let i = 0; i < 200 && !id; i++) {
    const l = await cliJson(['list', '--active', '--cluster', CLUSTER]);
    id = l.migrations.find((m: { phase: string }) => m.phase === 'PreCopyMemory')?.id ?? '';
    if (!id) await new Promise((res) => setTimeout(res, 50));
  }
  t.truthy(id, 'the migration reached PreCopyMemory');
  const c = await cli(['cancel', id, '--cluster', CLUSTER]);
  t.is(c.code, 0, c.stderr);
  const s = JSON.parse((await running).stdout);
  t.is(s.phase, 'Cancelled');
  t.is(await where(), 'node-3');
  t.regex(await ask!(), /^ok 8192 \d+$/);
  t.deepEqual(await imagesLeft(id), []);
});
