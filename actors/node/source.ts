/**
 * The source-node actor: inventories the pod's sockets, arms the zero-window hold, freezes and checkpoints
 * the pod (leaving it stopped, so a rollback can resume it), streams the images, and at cutover deletes
 * the source copy — or, on rollback, resumes it with its connections intact.
 */
import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { NotFoundError } from '../../bus/errors.js';
import type { ArmReply, EstimateReply, EstimateRequest, FreezeReply, FreezeRequest, InventoryReply, MigStep } from '../../bus/node-migration.js';
import { scanMemory } from '../../node-runtime/memscan.js';
import { holdPinDir, imagesDir, podNetns } from '../../node-runtime/constants.js';
import { inventory, unrepair } from '../../node-runtime/sockets.js';
import { checkpoint, checkpointLazy, checkpointTracked } from './checkpoint.js';
import { migrationState } from './state.js';
import { STATE_FILE, precopySourceDir, removePrecopy, stopTracking, trackedFreeze } from './precopy.js';
import path from 'node:path';
import { killPodProcesses, removePodNetwork } from '../../node-runtime/pods.js';
import { readPodRecord, removePodRecord, type PodRecord } from '../../node-runtime/records.js';
import type { NodeContext } from './context.js';
import { collectGarbage } from '../../common/gc.js';
import { sleep } from '../../common/clock.js';
import type { HoldCounters } from './hold.js';
import { flowsToCarry, forgetFlows } from './relay.js';
import { forgetSent, reattachSource, removeSourceCopies, volumeFields, volumeRound } from './volumes.js';

/** How long cutover waits for a finished post-copy session to close before closing it itself. */
const LAZY_END_WAIT_MS = 10_000;

/** Per migration armed here: how long to wait, under the zero window, for the peers to go quiet. */
const armed = new Map<string, number>();
/** Hold counters when a migration armed here: verification counts only what happened since. */
export const holdBaselines = new Map<string, HoldCounters>();
/**
 * Bound on the wait, under the zero window, for peers to have nothing in flight. Settling takes ~5 ms here;
 * the bound matters only when it does not settle, and freezing on bytes in flight costs the client a
 * retransmission timeout (>= 200 ms) or two, so it is generous: at least 100 ms, or 4 RTTs on slow links.
 */
const MIN_QUIESCE_MS = 100;
const MAX_QUIESCE_MS = 500;

export async function sourcePod(ctx: NodeContext, pod: string): Promise<PodRecord> {
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, pod);
  if (!rec || rec.incoming !== undefined) throw new NotFoundError(`pod ${pod} is not on ${ctx.node.name}`);
  return rec;
}

export async function inventoryPod(ctx: NodeContext, req: MigStep): Promise<InventoryReply> {
  const rec = await sourcePod(ctx, req.pod);
  return {
    ip: rec.ip, mac: rec.mac, initPid: rec.init.pid, sockets: await inventory(rec.netns),
    ...(rec.port !== undefined ? { port: rec.port } : {}),
    ...(rec.volumes?.length ? { volumes: rec.volumes.map((v) => ({ name: v.name, tier: v.tier })) } : {}),
  };
}

/** Read-only: the memory a checkpoint of the pod would carry, its dirty rate, and its connections. */
export async function estimatePod(ctx: NodeContext, req: EstimateRequest): Promise<EstimateReply> {
  const rec = await sourcePod(ctx, req.pod);
  const [scan, sockets] = await Promise.all([scanMemory(rec.init.pid, req.intervalMs), inventory(rec.netns)]);
  return {
    memoryBytes: scan.bytes, zeroBytes: scan.zeroPages * 4096, dirtyBytesPerSec: scan.dirtyBytesPerSec,
    processes: scan.processes, connections: sockets.length, scanMs: scan.scanMs,
  };
}

export async function armHold(ctx: NodeContext, req: MigStep): Promise<ArmReply> {
  const rec = await sourcePod(ctx, req.pod);
  // The freeze comes next: a collection V8 would start during the dump is done now, outside it.
  collectGarbage();
  const pin = holdPinDir(ctx.cluster, ctx.node.name, rec.name);
  // Armed, not yet closing: the hold tracks every flow from now on, and the freeze closes the peers'
  // window at CRIU's pre-dump, so clients stall for the freeze only, not for CRIU's start-up.
  // Normally attached since the pod started; attach now only if it is not (an older pod, a lost pin).
  const baseline = await ctx.hold.counters(pin);
  if (!baseline) await ctx.hold.attach({ nodeNetns: ctx.node.netns, dev: rec.hostIface, podIp: rec.ip, pin, modes: [] });
  holdBaselines.set(req.id, baseline ?? { rstToPod: 0, rstFromPod: 0, droppedToPod: 0, droppedFromPod: 0 });
  const armedAtMs = ctx.clock.nowMs();
  const rtts = (await inventory(rec.netns)).map((s) => s.rttMs ?? 0);
  const quiesceMs = Math.min(MAX_QUIESCE_MS, Math.max(MIN_QUIESCE_MS, Math.ceil(4 * Math.max(0, ...rtts))));
  armed.set(req.id, quiesceMs);
  return { armedAtMs, waitedMs: ctx.clock.nowMs() - armedAtMs };
}

