/** Registers the node-side migration actors (source, destination, network relay) on a node agent's bus. */
import type { Subscription } from '@nats-io/nats-core';
import { serve } from '../../bus/rpc.js';
import { Subjects } from '../../bus/subjects.js';
import { migCodecs as c } from '../coordinator/codecs.js';
import type { NodeContext } from './context.js';
import { armHold, cutoverSource, estimatePod, freezePod, inventoryPod, rollbackSource } from './source.js';
import { cutoverDestination, disengage, hasRestoredCopy, holdStats, postcopyFinish, preparePod, probe, restorePod, rollbackDestination } from './destination.js';
import { route, takeFlows } from './relay.js';
import { syncVolumes } from './volumes.js';
import { readPodRecord } from '../../node-runtime/records.js';
import { isRunning } from '../../node-runtime/procs.js';
import { precopyCommit, precopyPrepare, precopySend } from './precopy.js';
import { reclaimAbort, reclaimFreeze, reclaimPrepare, reclaimRestore } from './reclaim.js';
import { forgetMigration, migrationState, refuseIfEnded, serialized } from './state.js';

export type { NodeContext } from './context.js';
export type { HoldOps } from './hold.js';

export function registerMigrationActors(ctx: NodeContext): Subscription[] {
  const { nc, node, log } = ctx;
  const onError = (subject: string, err: unknown) => log.warn({ subject, err: (err as Error).message }, 'migration step failed');
  const at = (verb: Parameters<typeof Subjects.node>[1]) => Subjects.node(node.name, verb);
  const step = <T>(id: string, pod: string, fn: () => Promise<T>) => serialized(migrationState(id, pod), fn);
  // A step that moves the migration forward is refused once it ended here: checked on arrival (no state is
  // made for an ended migration) and again when its turn comes (it may have queued behind the rollback).
  const forward = <T>(verb: string, id: string, pod: string, fn: () => Promise<T>) => {
    refuseIfEnded(id, verb);
    return step(id, pod, () => {
      refuseIfEnded(id, verb);
      return fn();
    });
  };
  return [
    serve(nc, at('mig.inventory'), c.step, c.inventory, (r) => inventoryPod(ctx, r), { onError }),
    serve(nc, at('mig.estimate'), c.estimate, c.estimateReply, (r) => estimatePod(ctx, r), { onError }),
    serve(nc, at('mig.precopy.prepare'), c.roundRef, c.prepareReply, (r) => forward('mig.precopy.prepare', r.id, r.pod, () => precopyPrepare(ctx, migrationState(r.id, r.pod), r)), { onError }),
    serve(nc, at('mig.precopy.round'), c.round, c.roundReply, (r) => forward('mig.precopy.round', r.id, r.pod, () => precopySend(ctx, r)), { onError }),
    serve(nc, at('mig.precopy.commit'), c.roundRef, c.done, (r) => precopyCommit(ctx, migrationState(r.id, r.pod), r), { onError }),
    serve(nc, at('mig.prepare'), c.prepare, c.prepareReply, (r) => forward('mig.prepare', r.id, r.pod, () => preparePod(ctx, migrationState(r.id, r.pod), r)), { onError }),
    serve(nc, at('mig.arm'), c.step, c.arm, (r) => forward('mig.arm', r.id, r.pod, () => armHold(ctx, r)), { onError }),
    serve(nc, at('mig.freeze'), c.freeze, c.freezeReply, (r) => forward('mig.freeze', r.id, r.pod, async () => {
      const m = migrationState(r.id, r.pod);
      m.froze ??= await freezePod(ctx, r);
      return m.froze;
    }), { onError }),
    serve(nc, at('mig.restore'), c.restore, c.restoreReply, (r) => forward('mig.restore', r.id, r.pod, () => restorePod(ctx, migrationState(r.id, r.pod), r)), { onError }),
    serve(nc, at('mig.disengage'), c.disengageReq, c.disengage, (r) => forward('mig.disengage', r.id, r.pod, () => disengage(ctx, migrationState(r.id, r.pod), r)), { onError }),
    serve(nc, at('mig.holdStats'), c.step, c.holdStats, (r) => holdStats(ctx, r), { onError }),
    serve(nc, at('mig.probe'), c.probe, c.probeReply, (r) => probe(ctx, r), { onError }),
    serve(nc, at('mig.cutover'), c.role, c.done, (r) => step(r.id, r.pod, async () => {
      if (r.role === 'source') await cutoverSource(ctx, r);
      else await cutoverDestination(ctx, migrationState(r.id, r.pod), r);
      forgetMigration(r.id);
      log.info({ migration: r.id, pod: r.pod, role: r.role }, 'cutover done');
      return { done: true };
    }), { onError }),
    serve(nc, at('mig.rollback'), c.role, c.done, (r) => step(r.id, r.pod, async () => {
      const note = r.role === 'source' ? await rollbackSource(ctx, r) : await rollbackDestination(ctx, migrationState(r.id, r.pod), r);
      forgetMigration(r.id);
      log.info({ migration: r.id, pod: r.pod, role: r.role, note }, 'rolled back');
      return { done: true, note };
    }), { onError }),
    // Queued behind a running restore, so the answer reflects how it ended: a copy that was restored (its
    // record says so, or processes run in its namespace after a restore began) may have served. A "no" is a
    // promise to the rollback that asked: a restore request arriving after it is refused.
    serve(nc, at('mig.restored'), c.step, c.done, (r) => step(r.id, r.pod, async () => {
      const m = migrationState(r.id, r.pod);
      const done = await hasRestoredCopy(ctx, m, r);
      if (!done) m.fenced = true;
      return { done };
    }), { onError }),
    // Read-only, not queued behind the migration's operations: the coordinator's rollback janitor asks it of
    // migrations that ended.
    serve(nc, at('mig.where'), c.step, c.where, async (r) => {
      const rec = await readPodRecord(ctx.cluster, node.name, r.pod);
      if (!rec) return { present: false, running: false };
      return {
        present: true, running: await isRunning(rec.init),
        ...(rec.incoming !== undefined ? { incoming: rec.incoming } : {}), ...(rec.reclaimedBy !== undefined ? { reclaimedBy: rec.reclaimedBy } : {}),
      };
    }, { onError }),
    serve(nc, at('mig.reclaim.prepare'), c.step, c.prepareReply, (r) => step(r.id, r.pod, () => reclaimPrepare(ctx, migrationState(r.id, r.pod), r)), { onError }),
    serve(nc, at('mig.reclaim.abort'), c.step, c.done, (r) => step(r.id, r.pod, async () => {
      const note = await reclaimAbort(ctx, r);
      forgetMigration(r.id);
      log.warn({ migration: r.id, pod: r.pod, note }, 'moving the pod back failed: it resumed here');
      return { done: true, note };
    }), { onError }),
    serve(nc, at('mig.reclaim.freeze'), c.reclaimFreeze, c.freezeReply, (r) => step(r.id, r.pod, () => reclaimFreeze(ctx, migrationState(r.id, r.pod), r)), { onError }),
    serve(nc, at('mig.reclaim.restore'), c.reclaimRestore, c.restoreReply, (r) => step(r.id, r.pod, async () => {
      const out = await reclaimRestore(ctx, migrationState(r.id, r.pod), r);
      forgetMigration(r.id);
      log.info({ migration: r.id, pod: r.pod }, 'pod moved back to the source');
      return out;
    }), { onError }),
    // Not queued behind the migration's other steps: it may wait long, and a rollback must not wait for it.
    serve(nc, at('mig.postcopy.finish'), c.step, c.postcopy, (r) => postcopyFinish(ctx, migrationState(r.id, r.pod), r), { onError }),
    serve(nc, at('vol.sync'), c.volSync, c.volSyncReply, (r) => forward('vol.sync', r.id, r.pod, () => syncVolumes(ctx, r)), { onError }),
    serve(nc, at('relay.route'), c.route, c.done, (r) => route(ctx, r), { onError }),
    serve(nc, at('relay.conntrack'), c.conntrack, c.conntrackReply, (r) => forward('relay.conntrack', r.id, r.pod, () => takeFlows(ctx, r)), { onError }),
  ];
}
