/**
 * The two halves of moving a pod's state, shared by a migration and by its reverse (a rollback after the
 * destination already served): checkpoint a pod in place, leaving it stopped, and restore one into a
 * prepared namespace. The traffic hold is driven from CRIU's own notifications.
 */
import { readdirSync, statSync } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { criuDump, criuRestore, prepareRestore, type PreparedRestore } from '../../criu-shim/rpc/index.js';
import { openImageStream, type ImageStream } from '../../criu-shim/transfer/index.js';
import type { FreezeReply, PrepareReply, SocketSeq } from '../../bus/node-migration.js';
import { NodeOperationError } from '../../bus/errors.js';
import { criuBinary, NATIVE_DIR } from '../../node-runtime/constants.js';
import { criuConfigFile } from '../../node-runtime/criu-rundir.js';
import { inventory, readSeqs } from '../../node-runtime/sockets.js';
import { finalPages, watchAndEncode, type ImageEncoder } from '../../node-runtime/pages.js';
import type { WriteTracker } from '../../node-runtime/wptrack.js';
import { endedPageSocket, servePages, type PageSource } from '../../criu-shim/transfer/lazy.js';
import { countPages, PAGE_BYTES, PE_LAZY } from '../../criu-shim/images/pagemap.js';
import type { NodeContext } from './context.js';

/**
 * Work that needs the tasks frozen but not CRIU waiting for it, run alongside the dump and the images (the
 * volumes' last round, the node's conntrack entries of the pod's flows); its fields join the freeze reply.
 */
export type WhileFrozen = () => Promise<Partial<FreezeReply>>;
/** Written by a tracked freeze into the images: the pages written since the last pre-copy round. */
export const FINAL_PAGES_FILE = 'pages.pmfinal';

/**
 * Bytes of a checkpoint's files but its pages' deltas (`*.pmdelta`, counted as the pages they encode); the
 * images the deltas replaced wait in a folder (`.encoded`), not counted, not sent. Synchronous: ~130 stats of
 * a tmpfs inside the freeze, microseconds each, where a thread-pool round trip apiece added up to ~10 ms.
 */
function dirBytes(dir: string): number {
  let total = 0;
  for (const f of readdirSync(dir, { withFileTypes: true })) if (f.isFile() && !f.name.endsWith('.pmdelta')) total += statSync(path.join(dir, f.name)).size;
  return total;
}

/**
 * Checkpoints the pod whose init is `pid` into `dir` and streams the images to `target`. At network-lock
 * (tasks frozen, sockets not yet in repair) the hold starts dropping both ways; the pod stays stopped with
 * its sockets in repair mode, so it can be resumed by a rollback or killed silently at cutover.
 */
