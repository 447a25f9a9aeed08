/**
 * The destination-node actor: prepares the pod's namespace with the same IP and MAC behind a hold,
 * receives the images, restores the pod with its TCP sockets, releases held traffic, probes the service,
 * and at cutover keeps the pod — or, on rollback, removes every trace of the attempt.
 */
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { newTransferKey, startReceiver } from '../../criu-shim/transfer/index.js';
import { startPageSink } from '../../criu-shim/transfer/lazy.js';
import { InvalidRequestError, NodeOperationError, PreconditionError } from '../../bus/errors.js';
import type {
  DisengageReply, DisengageRequest, HoldStatsReply, MigStep, PostCopyReply, PrepareReply, PrepareRequest, ProbeReply, ProbeRequest, RestoreReply,
  RestoreRequest,
} from '../../bus/node-migration.js';
import { criuBinary, holdPinDir, imagesDir, NATIVE_DIR, podLogFile, podNetns } from '../../node-runtime/constants.js';
import { inNetns } from '../../node-runtime/exec.js';
import { preparePodNetwork, removePodNetwork } from '../../node-runtime/pods.js';
import { podHostIface, podMac } from '../../node-runtime/plan.js';
import { pidsInNetns, netnsInode, refOf } from '../../node-runtime/procs.js';
import { listPodRecords, readPodRecord, removePodRecord, writePodRecord } from '../../node-runtime/records.js';
import { prepareRestoreInto, restoreInto } from './checkpoint.js';
import { detachQuietly, holdBaselines } from './source.js';
import { decodeIfPrecopied, removePrecopy, startStoreDaemon } from './precopy.js';
import type { NodeContext } from './context.js';
import { peekMigration, type NodeMigration } from './state.js';
import { forgetFlows } from './relay.js';
import { attachHere, discardReceived, forgetSent, prepareVolumes } from './volumes.js';

/** Upper bound on one pod's checkpoint: larger is a mistake, not a pod this node should accept. */
const MAX_IMAGE_BYTES = 64 * 1024 ** 3;
/** A pages image's delta as the source's encoder names it (nothing else goes to the rebuilder's command line). */
const PAGES_DELTA = /^pages-[0-9]+\.img\.pmdelta$/;
/** The service probe: a TCP handshake to the pod's port from its node. */
const PROBE_TIMEOUT_S = 3;

export async function preparePod(ctx: NodeContext, m: NodeMigration, req: PrepareRequest): Promise<PrepareReply> {
  if (m.prepared) return m.prepared;
  if (podMac(req.ip) !== req.mac) throw new InvalidRequestError(`pod ${req.pod}: MAC ${req.mac} does not match IP ${req.ip}`);
  const netns = podNetns(ctx.cluster, ctx.node.name, req.pod);
  await removePodNetwork(netns);
  const net = await preparePodNetwork(ctx.cluster, ctx.node, req.pod, req.ip);
  // Entries of the pod's flows from an earlier stay here would make its packets INVALID: the source's replace them.
  await forgetFlows(ctx, req.ip);
  // Nothing may reach the empty namespace before its sockets are restored: it would answer with RST.
  await ctx.hold.attach({ nodeNetns: ctx.node.netns, dev: net.hostIface, podIp: req.ip, pin: holdPinDir(ctx.cluster, ctx.node.name, req.pod), modes: ['drop-in'] });
  // CRIU for the restore starts now and waits: its spawns are not in the freeze.
  m.preparedRestore?.discard();
  m.preparedRestore = prepareRestoreInto(netns);
  const key = newTransferKey();
  const dir = imagesDir(ctx.cluster, req.id, 'destination');
  await rm(dir, { recursive: true, force: true });
  m.address = { ip: req.ip, mac: req.mac };
  // A pages delta is rebuilt as soon as it is in, while CRIU still dumps the pod's next processes.
  m.receiver = await startReceiver({ host: ctx.dataHost, dir, key, maxBytes: MAX_IMAGE_BYTES, onFile: (name) => { if (PAGES_DELTA.test(name)) m.decoder?.decode(name); } });
  const lazyDir = imagesDir(ctx.cluster, req.id, 'lazy');
  const socketPath = path.join(lazyDir, 'destination.sock');
  if (req.lazy) {
    await mkdir(lazyDir, { recursive: true, mode: 0o700 });
    m.pageSink = await startPageSink({ host: ctx.dataHost, key, socketPath });
  }
  // A lazy restore's daemon starts as soon as the images are in, while the overlay is handed over, not in
  // the restore: served from the page store when the images carry a tracked pre-copy's final pages (even if
  // PostCopy was allowed, the rounds converged), else by the source over the page channel (PostCopy).
  m.lazyDaemonStart = m.receiver.done.then(async () => {
    await mkdir(lazyDir, { recursive: true, mode: 0o700 });
    const fromStore = await startStoreDaemon(m, req.id, dir, socketPath);
    if (fromStore) {
      m.pageSink?.close();
      m.pageSink = undefined;
      return fromStore;
    }
    return m.pageSink?.startDaemon({ criuPath: criuBinary(), connectExecPath: path.join(NATIVE_DIR, 'pm-connect-exec'), dir });
  });
  m.lazyDaemonStart.catch(() => {});
  // Images that carry pages as references to the pre-copy rounds are rebuilt as they arrive (the rounds'
  // rebuilder), the rest once all are in, while the overlay is handed over, not after the restore request.
  m.decoding = m.receiver.done.then(() => (m.decoder ? m.decoder.finish() : decodeIfPrecopied(ctx, req.id, dir)));
  m.decoding.catch(() => {});
  const volumes = req.volumes?.length ? await prepareVolumes(ctx, m, req, key) : [];
  m.prepared = { host: m.receiver.host, port: m.receiver.port, key, ...(m.pageSink ? { pagesPort: m.pageSink.port } : {}), ...(volumes.length ? { volumes } : {}) };
  return m.prepared;
}

