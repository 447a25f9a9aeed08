/**
 * Finishes rollbacks that ran out of time. A rollback that outlasts its phase (nodes down or cut off for
 * minutes) ends Failed. If no restore ever began on the destination, no copy can have served there, so the
 * source can still be resumed and the destination cleaned up safely — later, once both answer. If a restore
 * began, the janitor asks both nodes what they hold: when exactly one copy runs as the pod (the source's copy
 * brought back by this migration's move back, or a destination copy that resumed as the pod when the move
 * back was abandoned), the other copy is removed. Either way the status then records where the pod serves
 * (`error.servedFrom`), which the route reconciler follows. A move back that stopped half way (no copy
 * runs) is finished. Anything else is left alone, for an operator.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { every, type Clock } from '../../common/clock.js';
import { request } from '../../bus/rpc.js';
import { PodMotionError } from '../../bus/errors.js';
import { Subjects } from '../../bus/subjects.js';
import type { MigrationStatus } from '../../machines/index.js';
import type { InventoryReply, WhereReply } from '../../bus/node-migration.js';
import { migCodecs as c } from './codecs.js';

export const JANITOR_INTERVAL_MS = 30_000;
const JANITOR_REQUEST_TIMEOUT_MS = 15_000;
/** A restore (CRIU's own bound on one is 120 s). */
const JANITOR_RESTORE_TIMEOUT_MS = 120_000;

/** A Failed rollback the janitor may finish: nothing says where the pod serves yet. */
export function finishable(s: MigrationStatus): boolean {
  return s.phase === 'Failed' && s.error?.phase === 'RollingBack' && s.error.servedFrom === undefined;
}

/** What finishing a failed rollback takes, given what each node holds; undefined when nobody can tell. */
export interface FinishPlan {
  servedFrom: string;
  /** The source copy is frozen and must resume (no restore began). */
  resumeSource: boolean;
  /** The copy that goes. */
  clean: 'source' | 'destination';
}

export function finishPlan(s: MigrationStatus, source: WhereReply, destination: WhereReply): FinishPlan | undefined {
  const id = s.spec.id;
  const restoreBegan = s.conditions.some((x) => x.type === 'Restore');
  // No restore began: no copy can have served on the destination; the source copy is the pod.
  if (!restoreBegan) return { servedFrom: s.spec.sourceNode, resumeSource: true, clean: 'destination' };
  const back = source.present && source.running && source.reclaimedBy === id;
  const stayed = destination.present && destination.running && destination.incoming === undefined;
  // The move back finished (the source runs the copy it brought back) and nothing serves on the destination.
  if (back && !destination.running) return { servedFrom: s.spec.sourceNode, resumeSource: false, clean: 'destination' };
  // The move back was abandoned and the destination copy resumed as the pod; the source copy is stale.
  if (stayed && !source.running) return { servedFrom: s.spec.destinationNode, resumeSource: false, clean: 'source' };
  return undefined;
}

/**
 * The move back stopped half way: the destination copy was checkpointed (it is stopped, still incoming) and
 * the source copy was not replaced (frozen, not brought back). No copy runs; the destination's holds the
 * pod's newest state and its images may be on the source already.
 */
export function halfWay(s: MigrationStatus, source: WhereReply, destination: WhereReply): boolean {
  return s.conditions.some((x) => x.type === 'Restore') &&
    source.present && !source.running && source.reclaimedBy !== s.spec.id &&
    destination.present && !destination.running && destination.incoming === s.spec.id;
}

export class RollbackJanitor {
  private cancel: (() => void) | undefined;

  constructor(private readonly deps: {
    nc: NatsConnection;
    clock: Clock;
    statuses(): Iterable<MigrationStatus>;
    /** Records the updated status (where the pod serves now). */
    save(status: MigrationStatus): Promise<void>;
    /** Every node is to route this pod IP anew (the route reconciler follows `error.servedFrom`). */
    rerouted?(podIp: string): void;
    onDone?(status: MigrationStatus): void;
  }) {}