export async function checkpoint(ctx: NodeContext, o: {
  pid: number; netns: string; pin: string; dir: string; target: PrepareReply;
  /** Close the peers' window at CRIU's pre-dump (start-up done, nothing frozen yet) and wait until quiet. */
  zeroWindowQuiesceMs?: number;
  /** Pre-copy state: pages it lists go as references (see node-runtime/pages.ts). */
  precopyState?: string;
  bandwidthMbps?: number;
  /** A lazy dump (PostCopy): CRIU's page socket for it (see endedPageSocket). */
  lazyPagesSocket?: string;
  /** Runs with the pod frozen, before CRIU reads its mappings. */
  onFrozen?: () => Promise<void>;
  /** Runs after the dump, before the images go: may add files to `dir`. */
  beforeSend?: () => Promise<void>;
  /** Started once the tasks are frozen, alongside the dump and the images. */
  whileFrozen?: readonly WhileFrozen[];
}): Promise<FreezeReply> {
  await rm(o.dir, { recursive: true, force: true });
  await mkdir(o.dir, { recursive: true, mode: 0o700 });
  const netnsIno = (await stat(`/run/netns/${o.netns}`)).ino;
  let frozenAtMs = 0;
  let sockets: SocketSeq[] = [];
  let side: Promise<Partial<FreezeReply>> | undefined;
  let quiesce: string | undefined;
  // What the freeze spends, in ms since the tasks froze (logged like the restore's timeline).
  const marks: string[] = [];
  const mark = (what: string) => marks.push(`${what}@${Math.round(ctx.clock.nowMs() - frozenAtMs)}`);
  const streamTo = {
    host: o.target.host, port: o.target.port, key: Buffer.from(o.target.key), dir: o.dir,
    ...(o.bandwidthMbps !== undefined ? { bandwidthMbps: o.bandwidthMbps } : {}),
  };
  // After pre-copy, the images' pages go as references to what the rounds delivered: encoded as CRIU closes
  // each pages image, alongside the dump, and sent at once on a stream opened before CRIU starts (outside the
  // freeze): the destination rebuilds each while CRIU dumps the next processes. Without pre-copy the images
  // go once the dump is over (a long dump would leave an early stream idle).
  let stream: ImageStream | undefined;
  let encoder: ImageEncoder | undefined;
  if (o.precopyState !== undefined) {
    stream = await openImageStream(streamTo);
    let first = true;
    try {
      encoder = await watchAndEncode(o.dir, o.precopyState, (name) => {
        if (first) mark('first-delta');
        first = false;
        stream?.send(name);
      });
    } catch (e) {
      stream.abort();
      throw e;
    }
  }
  try {
    await criuDump({
      criuPath: criuBinary(), pid: o.pid, imagesDir: o.dir, tcpEstablished: true, shellJob: true,
      external: [`net[${netnsIno}]:extnet`], networkLock: 'SKIP', finalState: 'stop', logLevel: 2, configFile: await criuConfigFile(),
      ...(o.lazyPagesSocket !== undefined ? { lazyPagesSocket: o.lazyPagesSocket } : {}),
    }, {
      onNotify: async (n) => {
        if (n.script === 'pre-dump' && o.zeroWindowQuiesceMs !== undefined) {
          // CRIU's ~100 ms of start-up is behind us: the peers stop sending only now, just before the freeze.
          const closedAt = ctx.clock.nowMs();
          await ctx.hold.setModes(o.pin, ['zw']);
          const q = await ctx.hold.quiesce(o.pin, o.zeroWindowQuiesceMs, { kickNetns: ctx.node.netns, podNetns: o.netns });
          // How long the peers waited under the zero window before the freeze (clients feel it too).
          quiesce = `${q.settled ? 'settled' : 'not settled'} after ${Math.round(q.waitedMs)} ms, window closed ${Math.round(ctx.clock.nowMs() - closedAt)} ms before the freeze`;
        } else if (n.script === 'network-lock') {
          frozenAtMs = ctx.clock.nowMs();
          await ctx.hold.setModes(o.pin, ['zw', 'drop-in', 'drop-out']);
          mark('held');
          // The tasks are frozen: nothing changes the volumes or opens a flow any more; that work runs while CRIU dumps.
          side = Promise.all((o.whileFrozen ?? []).map((f) => f())).then((parts) => {
            mark('while-frozen');
            return Object.assign({}, ...parts) as Partial<FreezeReply>;
          });
          side.catch(() => {});
          await o.onFrozen?.();
          mark('network-lock');
        } else if (n.script === 'post-dump') {
          mark('post-dump');
        }
      },
    });
    mark('dumped');
    // The stopped tasks keep their sockets in repair mode: their sequence state is read while the images go,
    // not while CRIU waits.
    let established = 0;
    const seqs = Promise.all([readSeqs(o.pid), inventory(o.netns)]).then(([s, listed]) => {
      sockets = s;
      established = listed.length;
      mark('sequences');
    });
    seqs.catch(() => {});
    await o.beforeSend?.();
    const dumpMs = ctx.clock.nowMs() - frozenAtMs;
    const encoded = await encoder?.finish();
    const bytes = dirBytes(o.dir) + (encoded?.pages ?? 0) * PAGE_BYTES;
    const t0 = ctx.clock.nowMs();
    mark('encoded');
    const sent = await (stream ?? await openImageStream(streamTo)).finish();
    const transferMs = ctx.clock.nowMs() - t0;
    mark('sent');
    await seqs;
    const extra = (await side) ?? {};
    ctx.log.info({ marks, ...(quiesce ? { quiesce } : {}) }, 'freeze timeline (ms since the tasks froze)');
    return {
      ...extra, frozenAtMs, dumpMs, transferMs, bytes, files: sent.files, sockets, wireBytes: sent.bytes, established,
      ...(encoded ? { referencedPages: encoded.referenced, encodeMs: encoded.ms, encodeAfterDumpMs: encoded.lastMs } : {}),
    };
  } finally {
    // Gone once it answered `finish`; after a failed dump it must not wait on.
    encoder?.stop();
    // Ended by `finish`; after a failure the destination must see the stream break.
    stream?.abort();
  }
}

