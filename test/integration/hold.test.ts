/**
 * The traffic hold (bpf/) on real namespaces: a pod wired like the local cluster, a node, and a client that
 * reaches the pod through the node and talks to workloads/counter_server.py without pause. pm-hold attaches to
 * the node side of the pod's veth, exactly where a migration uses it.
 */
import anyTest, { type TestFn } from 'ava';
import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  attachHold,
  detachHold,
  HOLD_MODES,
  holdStats,
  reopen,
  setHoldMode,
  waitQuiesced,
  type HoldFlow,
  type HoldStats,
} from '../../bpf/index.js';
import { InvalidRequestError, NodeOperationError } from '../../bus/errors.js';
import { inNetns, run } from '../../node-runtime/exec.js';
import { runEpisode } from '../../bench/hold/episode.js';
import { clientSocketInfo, createLab, destroyLab, labNamed, PYTHON, ROOT, startClient, startServer } from '../../bench/hold/lab.js';
import type { PingPongClient } from '../../bench/hold/pingpong.js';

interface Ctx {
  clients: PingPongClient[];
}
const test = anyTest as TestFn<Ctx>;
const lab = labNamed('ithold');
/** Longer than the 612 ms persist probe, so without a reopen the peer waits for the 1.4 s one. */
const HOLD_MS = 700;
/** With a reopen the first reply follows the release within milliseconds; 100 ms is half the first probe. */
const REOPEN_RESUME_BOUND_MS = 100;
/** Without one the next persist probe comes ~0.7 s after the release; this bound separates the two cases. */
const PROBE_RESUME_MIN_MS = 200;

test.before(async (t) => {
  t.context.clients = [];
  await run('bash', [path.join(ROOT, 'bpf', 'build.sh'), path.join(ROOT, 'dist', 'native')], { timeoutMs: 120_000 });
  await createLab(lab); // also removes leftovers of an interrupted run
  await startServer(lab);
  await attachHold({ netns: lab.nodeNetns, dev: lab.dev, podIp: lab.podIp, pin: lab.pin });
});

test.after.always(async (t) => {
  for (const c of t.context.clients) await c.stop().catch(() => undefined);
  await destroyLab(lab);
});

async function client(t: { context: Ctx }): Promise<PingPongClient> {
  const c = await startClient(lab);
  t.context.clients.push(c);
  return c;
}

function flowOf(stats: HoldStats, c: PingPongClient): HoldFlow {
  const f = stats.flows.find((x) => x.peer === c.local);
  if (!f) throw new Error(`no flow for ${c.local} in ${JSON.stringify(stats.flows.map((x) => x.peer))}`);
  return f;
}

async function tcFilters(direction: 'ingress' | 'egress'): Promise<string> {
  return (await run('tc', ['-n', lab.nodeNetns, 'filter', 'show', 'dev', lab.dev, direction])).stdout;
}

/** Passes everything again, reopens the window and waits for the client's next answer. */
async function release(c: PingPongClient): Promise<void> {
  const r = await setHoldMode(lab.pin, HOLD_MODES.none);
  await reopen({ netns: lab.nodeNetns, pin: lab.pin });
  const gap = await c.waitGap((g) => g.endUs > r.monoUs, 5_000);
  if (!gap) throw new Error('the client did not resume after release');
}

test.serial('attach installs both programs on the node-side veth and is idempotent', async (t) => {
  const again = await attachHold({ netns: lab.nodeNetns, dev: lab.dev, podIp: lab.podIp, pin: lab.pin });
  t.true(again.replaced, 'the second attach replaces the filters of the first');
  t.false(again.qdiscCreated);
  t.deepEqual(again.mode, []);
  t.regex(await tcFilters('ingress'), /handle 0xc114 hold_from_pod.*direct-action/);
  t.regex(await tcFilters('egress'), /handle 0xc114 hold_to_pod.*direct-action/);
  for (const m of ['pm_ctl', 'pm_cnt', 'pm_flows']) await t.notThrowsAsync(access(path.join(lab.pin, m)));
});

