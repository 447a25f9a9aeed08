/**
 * Pre-copy on the nodes: each round the source reads the running pod's memory and sends the pages the
 * destination does not hold yet (by content hash); the destination keeps every round as a page cache.
 *
 * With written pages tracked (node-runtime/wptrack.ts; the kernel's userfaultfd write-protection), each round
 * also sends the address and hash of every page it read, and the freeze is lazy: the pod's memory stays in
 * its stopped tasks, only the pages written since the last round cross (pm-pages final), and the destination
 * restores with userfaultfd, every page coming from what already arrived (pm-page-source --store). Without
 * tracking, the checkpoint's pages that a round delivered travel as references only.
 */
import { appendFile, mkdir, open, readFile, readdir, rm, stat } from 'node:fs/promises';
import { PageStore, type LazyDaemon } from '../../criu-shim/transfer/lazy.js';
import path from 'node:path';
import { newTransferKey, sendDirectory, startReceiver } from '../../criu-shim/transfer/index.js';
import { NodeOperationError, NotFoundError } from '../../bus/errors.js';
import type { Done, PrepareReply, RoundRef, RoundReply, RoundRequest } from '../../bus/node-migration.js';
import { NATIVE_DIR, criuBinary, imagesDir } from '../../node-runtime/constants.js';
import { decodeImages, precopyRound, startDecoder } from '../../node-runtime/pages.js';
import { WriteTracker } from '../../node-runtime/wptrack.js';
import type { NodeContext } from './context.js';
import { collectGarbage } from '../../common/gc.js';
import { FINAL_PAGES_FILE } from './checkpoint.js';
import type { NodeMigration } from './state.js';
import { readPodRecord } from '../../node-runtime/records.js';
import { PAGE_BYTES } from '../../criu-shim/images/pagemap.js';

/** A round can carry the pod's whole memory; the receiver's bound is the same as a checkpoint's. */
const MAX_ROUND_BYTES = 64 * 1024 ** 3;
export const CACHE_FILE = 'pages.pmcache';
export const STATE_FILE = 'sent.pmstate';
/** A round's address -> hash map (tracked writes only). */
export const MAP_FILE = 'pages.pmmap';
/** On the source: the ranges every round read (their pages are on the destination), kept for the freeze. */
const READ_FILE = 'read.ranges';

/** Source: write tracking per migration, and the last round whose map the destination holds. */
interface Tracking {
  tracker: WriteTracker;
  lastRound?: number;
  /** Private writable memory and processes as the first (full) round read them. */
  privateBytes?: number;
  processes?: number;
}

/**
 * When a tracked pre-copy still ends in a plain dump compared by content: a lazy freeze has costs per process
 * (the tracker's last scan, the lazy dump and restore of each, and after the resume the page faults every
 * process takes while its memory comes from the daemon), a plain one per byte of private memory copied inside
 * the freeze. Measured here: PostgreSQL (15 processes, ~35 MB private beside 75 MB of shared buffers both
 * dump whole) had the same freeze either way and its clients stalled ~80 ms less after a plain one. A single
 * process writing 64 MiB freezes in 75 ms (p50, bench/freeze) lazily, where its Cold freeze is 402. So:
 * plain when the pod has little private memory per process, and not much in all.
 * PODMOTION_LAZY_FREEZE_MIN_MIB on the agent overrides the bound in all (0: always lazy).
 */
const PLAIN_FREEZE_MAX_PRIVATE_BYTES = 48 << 20;
const PLAIN_FREEZE_MAX_PRIVATE_BYTES_PER_PROCESS = 4 << 20;
function plainFreezeMaxBytes(): number {
  const mib = Number(process.env['PODMOTION_LAZY_FREEZE_MIN_MIB']);
  return process.env['PODMOTION_LAZY_FREEZE_MIN_MIB'] !== undefined && Number.isFinite(mib) && mib >= 0 ? mib * 2 ** 20 : PLAIN_FREEZE_MAX_PRIVATE_BYTES;
}
const tracking = new Map<string, Tracking>();

/**
 * The tracked state a lazy freeze can use: tracking on, a round's map delivered, and private memory enough to
 * be worth it (see PLAIN_FREEZE_MAX_PRIVATE_BYTES); undefined otherwise.
 */