/** A PostCopy session on the source: the stopped tree's lazy memory, served until the destination has it all. */
export interface LazySession {
  pages: PageSource;
}

/**
 * PostCopy's freeze: like `checkpoint`, but private anonymous memory stays in the stopped tasks (PE_LAZY)
 * and only the rest of the images crosses inside the freeze; then the page channel opens, served from the
 * stopped tasks (criu-shim/transfer/lazy.ts).
 */
export async function checkpointLazy(ctx: NodeContext, o: {
  pid: number; netns: string; pin: string; dir: string; target: PrepareReply; socketPath: string;
  zeroWindowQuiesceMs?: number; bandwidthMbps?: number; whileFrozen?: readonly WhileFrozen[];
}): Promise<{ reply: FreezeReply; session: LazySession }> {
  const pagesPort = o.target.pagesPort;
  if (pagesPort === undefined) throw new NodeOperationError('the destination opened no page channel for post-copy');
  const pageSocket = await endedPageSocket(o.socketPath);
  // The page channel opens while CRIU starts up, not inside the freeze; it carries nothing until the
  // destination's daemon asks, after the restore.
  const serving = servePages({
    helperPath: path.join(NATIVE_DIR, 'pm-page-source'), rootPid: o.pid, host: o.target.host, port: pagesPort, key: Buffer.from(o.target.key),
    ...(o.bandwidthMbps !== undefined ? { bandwidthMbps: o.bandwidthMbps } : {}),
  });
  serving.catch(() => {});
  let reply: FreezeReply;
  try {
    reply = await checkpoint(ctx, { ...o, lazyPagesSocket: o.socketPath });
  } catch (e) {
    void serving.then((p) => p.end('the dump failed'), () => {});
    throw e;
  } finally {
    pageSocket.close();
  }
  const pages = await serving;
  const lazyBytes = (await countPages(o.dir, PE_LAZY)) * PAGE_BYTES;
  return { reply: { ...reply, lazyBytes }, session: { pages } };
}

/**
 * Pre-copy's freeze with tracked writes: a lazy dump (the memory stays in the stopped tasks, as for
 * PostCopy), the pages written since the last round read out of them (pm-pages final), and only the images
 * and those pages cross. The destination restores lazily from what the rounds and this freeze delivered:
 * all of the pod's memory is there before it resumes, and nothing is asked of the source afterwards.
 */