  start(intervalMs = JANITOR_INTERVAL_MS): void {
    this.cancel = every(this.deps.clock, intervalMs, () => this.tick());
  }

  stop(): void {
    this.cancel?.();
    this.cancel = undefined;
  }

  async tick(): Promise<void> {
    for (const s of [...this.deps.statuses()].filter(finishable)) {
      const step = { id: s.spec.id, pod: s.spec.pod };
      const opts = { timeoutMs: JANITOR_REQUEST_TIMEOUT_MS };
      const ask = (node: string, role: 'source' | 'destination', verb: 'mig.rollback' | 'mig.cutover') =>
        request(this.deps.nc, Subjects.node(node, verb), c.role, c.done, { ...step, role }, opts);
      let plan;
      try {
        const restoreBegan = s.conditions.some((x) => x.type === 'Restore');
        const [src, dst] = restoreBegan
          ? await Promise.all([s.spec.sourceNode, s.spec.destinationNode].map((n) => request(this.deps.nc, Subjects.node(n, 'mig.where'), c.step, c.where, step, opts)))
          : [{ present: true, running: false }, { present: false, running: false }];
        plan = finishPlan(s, src!, dst!);
        if (!plan && halfWay(s, src!, dst!)) plan = await this.finishMoveBack(s);
        if (!plan) continue; // both or neither copy claims the pod: left for an operator, the status says why
        if (plan.clean === 'destination') {
          // The source first: the pod serves again even if the destination still does not answer.
          if (plan.resumeSource) await ask(s.spec.sourceNode, 'source', 'mig.rollback');
          await ask(s.spec.destinationNode, 'destination', 'mig.rollback');
        } else {
          // The destination copy is the pod: the source copy goes, as at a cutover.
          await ask(s.spec.sourceNode, 'source', 'mig.cutover');
        }
      } catch {
        continue; // the next round asks again
      }
      const done: MigrationStatus = {
        ...s, updatedAtMs: this.deps.clock.nowMs(),
        error: { ...s.error!, servedFrom: plan.servedFrom, message: `${s.error!.message}; later found serving on ${plan.servedFrom} and the other copy removed` },
      };
      await this.deps.save(done);
      // The rollback may have stopped before or after handing routes back: every node gets them again.
      const ip = (s.results['SocketInventory'] as InventoryReply | undefined)?.ip;
      if (ip) this.deps.rerouted?.(ip);
      this.deps.onDone?.(done);
    }
  }

  /**
   * Finishes a move back that stopped half way, as the rollback would have: the source restores the images
   * the destination sent, then the destination copy goes. If the source says for certain it cannot (its agent
   * restarted and lost them), the destination copy resumes where it is and the stale source copy goes.
   * Anything less certain (no answer, a transient failure) throws: the next round asks again.
   */
  private async finishMoveBack(s: MigrationStatus): Promise<FinishPlan> {
    const step = { id: s.spec.id, pod: s.spec.pod };
    const opts = { timeoutMs: JANITOR_REQUEST_TIMEOUT_MS };
    try {
      await request(this.deps.nc, Subjects.node(s.spec.sourceNode, 'mig.reclaim.restore'), c.reclaimRestore, c.restoreReply,
        { ...step, destinationNode: s.spec.destinationNode, networkContinuity: s.spec.networkContinuity }, { timeoutMs: JANITOR_RESTORE_TIMEOUT_MS });
    } catch (e) {
      if (!(e instanceof PodMotionError) || e.retryable || e.code === 'TIMEOUT') throw e;
      await request(this.deps.nc, Subjects.node(s.spec.destinationNode, 'mig.reclaim.abort'), c.step, c.done, step, opts);
      return { servedFrom: s.spec.destinationNode, resumeSource: false, clean: 'source' };
    }
    return { servedFrom: s.spec.sourceNode, resumeSource: false, clean: 'destination' };
  }
}