export function trackedFreeze(ctx: NodeContext, id: string): { tracker: WriteTracker; round: number; read: string } | undefined {
  const t = tracking.get(id);
  if (!t || t.lastRound === undefined) return undefined;
  const bytes = t.privateBytes ?? Infinity;
  if (bytes < plainFreezeMaxBytes() && bytes / Math.max(1, t.processes ?? 1) < PLAIN_FREEZE_MAX_PRIVATE_BYTES_PER_PROCESS) {
    ctx.log.info({ migration: id, privateBytes: t.privateBytes, processes: t.processes }, 'little private memory per process: a plain dump, its pages sent by reference to the rounds');
    return undefined;
  }
  return { tracker: t.tracker, round: t.lastRound, read: path.join(precopySourceDir(ctx, id), READ_FILE) };
}

/** Stops write tracking of a migration (idempotent); resolves once the pod's memory is plain again. */
export async function stopTracking(id: string): Promise<void> {
  const t = tracking.get(id);
  tracking.delete(id);
  await t?.tracker.stop();
}

export function precopySourceDir(ctx: NodeContext, id: string): string {
  return imagesDir(ctx.cluster, id, 'precopy-source');
}
function destinationDir(ctx: NodeContext, id: string): string {
  return imagesDir(ctx.cluster, id, 'precopy-destination');
}

/** Destination: a receiver for round N's pages. */
export async function precopyPrepare(ctx: NodeContext, m: NodeMigration, req: RoundRef): Promise<PrepareReply> {
  const dir = path.join(destinationDir(ctx, req.id), `round-${req.round}`);
  await mkdir(destinationDir(ctx, req.id), { recursive: true, mode: 0o700 });
  await rm(dir, { recursive: true, force: true });
  const key = newTransferKey();
  const rx = await startReceiver({ host: ctx.dataHost, dir, key, maxBytes: MAX_ROUND_BYTES });
  m.rounds.set(req.round, rx);
  return { host: rx.host, port: rx.port, key };
}

/** Source: read the pod's memory, send what the destination lacks. */
export async function precopySend(ctx: NodeContext, req: RoundRequest): Promise<RoundReply> {
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, req.pod);
  if (!rec || rec.incoming !== undefined) throw new NotFoundError(`pod ${req.pod} is not on ${ctx.node.name}`);
  const base = precopySourceDir(ctx, req.id);
  const roundDir = path.join(base, `round-${req.round}`);
  await mkdir(base, { recursive: true, mode: 0o700 });
  await rm(roundDir, { recursive: true, force: true });
  await mkdir(roundDir, { mode: 0o700 });
  // Writes are tracked from before this round reads, so a page written after it was read is known written.
  let t = tracking.get(req.id);
  if (req.round === 1 && !t && process.env['PODMOTION_WRITE_TRACKING'] !== 'off') {
    t = { tracker: WriteTracker.start(rec.init.pid) };
    tracking.set(req.id, t);
  }
  // Once a round's map went out, a round reads only what was written since the round before.
  const written = t?.lastRound !== undefined ? path.join(base, 'written.bin') : undefined;
  if (t) {
    try {
      await t.tracker.arm(written);
    } catch (e) {
      ctx.log.warn({ migration: req.id, pod: req.pod, err: (e as Error).message }, 'write tracking unavailable: the freeze will compare pages by content');
      await stopTracking(req.id);
      t = undefined;
    }
  }
  const tracked = t ? { map: path.join(roundDir, MAP_FILE), read: path.join(base, 'round.ranges'), ...(written ? { only: written } : {}) } : undefined;
  const stats = await precopyRound(rec.init.pid, path.join(base, STATE_FILE), path.join(roundDir, CACHE_FILE), tracked);
  const sent = await sendDirectory({
    host: req.target.host, port: req.target.port, key: Buffer.from(req.target.key), dir: roundDir,
    ...(req.bandwidthMbps !== undefined ? { bandwidthMbps: req.bandwidthMbps } : {}),
  });
  // The destination holds these pages now; the round file itself is not needed here any more.
  if (t && tracked) {
    if (!tracked.only) {
      t.privateBytes = stats.privatePages * PAGE_BYTES;
      t.processes = stats.processes;
    }
    await appendFile(path.join(base, READ_FILE), await readFile(tracked.read));
    await rm(tracked.read, { force: true });
    t.lastRound = req.round;
  }
  if (written) await rm(written, { force: true });
  await rm(roundDir, { recursive: true, force: true });
  return { pages: stats.pages, newPages: stats.newPages, bytes: stats.bytes, scanMs: stats.ms, transferMs: sent.ms, ...(t ? { tracked: true } : {}) };
}

