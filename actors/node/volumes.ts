/**
 * The storage-tier actor's node side. A `local` volume is copied: the destination receives rounds into its
 * own copy (actors/storage/sync.ts), a bulk round and catch-up rounds run while the pod serves (see
 * actors/storage/rounds.ts), the last one with the pod frozen (alongside the images), and the restore puts
 * the destination's copy where the pod sees it. A `shared` volume is the same directory on both nodes: it
 * is only checked on the destination.
 */
import { rm, rmdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { NodeOperationError, PreconditionError } from '../../bus/errors.js';
import type { FreezeReply, MigStep, PrepareRequest, VolumeSyncReply, VolumeSyncRequest } from '../../bus/node-migration.js';
import { nodeVolumeDir, podVolumePath } from '../../node-runtime/constants.js';
import type { PodRecord } from '../../node-runtime/records.js';
import { copyDir, placeCopy, removeNodeCopy, type PodVolume } from '../../node-runtime/volumes.js';
import { SendState, sendRound, startVolumeReceiver, type RoundStats } from '../storage/sync.js';
import type { NodeContext } from './context.js';
import type { NodeMigration } from './state.js';
import { sourcePod } from './source.js';

const local = (vs: readonly { name: string; tier: string }[] | undefined) => (vs ?? []).filter((v) => v.tier === 'local');

/** Destination: a receiver per `local` volume into a fresh copy; `shared` ones must be visible here. */
export async function prepareVolumes(ctx: NodeContext, m: NodeMigration, req: PrepareRequest, key: Buffer): Promise<Array<{ name: string; port: number }>> {
  const ports: Array<{ name: string; port: number }> = [];
  for (const v of req.volumes ?? []) {
    if (v.tier === 'shared') {
      const dir = podVolumePath(ctx.cluster, req.pod, v.name);
      if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) throw new PreconditionError(`shared volume ${v.name} of pod ${req.pod} is not visible on ${ctx.node.name} (${dir})`);
      continue;
    }
    const root = nodeVolumeDir(ctx.cluster, ctx.node.name, req.pod, v.name);
    await rm(root, { recursive: true, force: true });
    ports.push(await receiveInto(ctx, m, v.name, root, key));
  }
  return ports;
}

async function receiveInto(ctx: NodeContext, m: NodeMigration, volume: string, root: string, key: Buffer): Promise<{ name: string; port: number }> {
  const rx = await startVolumeReceiver({ host: ctx.dataHost, root, key });
  m.volumeReceivers.set(volume, rx);
  return { name: volume, port: rx.port };
}

/** Source, per migration and volume: the blocks sent so far, so that later rounds send only changes. */
const sent = new Map<string, SendState>();
const sentKey = (id: string, volume: string) => `${id}/${volume}`;

/** Source: one round of every `local` volume to the destination's receivers (the bus verb vol.sync). */
export async function syncVolumes(ctx: NodeContext, req: VolumeSyncRequest): Promise<VolumeSyncReply> {
  const rec = await sourcePod(ctx, req.pod);
  return volumeRound(ctx, req.id, rec, req.target);
}

/** A round run inside a freeze, as the freeze reply's fields (none when the pod has no `local` volume). */
export function volumeFields(v: VolumeSyncReply): Partial<FreezeReply> {
  return v.volumes > 0 ? { volumeFiles: v.files, volumeBytes: v.bytes, volumeMs: v.ms } : {};
}

/** Source, at cutover or rollback: what was sent no longer matters. */
export function forgetSent(id: string): void {
  for (const k of [...sent.keys()]) if (k.startsWith(`${id}/`)) sent.delete(k);
}