export async function checkpointTracked(ctx: NodeContext, o: {
  pid: number; netns: string; pin: string; dir: string; target: PrepareReply; socketPath: string;
  tracker: WriteTracker; round: number; read: string; cleanFile: string;
  zeroWindowQuiesceMs?: number; bandwidthMbps?: number; whileFrozen?: readonly WhileFrozen[];
  /** The rounds' page set: what the dump still holds (shared memory, stacks) travels as references to it. */
  precopyState?: string;
}): Promise<FreezeReply> {
  const pageSocket = await endedPageSocket(o.socketPath);
  let written = 0;
  let final: { literal: number; referenced: number; ms: number } | undefined;
  try {
    const reply = await checkpoint(ctx, {
      ...o, lazyPagesSocket: o.socketPath,
      onFrozen: async () => {
        written = (await o.tracker.final(o.cleanFile)).writtenBytes;
      },
      beforeSend: async () => {
        final = await finalPages(o.pid, { read: o.read, clean: o.cleanFile, out: path.join(o.dir, FINAL_PAGES_FILE), round: o.round });
      },
    });
    return {
      ...reply, lazyFromRounds: true, writtenBytes: written,
      ...(final ? { referencedPages: final.referenced + (reply.referencedPages ?? 0), finalPages: final.literal, encodeMs: final.ms + (reply.encodeMs ?? 0) } : {}),
    };
  } finally {
    pageSocket.close();
    await rm(o.cleanFile, { force: true });
  }
}

export interface Restored {
  pid: number;
  resumedAtMs: number;
  restoreMs: number;
  sockets: SocketSeq[];
}

/** The files a restore into `netns` hands CRIU: the namespace, as `extnet`. */
const restoreFiles = (netns: string) => [{ key: 'extnet', path: `/run/netns/${netns}` }];

/** CRIU started and waiting to restore into `netns` (its namespace exists): restoreInto takes it. */
export function prepareRestoreInto(netns: string): PreparedRestore {
  return prepareRestore({ criuPath: criuBinary(), inherit: restoreFiles(netns) });
}

/**
 * Restores the images in `dir` into the existing namespace `netns` (same IP and MAC as the checkpoint).
 * At network-unlock the sockets are restored and still in repair mode: their sequence state is read, then
 * the hold opens, just before the restorer turns repair off and its window probe goes out.
 */
export async function restoreInto(ctx: NodeContext, o: {
  netns: string; pin: string; dir: string; networkContinuity: boolean; lazyPages?: boolean;
  /** CRIU already started for it (prepareRestoreInto): the spawns are not waited for inside the freeze. */
  prepared?: PreparedRestore;
}): Promise<Restored> {
  const t0 = ctx.clock.nowMs();
  const marks: string[] = [];
  let rootPid = 0;
  let sockets: SocketSeq[] = [];
  let resumedAtMs = 0;
  const r = await criuRestore({
    criuPath: criuBinary(), imagesDir: o.dir, tcpEstablished: true, shellJob: true, tcpClose: !o.networkContinuity,
    networkLock: 'SKIP', logLevel: 2, configFile: await criuConfigFile(), inherit: restoreFiles(o.netns),
    ...(o.lazyPages ? { lazyPages: true } : {}),
  }, {
    onNotify: async (n) => {
      marks.push(`${n.script}@${Math.round(ctx.clock.nowMs() - t0)}`);
      if (n.pid !== undefined && n.script === 'post-restore') rootPid = n.pid;
      if (n.script === 'network-unlock') {
        if (rootPid > 0 && o.networkContinuity) {
          sockets = await readSeqs(rootPid);
          marks.push(`sequences@${Math.round(ctx.clock.nowMs() - t0)}`);
        }
        await ctx.hold.setModes(o.pin, []);
        marks.push(`opened@${Math.round(ctx.clock.nowMs() - t0)}`);
      }
      if (n.script === 'post-resume') resumedAtMs = ctx.clock.nowMs();
    },
  }, o.prepared);
  await ctx.hold.setModes(o.pin, []);
  ctx.log.info({ marks, ...(o.prepared ? { criuStartedAhead: o.prepared.taken } : {}) }, 'restore timeline (ms since start)');
  return { pid: r.pid, resumedAtMs: resumedAtMs || ctx.clock.nowMs(), restoreMs: ctx.clock.nowMs() - t0, sockets };
}