/**
 * Destination: wait until round N has fully arrived. A round that carries a map (the source tracks writes)
 * goes to the page store, indexed while the next rounds run, so the freeze has nothing left to index.
 */
export async function precopyCommit(ctx: NodeContext, m: NodeMigration, req: RoundRef): Promise<Done> {
  const rx = m.rounds.get(req.round);
  if (!rx) throw new NodeOperationError(`migration ${req.id}: no receiver for pre-copy round ${req.round} (agent restarted?)`);
  const got = await rx.done;
  const dir = path.join(destinationDir(ctx, req.id), `round-${req.round}`);
  // Every round's cache goes to the rebuilder now, checked and indexed while the pod still runs.
  if (m.decoderRound === undefined || req.round > m.decoderRound) {
    m.decoder ??= startDecoder(imagesDir(ctx.cluster, req.id, 'destination'));
    await m.decoder.addCache(path.join(dir, CACHE_FILE));
    m.decoderRound = req.round;
  }
  if (m.storeRound !== req.round && await stat(path.join(dir, MAP_FILE)).then(() => true, () => false)) {
    if (m.storeRound !== undefined && m.storeRound !== req.round - 1) {
      throw new NodeOperationError(`migration ${req.id}: pre-copy round ${req.round} arrived after round ${m.storeRound}`);
    }
    m.pageStore ??= PageStore.start(path.join(NATIVE_DIR, 'pm-page-source'));
    void m.pageStore.add('cache', path.join(dir, CACHE_FILE)).catch(() => {});
    void m.pageStore.add('map', path.join(dir, MAP_FILE)).catch(() => {});
    m.storeRound = req.round;
  }
  // The freeze may come next, and this agent receives and rebuilds in it: collect now, outside it.
  collectGarbage();
  return { done: true, note: `${got.bytes} bytes` };
}

/** Destination, before restore: rebuild the checkpoint's pages from the deltas and the rounds' caches. */
export async function decodeIfPrecopied(ctx: NodeContext, id: string, imagesDirPath: string): Promise<{ fromCache: number; ms: number }> {
  const names = await readdir(imagesDirPath);
  if (!names.some((n) => n.endsWith('.pmdelta'))) return { fromCache: 0, ms: 0 };
  const base = destinationDir(ctx, id);
  const rounds = (await readdir(base).catch(() => [] as string[])).filter((d) => d.startsWith('round-')).sort();
  const caches = rounds.map((r) => path.join(base, r, CACHE_FILE));
  const r = await decodeImages(imagesDirPath, caches);
  return { fromCache: r.fromCache, ms: r.ms };
}

/**
 * Destination, once the images are in: when the freeze was tracked (they hold the final pages), the daemon
 * that restores the pod's memory from the page store; undefined for any other freeze.
 */
export async function startStoreDaemon(m: NodeMigration, id: string, imagesDirPath: string, socketPath: string): Promise<LazyDaemon | undefined> {
  const final = path.join(imagesDirPath, FINAL_PAGES_FILE);
  let head: Buffer;
  try {
    const fh = await open(final, 'r');
    try {
      head = Buffer.alloc(16);
      await fh.read(head, 0, 16, 0);
    } finally {
      await fh.close();
    }
  } catch {
    m.pageStore?.kill();
    m.pageStore = undefined;
    return undefined;
  }
  if (head.subarray(0, 8).toString('latin1') !== 'PMFINAL1') throw new NodeOperationError(`migration ${id}: ${final} is not a final pages file`);
  const last = head.readUInt32LE(8);
  if (!m.pageStore || m.storeRound !== last) {
    throw new NodeOperationError(`migration ${id}: the freeze builds on pre-copy round ${last}, but this node's page store has ${m.storeRound ?? 'none'} (agent restarted?)`);
  }
  return m.pageStore.finish(final, { criuPath: criuBinary(), connectExecPath: path.join(NATIVE_DIR, 'pm-connect-exec'), dir: imagesDirPath, socketPath });
}

/** Removes the pre-copy state of a migration on this node (both roles; missing is fine). */
export async function removePrecopy(ctx: NodeContext, id: string): Promise<void> {
  await stopTracking(id);
  await rm(precopySourceDir(ctx, id), { recursive: true, force: true });
  await rm(destinationDir(ctx, id), { recursive: true, force: true });
}