/**
 * FinalFreeze on the source: checkpoints the pod and, once its tasks are frozen, lists this node's conntrack
 * entries of its flows for the destination (alongside the dump: CRIU does not wait for it).
 */
export async function freezePod(ctx: NodeContext, req: FreezeRequest): Promise<FreezeReply> {
  return dumpPod(ctx, req, await sourcePod(ctx, req.pod));
}

async function dumpPod(ctx: NodeContext, req: FreezeRequest, rec: PodRecord): Promise<FreezeReply> {
  const pin = holdPinDir(ctx.cluster, ctx.node.name, rec.name);
  // Without network continuity nothing was armed; the drop still keeps a frozen socket from being answered.
  if (!req.networkContinuity && !(await ctx.hold.counters(pin))) await ctx.hold.attach({ nodeNetns: ctx.node.netns, dev: rec.hostIface, podIp: rec.ip, pin, modes: [] });
  const quiesceMs = armed.get(req.id);
  armed.delete(req.id);
  // With the tasks stopped, alongside the images: the node's conntrack entries of the pod's flows, and the
  // volumes' last round.
  const whileFrozen = { whileFrozen: [() => flowsToCarry(ctx, rec.ip),
    ...(rec.volumes?.some((v) => v.tier === 'local') ? [() => volumeRound(ctx, req.id, rec, req.target).then(volumeFields)] : [])] };
  const tracked = req.lazy ? undefined : trackedFreeze(ctx, req.id);
  if (tracked) {
    const lazyDir = imagesDir(ctx.cluster, req.id, 'lazy');
    await mkdir(lazyDir, { recursive: true, mode: 0o700 });
    let reply: FreezeReply;
    try {
      reply = await checkpointTracked(ctx, {
        pid: rec.init.pid, netns: rec.netns, pin, dir: imagesDir(ctx.cluster, req.id, 'source'), target: req.target,
        socketPath: path.join(lazyDir, 'source.sock'), ...tracked, cleanFile: path.join(precopySourceDir(ctx, req.id), 'clean.bin'), ...whileFrozen,
        precopyState: path.join(precopySourceDir(ctx, req.id), STATE_FILE),
        ...(req.networkContinuity ? { zeroWindowQuiesceMs: quiesceMs ?? MIN_QUIESCE_MS } : {}),
        ...(req.bandwidthMbps !== undefined ? { bandwidthMbps: req.bandwidthMbps } : {}),
      });
    } catch (e) {
      await stopTracking(req.id);
      throw e;
    }
    // The tracker dropped its userfaultfds with the tasks frozen; its exit is not worth waiting for here.
    void stopTracking(req.id);
    return reply;
  }
  // Any other freeze dumps plain memory: write tracking (if a pre-copy ran it) ends first.
  await stopTracking(req.id);
  if (req.lazy) {
    const lazyDir = imagesDir(ctx.cluster, req.id, 'lazy');
    await mkdir(lazyDir, { recursive: true, mode: 0o700 });
    const { reply, session } = await checkpointLazy(ctx, {
      pid: rec.init.pid, netns: rec.netns, pin, dir: imagesDir(ctx.cluster, req.id, 'source'), target: req.target,
      socketPath: path.join(lazyDir, 'source.sock'), ...whileFrozen,
      ...(req.networkContinuity ? { zeroWindowQuiesceMs: quiesceMs ?? MIN_QUIESCE_MS } : {}),
      ...(req.bandwidthMbps !== undefined ? { bandwidthMbps: req.bandwidthMbps } : {}),
    });
    migrationState(req.id, req.pod).lazy = session;
    return reply;
  }
  const state = path.join(precopySourceDir(ctx, req.id), STATE_FILE);
  const precopied = await stat(state).then(() => true, () => false);
  return checkpoint(ctx, {
    pid: rec.init.pid, netns: rec.netns, pin, dir: imagesDir(ctx.cluster, req.id, 'source'), target: req.target, ...whileFrozen,
    ...(req.networkContinuity ? { zeroWindowQuiesceMs: quiesceMs ?? MIN_QUIESCE_MS } : {}),
    ...(precopied ? { precopyState: state } : {}),
    ...(req.bandwidthMbps !== undefined ? { bandwidthMbps: req.bandwidthMbps } : {}),
  });
}

/** Pids of every process in the pid namespace of `pid` (CRIU stopped each of them). */
export async function pidsInPidns(pid: number): Promise<number[]> {
  let ns: number;
  try {
    ns = (await stat(`/proc/${pid}/ns/pid`)).ino;
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if ((await stat(`/proc/${e}/ns/pid`)).ino === ns) out.push(Number(e));
    } catch {
      // exited
    }
  }
  return out;
}

