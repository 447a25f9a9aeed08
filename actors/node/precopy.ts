/**
 * Pre-copy on the nodes: each round the source reads the running pod's memory and sends the pages the
 * destination does not hold yet (by content hash); the destination keeps every round as a page cache.
 * At the freeze the checkpoint's pages that a round delivered travel as references only.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { newTransferKey, sendDirectory, startReceiver } from '../../criu-shim/transfer/index.js';
import { NodeOperationError, NotFoundError } from '../../bus/errors.js';
import type { Done, PrepareReply, RoundRef, RoundReply, RoundRequest } from '../../bus/node-migration.js';
import { imagesDir } from '../../node-runtime/constants.js';
import { decodeImages, precopyRound } from '../../node-runtime/pages.js';
import type { NodeContext } from './context.js';
import type { NodeMigration } from './state.js';
import { readPodRecord } from '../../node-runtime/records.js';

/** A round can carry the pod's whole memory; the receiver's bound is the same as a checkpoint's. */
const MAX_ROUND_BYTES = 64 * 1024 ** 3;
export const CACHE_FILE = 'pages.pmcache';
export const STATE_FILE = 'sent.pmstate';

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
  const stats = await precopyRound(rec.init.pid, path.join(base, STATE_FILE), path.join(roundDir, CACHE_FILE));
  const sent = await sendDirectory({
    host: req.target.host, port: req.target.port, key: Buffer.from(req.target.key), dir: roundDir,
    ...(req.bandwidthMbps !== undefined ? { bandwidthMbps: req.bandwidthMbps } : {}),
  });
  // The destination holds these pages now; the round file itself is not needed here any more.
  await rm(roundDir, { recursive: true, force: true });
  return { pages: stats.pages, newPages: stats.newPages, bytes: stats.bytes, scanMs: stats.ms, transferMs: sent.ms };
}

/** Destination: wait until round N has fully arrived. */
export async function precopyCommit(m: NodeMigration, req: RoundRef): Promise<Done> {
  const rx = m.rounds.get(req.round);
  if (!rx) throw new NodeOperationError(`migration ${req.id}: no receiver for pre-copy round ${req.round} (agent restarted?)`);
  const got = await rx.done;
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

/** Removes the pre-copy state of a migration on this node (both roles; missing is fine). */
export async function removePrecopy(ctx: NodeContext, id: string): Promise<void> {
  await rm(precopySourceDir(ctx, id), { recursive: true, force: true });
  await rm(destinationDir(ctx, id), { recursive: true, force: true });
}
