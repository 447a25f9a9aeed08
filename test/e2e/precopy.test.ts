/**
 * Memory strategies on a pod whose memory the pod itself can check (mem_writer.py): PreCopy, Cold and
 * PostCopy move it with its memory intact while one connection stays up; a failing pre-copy round, a cancel
 * during pre-copy and a PostCopy failure before the pod resumes roll back cleanly; a PostCopy failure after
 * every page arrived moves the pod back; a page stream broken after the pod resumed is reported as the pod
 * lost, with nothing left behind.
 */
import test from 'ava';
import path from 'node:path';
import { cli, cliJson, snapshot } from '../integration/helpers.js';
import { readClusterRecord } from '../../node-runtime/records.js';
import { PYTHON, WORKLOADS } from '../../cli/load.js';
import { imagesLeft, startMemoryChecker, type MemoryChecker } from './helpers.js';

const CLUSTER = 'itpre';
const PORT = 7099;
let checker: MemoryChecker | undefined;
let ask: (() => Promise<string>) | undefined;

test.before(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  process.env['PODMOTION_TEST_HOOKS'] = '1';
  await cliJson(['cluster', 'up', '--nodes', '3', '--cluster', CLUSTER]);
  const pod = await cliJson(['pod', 'run', 'mem', '--node', 'node-1', '--port', String(PORT), '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'mem_writer.py'), String(PORT), '32', '10']);
  checker = await startMemoryChecker(CLUSTER, pod.ip, PORT);
  ask = () => checker!.ask();
});
test.after.always(async () => {
  checker?.kill();
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
});

/** Whether this kernel tracks written pages (pm-wpcheck): then a pre-copy's freeze is the tracked one. */
async function tracksWrites(): Promise<boolean> {
  const { run } = await import('../../node-runtime/exec.js');
  const { NATIVE_DIR } = await import('../../node-runtime/constants.js');
  return run(path.join(NATIVE_DIR, 'pm-wpcheck'), []).then((r) => (JSON.parse(r.stdout) as { ok: boolean }).ok, () => false);
}

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
  if (await tracksWrites()) {
    // Writes tracked: only the pages written since the last round cross in the freeze; the destination
    // restores every other page from the rounds, and has all of them before the pod runs there.
    t.true(ff.lazyFromRounds, 'a tracked freeze');
    t.true(ff.wireBytes < pre.memoryBytes / 4, `freeze sent ${ff.wireBytes} bytes of a ${pre.memoryBytes}-byte pod`);
    t.true(ff.finalPages * 4096 < pre.memoryBytes / 4, `${ff.finalPages} pages written since the last round`);
    t.true(s.results.ServiceVerifying.lazyFillBytes >= 32 << 20, 'the whole memory was filled in from what arrived');
  } else {
    t.true(ff.wireBytes < ff.bytes / 2, `freeze sent ${ff.wireBytes} of a ${ff.bytes}-byte checkpoint`);
    t.is(s.results.Restore.pagesFromCache, ff.referencedPages);
  }
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

/** Post-copy helpers still running for this cluster's migrations (page sources, lazy-pages daemons). */
async function postcopyProcesses(): Promise<string[]> {
  const { execFile } = await import('node:child_process');
  const out = await new Promise<string>((res) => execFile('pgrep', ['-af', 'pm-page-source|criu lazy-pages'], (_e, so) => res(so)));
  return out.split('\n').filter((l) => l.includes(`/dev/shm/podmotion/${CLUSTER}-`) || l.includes('pm-page-source'));
}

test.serial('PostCopy resumes the pod before its memory arrives; every page is there after the move', async (t) => {
  const from = await where();
  const to = from === 'node-2' ? 'node-1' : 'node-2';
  const r = await cli(['migrate', 'mem', '--to-node', to, '--strategy', 'PostCopy', '--wait', '--json', '--cluster', CLUSTER], 240_000);
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'Complete', JSON.stringify(s.error));
  t.false('PreCopyMemory' in s.results, 'no pre-copy rounds');
  const ff = s.results.FinalFreeze;
  t.true(ff.lazyBytes >= 32 << 20, `lazy: ${ff.lazyBytes}`);
  t.true(ff.bytes < ff.lazyBytes / 4, `the freeze carried ${ff.bytes} bytes of a ${ff.lazyBytes}-byte working set`);
  t.true(s.results.ServiceVerifying.postCopyBytes >= ff.lazyBytes, 'every lazy page crossed after the restore');
  t.regex(await ask!(), /^ok 8192 \d+$/, 'memory intact, over the connection that was open during the move');
  t.is(await where(), to);
  t.deepEqual(await imagesLeft(s.spec.id), []);
  t.deepEqual(await postcopyProcesses(), []);
});

test.serial('PostCopy failing before the pod resumes rolls back; the source serves with its memory', async (t) => {
  const from = await where();
  const to = from === 'node-3' ? 'node-1' : 'node-3';
  const r = await cli(['migrate', 'mem', '--to-node', to, '--strategy', 'PostCopy', '--fail-at', 'OverlayHandoff', '--wait', '--json', '--cluster', CLUSTER], 240_000);
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'RolledBack', JSON.stringify(s.error));
  t.is(await where(), from);
  t.regex(await ask!(), /^ok 8192 \d+$/);
  t.deepEqual(await imagesLeft(s.spec.id), []);
  t.deepEqual(await postcopyProcesses(), []);
});

