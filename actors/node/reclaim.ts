/**
 * Rollback after the destination has served: the pod moves back the way it came. The destination copy is
 * checkpointed (held, frozen, left stopped) and restored into the source's namespace in place of the frozen
 * source copy, so connections keep the state the destination gave them.
 */
import { rm } from 'node:fs/promises';
import { flowsToCarry } from './relay.js';
import { newTransferKey, startReceiver } from '../../criu-shim/transfer/index.js';
import { NodeOperationError, NotFoundError } from '../../bus/errors.js';
import type { FreezeReply, PrepareReply, ReclaimFreezeRequest, ReclaimRestoreRequest, MigStep, RestoreReply } from '../../bus/node-migration.js';
import { holdPinDir, imagesDir, podNetns } from '../../node-runtime/constants.js';
import { killPodProcesses } from '../../node-runtime/pods.js';
import { refOf } from '../../node-runtime/procs.js';
import { readPodRecord, writePodRecord } from '../../node-runtime/records.js';
import { checkpoint, restoreInto } from './checkpoint.js';
import { resumeInPlace } from './source.js';
import type { NodeContext } from './context.js';
import type { NodeMigration } from './state.js';
import { receiveVolumesBack, syncVolumesBack, takeVolumesBack, volumeFields } from './volumes.js';

/** A rolled-back pod is the pod that was checkpointed: the same bound as a forward migration's images. */
const MAX_IMAGE_BYTES = 64 * 1024 ** 3;
const QUIESCE_TIMEOUT_MS = 100;

/** On the source: a receiver for the destination's images. */
export async function reclaimPrepare(ctx: NodeContext, m: NodeMigration, req: MigStep): Promise<PrepareReply> {
  if (m.reclaim) return m.reclaim;
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, req.pod);
  const dir = imagesDir(ctx.cluster, req.id, 'reclaim');
  await rm(dir, { recursive: true, force: true });
  const key = newTransferKey();
  m.reclaimReceiver = await startReceiver({ host: ctx.dataHost, dir, key, maxBytes: MAX_IMAGE_BYTES });
  // The destination's copies of `local` volumes took the writes it served: they come back into this node's.
  const volumes = await receiveVolumesBack(ctx, m, req.pod, rec?.volumes, key);
  m.reclaim = { host: m.reclaimReceiver.host, port: m.reclaimReceiver.port, key, ...(volumes.length ? { volumes } : {}) };
  return m.reclaim;
}

/** On the destination: arm the zero window, checkpoint the serving copy, stream it back. */
export async function reclaimFreeze(ctx: NodeContext, m: NodeMigration, req: ReclaimFreezeRequest): Promise<FreezeReply> {
  if (m.reclaimFroze) return m.reclaimFroze;
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, req.pod);
  if (!rec || rec.incoming !== req.id) throw new NotFoundError(`no restored copy of ${req.pod} from migration ${req.id} on ${ctx.node.name}`);
  const pin = holdPinDir(ctx.cluster, ctx.node.name, req.pod);
  // Volumes: a bulk round back while the pod still serves here, the last one with it frozen.
  const local = rec.volumes?.some((v) => v.tier === 'local') ?? false;
  if (local) await syncVolumesBack(ctx, req.id, rec, req.target);
  await ctx.hold.setModes(pin, ['zw']);
  await ctx.hold.quiesce(pin, QUIESCE_TIMEOUT_MS, { kickNetns: ctx.node.netns, podNetns: rec.netns });
  m.reclaimFroze = await checkpoint(ctx, {
    pid: rec.init.pid, netns: rec.netns, pin, dir: imagesDir(ctx.cluster, req.id, 'destination'), target: req.target,
    whileFrozen: [() => flowsToCarry(ctx, rec.ip), ...(local ? [() => syncVolumesBack(ctx, req.id, rec, req.target).then(volumeFields)] : [])],
  });
  return m.reclaimFroze;
}

/** On the source: replace the frozen copy by the destination's state, release, reopen peers' windows. */
export async function reclaimRestore(ctx: NodeContext, m: NodeMigration, req: ReclaimRestoreRequest): Promise<RestoreReply> {
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, req.pod);
  if (!rec) throw new NotFoundError(`pod ${req.pod} has no source copy on ${ctx.node.name}`);
  // Asked again (a lost reply, an agent restart): the copy that came back is running; never kill it. Images
  // a repeated move back sent meanwhile are not needed: they go (they hold the pod's memory).
  const again = m.reclaimed ?? (rec.reclaimedBy === req.id && (await refOf(rec.init.pid))
    ? { resumedAtMs: ctx.clock.nowMs(), restoreMs: 0, initPid: rec.init.pid, sockets: [] } : undefined);
  if (again) {
    m.reclaimReceiver?.close();
    await rm(imagesDir(ctx.cluster, req.id, 'reclaim'), { recursive: true, force: true });
    return again;
  }
  if (!m.reclaimReceiver) throw new NodeOperationError(`migration ${req.id}: no rollback images expected here (agent restarted?)`);
  await m.reclaimReceiver.done;
  // The frozen copy's sockets are still in repair mode: killing it sends nothing, and frees its ports.
  await killPodProcesses(rec.init, rec.holder);
  // This node's copies of the volumes, now holding what the destination wrote, go back in place.
  await takeVolumesBack(ctx, m, rec);
  const pin = holdPinDir(ctx.cluster, ctx.node.name, req.pod);
  const netns = podNetns(ctx.cluster, ctx.node.name, req.pod);
  const r = await restoreInto(ctx, { netns, pin, dir: imagesDir(ctx.cluster, req.id, 'reclaim'), networkContinuity: req.networkContinuity });
  const init = await refOf(r.pid);
  if (!init) throw new NodeOperationError(`pod ${req.pod} restored on ${ctx.node.name} (pid ${r.pid}) exited at once`);
  const { holder: _gone, ...rest } = rec;
  await writePodRecord(ctx.cluster, { ...rest, init, reclaimedBy: req.id });
  await ctx.hold.reopen({ netns, flowsPin: holdPinDir(ctx.cluster, req.destinationNode, req.pod) }).catch(() => 0);
  await ctx.hold.setModes(pin, []);
  await rm(imagesDir(ctx.cluster, req.id, 'reclaim'), { recursive: true, force: true });
  await rm(imagesDir(ctx.cluster, req.id, 'source'), { recursive: true, force: true });
  m.reclaimed = { resumedAtMs: r.resumedAtMs, restoreMs: r.restoreMs, initPid: r.pid, sockets: r.sockets };
  return m.reclaimed;
}

/**
 * On the destination, when moving the pod back failed: the stopped destination copy is the pod's newest
 * state, so it resumes here and is served from here (its record stops being `incoming`).
 */
export async function reclaimAbort(ctx: NodeContext, req: MigStep): Promise<string> {
  const rec = await readPodRecord(ctx.cluster, ctx.node.name, req.pod);
  // Asked again after it worked: the copy is served from here already.
  if (rec && rec.incoming === undefined) return 'served from here already';
  if (!rec || rec.incoming !== req.id) throw new NotFoundError(`no restored copy of ${req.pod} from migration ${req.id} on ${ctx.node.name}`);
  const note = await resumeInPlace(ctx, rec);
  const { incoming: _served, ...served } = rec;
  await writePodRecord(ctx.cluster, served);
  await rm(imagesDir(ctx.cluster, req.id, 'destination'), { recursive: true, force: true });
  return note;
}