test.serial('zero-window stops the peer: it waits in persist mode, its sequence frozen, no RST', async (t) => {
  const c = await client(t);
  await sleep(200);
  const before = await holdStats(lab.pin);
  await setHoldMode(lab.pin, HOLD_MODES.quiesce);
  const q = await waitQuiesced(lab.pin, { kickNetns: lab.nodeNetns });
  t.true(q.settled, `quiesced within ${q.waitedMs.toFixed(1)} ms`);
  await sleep(300);
  const s1 = await holdStats(lab.pin);
  await sleep(300);
  const s2 = await holdStats(lab.pin);
  const sock = await clientSocketInfo(lab, c.local);
  t.log(`client socket: ${sock?.text}`);
  t.is(flowOf(s2, c).toPod.nxt, flowOf(s1, c).toPod.nxt, 'no new byte from the client toward the pod');
  t.true(flowOf(s2, c).quiesced);
  t.is(sock?.timer, 'persist', 'the client runs its zero-window probe timer');
  t.true((sock?.backoff ?? 0) >= 1, 'and has backed off at least once');
  t.true((sock?.notsent ?? 0) > 0, 'its next request waits in the send queue');
  t.true(s2.counters.zeroWindowRewrites > before.counters.zeroWindowRewrites);
  t.is(s2.counters.rstToPod + s2.counters.rstFromPod, before.counters.rstToPod + before.counters.rstFromPod);
  await release(c);
  const summary = await c.stop();
  t.true(summary.ok, `every answer in order, no reconnect: ${JSON.stringify(summary)}`);
});

/** A server in the pod that echoes lines but leaves `quiet` unanswered, as a backend waiting on a lock does. */
const QUIET_SERVER = `
import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7001))
s.listen(8)
def serve(c):
    for line in c.makefile('rb'):
        if line.strip() != b'quiet':
            c.sendall(line)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
`;
/** Talks to it until the pod's kernel delays its ACKs (interactive mode), then sends `quiet`. */
const QUIET_CLIENT = `
import socket, sys, time
c = socket.create_connection((sys.argv[1], 7001))
f = c.makefile('rb')
for i in range(50):
    c.sendall(b'ping %d\\n' % i)
    f.readline()
c.sendall(b'quiet\\n')
print('sent', flush=True)
time.sleep(30)
`;

/** Arms zero-window right after a request the pod leaves unanswered; resolves with the quiesce's wait. */
async function quiesceAfterQuietRequest(kick: boolean): Promise<{ settled: boolean; waitedMs: number }> {
  const client = spawn('nsenter', [`--net=/run/netns/${lab.clientNetns}`, '--', PYTHON, '-c', QUIET_CLIENT, lab.podIp], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      client.stdout.on('data', (b: Buffer) => b.toString().includes('sent') && resolve());
      client.once('exit', (code) => reject(new Error(`the client exited (${code})`)));
    });
    await setHoldMode(lab.pin, HOLD_MODES.quiesce);
    const q = await waitQuiesced(lab.pin, kick ? { kickNetns: lab.nodeNetns, elicitNetns: lab.podNetns } : {});
    return { settled: q.settled, waitedMs: q.waitedMs };
  } finally {
    await setHoldMode(lab.pin, HOLD_MODES.none);
    client.kill('SIGKILL');
  }
}

test.serial('quiesce asks the pod for an ACK it holds back instead of waiting for its delayed-ACK timer', async (t) => {
  // Dies with the pod's namespace (after.always).
  spawn('nsenter', [`--net=/run/netns/${lab.podNetns}`, '--', PYTHON, '-c', QUIET_SERVER], { stdio: 'ignore', detached: true }).unref();
  for (let i = 0; i < 100 && (await inNetns(lab.podNetns, 'ss', ['-Hltn', 'sport = :7001'])).stdout.trim() === ''; i++) await sleep(50);
  // Without a kick the wait is the pod's delayed ACK (40 ms at least): the request really is left unacknowledged.
  const slow = await quiesceAfterQuietRequest(false);
  t.true(slow.settled);
  t.true(slow.waitedMs >= 30, `unkicked: settled after ${slow.waitedMs.toFixed(1)} ms`);
  const fast = await quiesceAfterQuietRequest(true);
  t.true(fast.settled);
  t.true(fast.waitedMs < 30, `kicked: settled after ${fast.waitedMs.toFixed(1)} ms`);
  t.log(`unacknowledged request: quiesced after ${slow.waitedMs.toFixed(1)} ms unkicked, ${fast.waitedMs.toFixed(1)} ms kicked`);
});