export async function isStopped(pid: number): Promise<boolean> {
  try {
    return /^State:\s+T/m.test(await readFile(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * Ends a PostCopy session on this node. At cutover the destination already has every page (the coordinator
 * asked it first), so the session has ended or is ending; a rollback cuts it. The tree it served from stays
 * stopped with its sockets in repair mode either way, as after a Cold dump.
 */
async function endLazySession(ctx: NodeContext, req: MigStep, why: 'cutover' | 'rollback'): Promise<void> {
  const m = migrationState(req.id, req.pod);
  const session = m.lazy;
  if (session) {
    if (why === 'rollback') session.pages.end('rolled back');
    const stats = await Promise.race([session.pages.done, sleep(ctx.clock, LAZY_END_WAIT_MS).then(() => undefined)]);
    if (!stats) session.pages.end(`${why}: still open after ${LAZY_END_WAIT_MS} ms`);
    const s = await session.pages.done;
    ctx.log.info({ migration: req.id, bytes: s.bytes, complete: s.complete, ms: Math.round(s.ms), summary: s.summary, ended: session.pages.endReason() }, 'post-copy session over');
    m.lazy = undefined;
  }
  await rm(imagesDir(ctx.cluster, req.id, 'lazy'), { recursive: true, force: true });
}

/** Cutover on the source: the stopped copy goes, its sockets still in repair mode so nothing is sent. */
export async function cutoverSource(ctx: NodeContext, req: MigStep): Promise<void> {
  await endLazySession(ctx, req, 'cutover');
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, req.pod);
  if (rec) {
    await killPodProcesses(rec.init, rec.holder);
    // The copy is dead (silently: its sockets were in repair mode); the hold goes before its device does.
    await detachQuietly(ctx, rec.hostIface, holdPinDir(ctx.cluster, ctx.node.name, rec.name));
    await removePodNetwork(rec.netns);
    await forgetFlows(ctx, rec.ip);
    await removeSourceCopies(ctx, rec);
    await removePodRecord(ctx.cluster, ctx.node.name, req.pod);
  }
  forgetSent(req.id);
  await rm(imagesDir(ctx.cluster, req.id, 'source'), { recursive: true, force: true });
  // A move back that failed may have left its receiver and images here: they hold the pod's memory.
  migrationState(req.id, req.pod).reclaimReceiver?.close();
  await rm(imagesDir(ctx.cluster, req.id, 'reclaim'), { recursive: true, force: true });
  await removePrecopy(ctx, req.id);
  holdBaselines.delete(req.id);
}

/** Rollback on the source: open the hold, take sockets out of repair (each sends a window probe), resume. */
export async function rollbackSource(ctx: NodeContext, req: MigStep): Promise<string> {
  // A lazy session still serving ends first: CRIU then leaves the tree stopped, as a Cold dump does.
  await endLazySession(ctx, req, 'rollback');
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, req.pod);
  await rm(imagesDir(ctx.cluster, req.id, 'source'), { recursive: true, force: true });
  await removePrecopy(ctx, req.id);
  holdBaselines.delete(req.id);
  forgetSent(req.id);
  if (!rec) return 'no source copy on this node';
  // The restore may have put the destination's copies where the pod sees its volumes.
  await reattachSource(ctx, rec);
  return resumeInPlace(ctx, rec);
}

/**
 * Resumes a copy CRIU left stopped after a checkpoint, where it is: open its hold, take its sockets out of
 * repair mode (each sends a window probe), continue every task, reopen its peers' windows, drop the hold.
 */
export async function resumeInPlace(ctx: NodeContext, rec: PodRecord): Promise<string> {
  const pin = holdPinDir(ctx.cluster, ctx.node.name, rec.name);
  await ctx.hold.setModes(pin, []).catch(() => {});
  let note = 'copy was running';
  if (await isStopped(rec.init.pid)) {
    const repaired = await unrepair(rec.init.pid);
    for (const pid of await pidsInPidns(rec.init.pid)) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // exited
      }
    }
    note = `resumed, ${repaired} sockets out of repair`;
  }
  const reopened = await ctx.hold.reopen({ netns: podNetns(ctx.cluster, ctx.node.name, rec.name), flowsPin: pin }).catch(() => 0);
  // The hold stays attached (mode none) for the pod's next migration.
  await ctx.hold.setModes(pin, []);
  return `${note}, ${reopened} windows reopened`;
}

/**
 * Removes a pod's hold when the pod leaves this node. Its filters die with the veth anyway; what must not
 * be left is the pinned maps, so a failed detach (a device vanishing mid-call) falls back to unpinning.
 */
export async function detachQuietly(ctx: NodeContext, dev: string, pin: string): Promise<void> {
  try {
    await ctx.hold.detach({ nodeNetns: ctx.node.netns, dev, pin });
  } catch (e) {
    ctx.log.warn({ pin, err: (e as Error).message }, 'hold detach failed; unpinning');
    await rm(pin, { recursive: true, force: true });
  }
}