/** One round of every `local` volume of `rec` to `target`'s receivers; the freeze runs the last one. */
export async function volumeRound(ctx: NodeContext, id: string, rec: PodRecord, target: VolumeSyncRequest['target']): Promise<VolumeSyncReply> {
  const t0 = ctx.clock.nowMs();
  const stats = await Promise.all(local(rec.volumes).map(async (v) => {
    const port = target.volumes?.find((x) => x.name === v.name)?.port;
    if (port === undefined) throw new NodeOperationError(`the destination has no receiver for volume ${v.name}`);
    let state = sent.get(sentKey(id, v.name));
    if (!state) sent.set(sentKey(id, v.name), (state = new SendState()));
    return sendRound({ host: target.host, port, key: Buffer.from(target.key), root: await copyDir(ctx.cluster, ctx.node.name, rec.name, v), state });
  }));
  const sum = (f: (s: RoundStats) => number) => stats.reduce((a, s) => a + f(s), 0);
  return { volumes: stats.length, files: sum((s) => s.files), bytes: sum((s) => s.bytes), deleted: sum((s) => s.deleted), ms: ctx.clock.nowMs() - t0 };
}

/** Destination, inside the freeze before the restore: the pod's paths show this node's copies. */
export async function attachHere(ctx: NodeContext, m: NodeMigration, pod: string, volumes: readonly PodVolume[] | undefined): Promise<void> {
  for (const v of local(volumes)) {
    if (!m.volumeReceivers.has(v.name)) throw new NodeOperationError(`volume ${v.name} of pod ${pod} was never received here`);
    await placeCopy(ctx.cluster, ctx.node.name, pod, v.name);
  }
}

/** Source, before its copy resumes after a rollback: the pod's paths show this node's copies again. */
export async function reattachSource(ctx: NodeContext, rec: PodRecord): Promise<void> {
  for (const v of local(rec.volumes)) await placeCopy(ctx.cluster, ctx.node.name, rec.name, v.name, { discardDisplaced: true });
}

/** Destination rollback: the copies received here go (the source's are the pod's data). */
export async function discardReceived(ctx: NodeContext, m: NodeMigration | undefined, req: MigStep): Promise<void> {
  for (const [name, rx] of m?.volumeReceivers ?? []) {
    rx.close();
    // Only a copy waiting beside the pod's path: one already in place is the source rollback's to discard.
    await removeNodeCopy(ctx.cluster, ctx.node.name, req.pod, name);
  }
  m?.volumeReceivers.clear();
}

/** Source cutover: this node's copies of the pod's `local` volumes go with the pod. */
export async function removeSourceCopies(ctx: NodeContext, rec: PodRecord): Promise<void> {
  for (const v of local(rec.volumes)) await removeNodeCopy(ctx.cluster, ctx.node.name, rec.name, v.name);
  // The pod's folder on this node's disk, if nothing else is in it.
  if (local(rec.volumes).length) await rmdir(path.dirname(nodeVolumeDir(ctx.cluster, ctx.node.name, rec.name, 'x'))).catch(() => {});
}

/**
 * Moving a pod back after it served on the destination (rollback after Restore), on the source: a receiver
 * per `local` volume into this node's own copy, which then takes what the destination wrote.
 */
export async function receiveVolumesBack(ctx: NodeContext, m: NodeMigration, pod: string, volumes: readonly PodVolume[] | undefined, key: Buffer): Promise<Array<{ name: string; port: number }>> {
  const ports: Array<{ name: string; port: number }> = [];
  for (const v of local(volumes)) ports.push(await receiveInto(ctx, m, v.name, await copyDir(ctx.cluster, ctx.node.name, pod, v), key));
  return ports;
}

/** On the destination, moving the pod back: one round of its `local` volumes to the source (see forgetSent). */
export async function syncVolumesBack(ctx: NodeContext, id: string, rec: PodRecord, target: VolumeSyncRequest['target']): Promise<VolumeSyncReply> {
  return volumeRound(ctx, `${id}-back`, rec, target);
}

/** On the source, before the copy that came back is restored: its volumes' copies go back in place. */
export async function takeVolumesBack(ctx: NodeContext, m: NodeMigration, rec: PodRecord): Promise<void> {
  for (const rx of m.volumeReceivers.values()) rx.close();
  m.volumeReceivers.clear();
  await reattachSource(ctx, rec);
}