test.serial('the flow map matches the connection as the client sees it', async (t) => {
  const c = await client(t);
  await sleep(200);
  await setHoldMode(lab.pin, HOLD_MODES.quiesce); // a still connection: every counter is stable while we look
  t.true((await waitQuiesced(lab.pin, { kickNetns: lab.nodeNetns })).settled);
  await sleep(250);
  const f = flowOf(await holdStats(lab.pin), c);
  const sock = await clientSocketInfo(lab, c.local);
  t.log(`flow ${JSON.stringify(f)}`);
  t.not(f.fromPod.isn, undefined, 'the SYN-ACK was seen');
  t.not(f.toPod.isn, undefined, 'the SYN was seen');
  t.is(sock?.bytesReceived, (f.fromPod.nxt - f.fromPod.isn! - 1) >>> 0, "recorded pod snd_nxt = what the client received");
  t.is(sock?.bytesAcked, (f.fromPod.ack - f.toPod.isn!) >>> 0, 'recorded pod ack = what the client has acked');
  t.is(f.fromPod.ack, f.toPod.nxt, 'the pod acknowledged every client byte');
  t.is(f.toPod.ack, f.fromPod.nxt, 'and the client every pod byte (the kick asked for its ACK)');
  t.is(f.fromPod.zeroWindowAck, f.fromPod.ack);
  t.true(f.fromPod.win > 0, 'the real window is recorded, not the 0 on the wire');
  t.is(f.fromPod.wscale, 10);
  t.not(f.fromPod.tsval, undefined, 'timestamps recorded for PAWS');
  t.true(f.open);
  // Reopen from this snapshot (flows on stdin, as a destination node would): the forged ACK is the pod's.
  const r = await setHoldMode(lab.pin, HOLD_MODES.none);
  const sent = await reopen({ netns: lab.nodeNetns, flows: [f] });
  t.deepEqual(sent.segments, [{ from: f.pod, to: f.peer, seq: f.fromPod.nxt, ack: f.fromPod.ack, win: f.fromPod.win, tsval: f.fromPod.tsval, tsecr: f.fromPod.tsecr }]);
  t.truthy(await c.waitGap((g) => g.endUs > r.monoUs, 5_000), 'and the client resumes');
  t.true((await c.stop()).ok);
});

test.serial('after a freeze, reopen resumes the client at once; without it the client waits for its persist probe', async (t) => {
  const c = await client(t);
  await sleep(300);
  const withReopen = await runEpisode(lab, c, 'zw-reopen', HOLD_MS);
  await sleep(400);
  const withElicit = await runEpisode(lab, c, 'zw-elicit', HOLD_MS);
  await sleep(400);
  const without = await runEpisode(lab, c, 'zw', HOLD_MS);
  t.log(JSON.stringify({ withReopen, withElicit, without }));
  t.true(withReopen.resumeAfterReleaseMs < REOPEN_RESUME_BOUND_MS, `reopen: ${withReopen.resumeAfterReleaseMs} ms`);
  t.true(withElicit.resumeAfterReleaseMs < REOPEN_RESUME_BOUND_MS, `elicit: ${withElicit.resumeAfterReleaseMs} ms`);
  t.true(without.resumeAfterReleaseMs > PROBE_RESUME_MIN_MS, `no reopen: ${without.resumeAfterReleaseMs} ms`);
  for (const e of [withReopen, withElicit, without]) {
    t.true(e.quiesced);
    t.is(e.rsts, 0);
    t.true(e.droppedToPod >= 1, 'the client probed into the freeze and was dropped');
    t.is(e.droppedFromPod, 0, 'quiesced: the pod had nothing to retransmit into the freeze');
  }
  const summary = await c.stop();
  t.true(summary.ok, `one connection, every answer in order: ${JSON.stringify(summary)}`);
});