export async function restorePod(ctx: NodeContext, m: NodeMigration, req: RestoreRequest): Promise<RestoreReply> {
  if (m.restored) return m.restored;
  if (m.fenced) throw new PreconditionError(`migration ${req.id} is rolling back: restore of ${req.pod} refused`);
  if (!m.receiver) throw new NodeOperationError(`migration ${req.id}: no images were expected here (agent restarted?)`);
  await m.receiver.done;
  const netns = podNetns(ctx.cluster, ctx.node.name, req.pod);
  const pin = holdPinDir(ctx.cluster, ctx.node.name, req.pod);
  const decoded: { fromCache: number; ms: number; lastMs?: number } = await (m.decoding ?? decodeIfPrecopied(ctx, req.id, imagesDir(ctx.cluster, req.id, 'destination')));
  const dir = imagesDir(ctx.cluster, req.id, 'destination');
  // A lazy restore (PostCopy, or a tracked pre-copy): its daemon must listen before the restore starts.
  m.lazyDaemon = m.lazyDaemonStart ? await m.lazyDaemonStart : undefined;
  if (m.pageSink && !m.lazyDaemon) throw new NodeOperationError(`migration ${req.id}: the post-copy daemon was never started`);
  if (m.lazyDaemon) {
    // Pages that never arrive would read as zeros: a pod whose daemon failed must not run on.
    m.lazyDaemon.finished.catch(async (e: Error) => {
      const killed = await killPodIn(netns);
      ctx.log.error({ migration: req.id, pod: req.pod, err: e.message, killed }, 'lazy restore failed after the pod resumed: the restored copy was killed');
    });
  }
  const source = (await listPodRecords(ctx.cluster)).find((p) => p.name === req.pod && p.incoming === undefined);
  // The pod's volume paths show this node's copies from here on (the frozen source keeps its own open).
  await attachHere(ctx, m, req.pod, source?.volumes);
  m.restoreStarted = true;
  let r;
  try {
    r = await restoreInto(ctx, { netns, pin, dir, networkContinuity: req.networkContinuity, lazyPages: m.lazyDaemon !== undefined, ...(m.preparedRestore ? { prepared: m.preparedRestore } : {}) });
  } catch (e) {
    m.lazyDaemon?.kill();
    throw e;
  }
  // The peers sit in zero-window persist mode since the freeze: tell them at once that the window is open,
  // from the pod's own namespace, with the state the source's hold recorded (DisengageHold confirms it).
  // First thing after the resume: every millisecond until then is one more the clients wait.
  const reopened = req.networkContinuity
    ? await ctx.hold.reopen({ netns, flowsPin: holdPinDir(ctx.cluster, req.sourceNode, req.pod) })
    : 0;
  const init = await refOf(r.pid);
  if (!init) throw new NodeOperationError(`restored pod ${req.pod} (pid ${r.pid}) exited at once`);
  await writePodRecord(ctx.cluster, {
    name: req.pod, node: ctx.node.name, ip: m.address?.ip ?? '', mac: m.address?.mac ?? '', netns, hostIface: podHostIface(req.pod),
    command: source?.command ?? [], ...(source?.containers ? { containers: source.containers } : {}), init, logFile: source?.logFile ?? podLogFile(ctx.cluster, req.pod),
    startedAtMs: source?.startedAtMs ?? r.resumedAtMs, incoming: req.id, ...(source?.port !== undefined ? { port: source.port } : {}),
    ...(source?.user !== undefined ? { user: source.user } : {}), ...(source?.volumes?.length ? { volumes: source.volumes } : {}),
  });
  m.restored = { resumedAtMs: r.resumedAtMs, restoreMs: r.restoreMs, initPid: r.pid, sockets: r.sockets, reopened, pagesFromCache: decoded.fromCache, decodeMs: decoded.ms,
    ...(decoded.lastMs !== undefined ? { decodeAfterImagesMs: decoded.lastMs } : {}) };
  return m.restored;
}