test.serial('PostCopy failing after every page arrived moves the pod back whole', async (t) => {
  const from = await where();
  const to = from === 'node-3' ? 'node-1' : 'node-3';
  const r = await cli(['migrate', 'mem', '--to-node', to, '--strategy', 'PostCopy', '--fail-at', 'ServiceVerifying', '--wait', '--json', '--cluster', CLUSTER], 240_000);
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'RolledBack', JSON.stringify(s.error));
  t.true(s.results.RollingBack.reclaimed, 'the copy that served moved back');
  t.is(await where(), from);
  t.regex(await ask!(), /^ok 8192 \d+$/);
  t.deepEqual(await imagesLeft(s.spec.id), []);
  t.deepEqual(await postcopyProcesses(), []);
});

test.serial('PreCopy that cannot converge switches to PostCopy with --allow-post-copy', async (t) => {
  // 8 MiB rewritten every ~40 ms: every round finds most of it changed again.
  const hot = await cliJson(['pod', 'run', 'hot', '--node', 'node-1', '--port', String(PORT + 1), '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'mem_writer.py'), String(PORT + 1), '8', '200']);
  const client = (await readClusterRecord(CLUSTER))!.plan.client.netns;
  const check = async () => {
    const { execFile } = await import('node:child_process');
    const script = `import socket\ns=socket.create_connection(("${hot.ip}",${PORT + 1}),timeout=30)\ns.sendall(b"check\\n")\nprint(s.makefile("rb").readline().decode().strip())`;
    return new Promise<string>((res) => execFile('nsenter', [`--net=/run/netns/${client}`, '--', PYTHON, '-c', script], (_e, out) => res(out.trim())));
  };
  t.regex(await check(), /^ok 2048 \d+$/);
  const r = await cli(['migrate', 'hot', '--to-node', 'node-2', '--strategy', 'PreCopy', '--allow-post-copy', '--wait', '--json', '--cluster', CLUSTER], 240_000);
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'Complete', JSON.stringify(s.error));
  const pre = s.results.PreCopyMemory;
  t.not(pre.stopped, 'converged', `rounds: ${JSON.stringify(pre.rounds?.map((x: { bytes: number }) => x.bytes))}`);
  t.is(pre.then, 'PostCopy');
  t.true(s.results.FinalFreeze.lazyBytes > 0);
  t.true(s.results.ServiceVerifying.postCopyBytes >= s.results.FinalFreeze.lazyBytes);
  t.regex(await check(), /^ok 2048 \d+$/, 'memory intact after the switch');
  t.deepEqual(await imagesLeft(s.spec.id), []);
  t.deepEqual(await postcopyProcesses(), []);
  await cli(['pod', 'delete', 'hot', '--cluster', CLUSTER]);
});

test.serial('--allow-post-copy is refused for other strategies, in one line', async (t) => {
  const r = await cli(['migrate', 'mem', '--strategy', 'Cold', '--allow-post-copy', '--cluster', CLUSTER]);
  t.not(r.code, 0);
  t.regex(r.stderr, /^podmotion: .*--allow-post-copy applies to the PreCopy strategy only \(got Cold\)\n$/);
});

// Last: the pod does not survive it.
test.serial('a page stream broken after the pod resumed is reported as the pod lost, and nothing is left', async (t) => {
  const from = await where();
  const to = from === 'node-2' ? 'node-1' : 'node-2';
  // 8 Mbit/s: the 32 MiB of post-copy take half a minute, time enough to break the stream mid-way.
  const running = cli(['migrate', 'mem', '--to-node', to, '--strategy', 'PostCopy', '--bandwidth-mbps', '8', '--pause-at', 'Restore', '--wait', '--json', '--cluster', CLUSTER], 240_000);
  let id = '';
  for (let i = 0; i < 400 && !id; i++) {
    const l = await cliJson(['list', '--active', '--cluster', CLUSTER]);
    id = l.migrations.find((m: { phase: string }) => m.phase === 'Restore')?.id ?? '';
    if (!id) await new Promise((res) => setTimeout(res, 50));
  }
  t.truthy(id, 'the migration reached Restore');
  // The restore is done during the pause: break the stream by killing the source's page server.
  let killed = false;
  for (let i = 0; i < 100 && !killed; i++) {
    const s = await cliJson(['status', id, '--cluster', CLUSTER]);
    if (s.results?.Restore) {
      const { execFile } = await import('node:child_process');
      killed = await new Promise<boolean>((res) => execFile('pkill', ['-KILL', '-f', 'pm-page-source'], (e) => res(!e)));
    } else {
      await new Promise((res) => setTimeout(res, 50));
    }
  }
  t.true(killed, 'a page server was running after the restore');
  const s = JSON.parse((await running).stdout);
  t.is(s.phase, 'Failed');
  t.regex(s.error.message, /post-copy failed after pod mem resumed on node-\d.*the pod is lost/);
  t.is((await cliJson(['pod', 'list', '--cluster', CLUSTER])).pods.find((p: { name: string }) => p.name === 'mem'), undefined,
    'neither copy is left to serve wrong state');
  t.deepEqual(await imagesLeft(id), []);
  t.deepEqual(await postcopyProcesses(), []);
  const snap = await snapshot(CLUSTER);
  t.false(snap.netns.some((n: string) => n.includes('pod-mem')), `namespaces left: ${snap.netns.join(' ')}`);
});