test.serial('drop counters count each direction separately', async (t) => {
  const c = await client(t);
  await sleep(200);
  const s0 = (await holdStats(lab.pin)).counters;
  await setHoldMode(lab.pin, ['drop-out']); // the pod's answers die; the client's retransmissions get through
  await sleep(300);
  const s1 = (await holdStats(lab.pin)).counters;
  await release(c);
  await setHoldMode(lab.pin, ['drop-in']); // the client's requests die
  await sleep(300);
  const s2 = (await holdStats(lab.pin)).counters;
  await release(c);
  t.true(s1.droppedFromPod > s0.droppedFromPod);
  t.is(s1.droppedToPod, s0.droppedToPod);
  t.true(s2.droppedToPod > s1.droppedToPod);
  t.is(s2.droppedFromPod, s1.droppedFromPod);
  t.true((await c.stop()).ok);
});

test.serial('packets marked 0xC114 (SOCCR_MARK) pass a drop', async (t) => {
  const c = await client(t);
  await sleep(200);
  const s0 = (await holdStats(lab.pin)).counters;
  await setHoldMode(lab.pin, ['drop-in']);
  // reopen --elicit sends a marked segment from the node toward the pod, through the armed egress hook.
  await reopen({ netns: lab.nodeNetns, pin: lab.pin, elicit: true });
  const s1 = (await holdStats(lab.pin)).counters;
  await release(c);
  t.true(s1.markExempt > s0.markExempt);
  t.true((await c.stop()).ok);
});

test.serial('RSTs are counted in each direction', async (t) => {
  const s0 = (await holdStats(lab.pin)).counters;
  // An abortive close (SO_LINGER 0) sends an RST to the pod; a connect to a closed port gets one from it.
  const script = [
    'import socket, struct',
    `s = socket.create_connection(("${lab.podIp}", ${lab.port}))`,
    's.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))',
    's.close()',
    'try:',
    `    socket.create_connection(("${lab.podIp}", 7999), timeout=2)`,
    'except ConnectionRefusedError:',
    '    pass',
  ].join('\n');
  await inNetns(lab.clientNetns, PYTHON, ['-c', script]);
  const s1 = (await holdStats(lab.pin)).counters;
  t.true(s1.rstToPod > s0.rstToPod);
  t.true(s1.rstFromPod > s0.rstFromPod);
});

test.serial('bad input is refused with one line; a missing hold is a node error', async (t) => {
  const bad = await t.throwsAsync(attachHold({ netns: lab.nodeNetns, dev: lab.dev, podIp: '10.98.1', pin: lab.pin }));
  t.true(bad instanceof InvalidRequestError);
  t.regex(bad!.message, /--pod-ip must be an IPv4 address/);
  const missing = await t.throwsAsync(holdStats(`${lab.pin}-nothing`));
  t.true(missing instanceof NodeOperationError);
  t.regex(missing!.message, /no hold pinned at/);
});

test.serial('detach removes filters, qdisc and pins, leaves the connection working, and is idempotent', async (t) => {
  const c = await client(t);
  const d = await detachHold({ netns: lab.nodeNetns, dev: lab.dev, pin: lab.pin });
  t.like(d, { filtersRemoved: 2, qdiscRemoved: true, unpinned: true });
  t.is((await tcFilters('ingress')).trim(), '');
  t.is((await tcFilters('egress')).trim(), '');
  t.notRegex((await run('tc', ['-n', lab.nodeNetns, 'qdisc', 'show', 'dev', lab.dev])).stdout, /clsact/);
  await t.throwsAsync(access(lab.pin), { code: 'ENOENT' });
  t.like(await detachHold({ netns: lab.nodeNetns, dev: lab.dev, pin: lab.pin }), { filtersRemoved: 0, unpinned: false });
  t.like(await detachHold({ netns: lab.nodeNetns, dev: 'gone0', pin: lab.pin }), { deviceGone: true });
  t.like(await detachHold({ netns: `${lab.nodeNetns}-gone`, dev: lab.dev, pin: lab.pin }), { netnsGone: true });
  await sleep(200);
  const summary = await c.stop();
  t.true(summary.ok && summary.replies > 0, JSON.stringify(summary));
});