/**
 * PostCopy: waits until the lazy-pages daemon has every page of the restored pod (it then exits 0). A
 * daemon that failed means pages are missing: the copy was killed, and the pod is lost with it.
 */
export async function postcopyFinish(ctx: NodeContext, m: NodeMigration, req: MigStep): Promise<PostCopyReply> {
  if (!m.lazyDaemon) throw new NodeOperationError(`migration ${req.id}: no post-copy session on ${ctx.node.name} (agent restarted?)`);
  const r = await m.lazyDaemon.finished;
  const afterResumeMs = m.restored ? Math.max(0, ctx.clock.nowMs() - m.restored.resumedAtMs) : 0;
  return { bytes: r.bytes, ms: r.ms, afterResumeMs };
}

/** SIGKILLs every process in a pod namespace on this node; the count killed. */
async function killPodIn(netns: string): Promise<number> {
  const ino = await netnsInode(netns);
  const pids = ino === undefined ? [] : await pidsInNetns(new Set([ino]));
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited
    }
  }
  return pids.length;
}

/** True when this node holds a copy of the pod restored for this migration, which may have served. */
export async function hasRestoredCopy(ctx: NodeContext, m: NodeMigration, req: MigStep): Promise<boolean> {
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, req.pod);
  if (rec?.incoming === req.id) return true;
  if (!m.restoreStarted) return false;
  const ino = await netnsInode(podNetns(ctx.cluster, ctx.node.name, req.pod));
  return ino !== undefined && (await pidsInNetns(new Set([ino]))).length > 0;
}

/** Confirms the hold no longer holds anything; the peers' windows were reopened right after the restore. */
export async function disengage(ctx: NodeContext, m: NodeMigration, req: DisengageRequest): Promise<DisengageReply> {
  const pin = holdPinDir(ctx.cluster, ctx.node.name, req.pod);
  await ctx.hold.setModes(pin, []);
  // After an agent restart the restore's reopen is unknown: send it again (a single duplicate ACK is harmless).
  const reopened = m.restored?.reopened ?? await ctx.hold.reopen({ netns: podNetns(ctx.cluster, ctx.node.name, req.pod), flowsPin: holdPinDir(ctx.cluster, req.sourceNode, req.pod) });
  return { reopened, releasedAtMs: ctx.clock.nowMs() };
}

/** Hold counters since this migration armed (source) or attached (destination) the hold on this node. */
export async function holdStats(ctx: NodeContext, req: MigStep): Promise<HoldStatsReply> {
  const pin = holdPinDir(ctx.cluster, ctx.node.name, req.pod);
  const c = await ctx.hold.counters(pin);
  if (!c) return { attached: false, rstToPod: 0, rstFromPod: 0, droppedToPod: 0, droppedFromPod: 0 };
  const b = holdBaselines.get(req.id) ?? { rstToPod: 0, rstFromPod: 0, droppedToPod: 0, droppedFromPod: 0 };
  // The connections this node moved: what the checkpoint held (source) or the restore made (destination).
  const m = peekMigration(req.id);
  const moved = m?.restored?.sockets ?? m?.froze?.sockets;
  const resets = moved ? await ctx.hold.resets(pin) : undefined;
  return {
    attached: true, rstToPod: c.rstToPod - b.rstToPod, rstFromPod: c.rstFromPod - b.rstFromPod,
    droppedToPod: c.droppedToPod - b.droppedToPod, droppedFromPod: c.droppedFromPod - b.droppedFromPod,
    ...(moved && resets ? { migratedFlows: moved.length, rstMigrated: moved.filter((s) => resets.has(`${s.local}|${s.remote}`)).length } : {}),
  };
}

export async function probe(ctx: NodeContext, req: ProbeRequest): Promise<ProbeReply> {
  const t0 = ctx.clock.nowMs();
  try {
    // Address and port are arguments, never part of the script text.
    await inNetns(ctx.node.netns, 'timeout', [String(PROBE_TIMEOUT_S), 'bash', '-c', 'exec 3<>"/dev/tcp/$0/$1"', req.ip, String(req.port)], { timeoutMs: (PROBE_TIMEOUT_S + 2) * 1000 });
    return { ok: true, ms: ctx.clock.nowMs() - t0 };
  } catch {
    return { ok: false, ms: ctx.clock.nowMs() - t0 };
  }
}

export async function cutoverDestination(ctx: NodeContext, m: NodeMigration, req: MigStep): Promise<void> {
  // PostCopy: the coordinator asked postcopy.finish first; a pod still missing pages is not taken over.
  if (m.lazyDaemon) await m.lazyDaemon.finished;
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, req.pod);
  if (rec && rec.incoming === req.id) {
    const { incoming: _done, ...served } = rec;
    await writePodRecord(ctx.cluster, served);
  }
  // The pod lives here now: its hold stays attached, mode none, ready for its next migration.
  await ctx.hold.setModes(holdPinDir(ctx.cluster, ctx.node.name, req.pod), []);
  m.receiver?.close();
  m.pageSink?.close();
  m.pageStore?.kill();
  m.decoder?.kill();
  m.preparedRestore?.discard();
  for (const rx of m.volumeReceivers.values()) rx.close();
  await rm(imagesDir(ctx.cluster, req.id, 'destination'), { recursive: true, force: true });
  await rm(imagesDir(ctx.cluster, req.id, 'lazy'), { recursive: true, force: true });
  await removePrecopy(ctx, req.id);
}

/** Rollback on the destination: kill whatever was restored, remove the namespace, the hold and the images. */
export async function rollbackDestination(ctx: NodeContext, m: NodeMigration | undefined, req: MigStep): Promise<string> {
  m?.receiver?.close();
  m?.lazyDaemon?.kill();
  void m?.lazyDaemonStart?.then((d) => d?.kill(), () => {});
  m?.pageStore?.kill();
  m?.decoder?.kill();
  m?.preparedRestore?.discard();
  m?.pageSink?.close();
  for (const rx of m?.rounds.values() ?? []) rx.close();
  // Images and page caches hold the pod's memory: they go first, whatever else fails below.
  await rm(imagesDir(ctx.cluster, req.id, 'destination'), { recursive: true, force: true });
  await rm(imagesDir(ctx.cluster, req.id, 'lazy'), { recursive: true, force: true });
  await removePrecopy(ctx, req.id);
  const netns = podNetns(ctx.cluster, ctx.node.name, req.pod);
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, req.pod);
  if (rec && rec.incoming === undefined) throw new NodeOperationError(`pod ${req.pod} is already served from ${ctx.node.name}; refusing to remove it`);
  await discardReceived(ctx, m, req);
  forgetSent(`${req.id}-back`);
  const killed = await killPodIn(netns);
  const podIp = rec?.ip ?? m?.address?.ip;
  if (podIp) await forgetFlows(ctx, podIp);
  // The hold goes while its device still exists; removing the namespace takes the veth down under it.
  await detachQuietly(ctx, podHostIface(req.pod), holdPinDir(ctx.cluster, ctx.node.name, req.pod));
  await removePodNetwork(netns);
  await removePodRecord(ctx.cluster, ctx.node.name, req.pod);
  return `destination discarded (${killed} processes killed)`;
}
