/**
 * Finishes rollbacks that ran out of time. A rollback that outlasts its phase (nodes down or cut off for
 * minutes) ends Failed; if no restore ever began on the destination, no copy can have served there, so the
 * source can still be resumed and the destination cleaned up safely — later, once both answer. The janitor
 * does exactly that for such migrations, then records in the status that the pod serves from the source
 * (`error.servedFrom`), which the route reconciler follows. A rollback that failed after a restore began is
 * left alone: nobody can say which copy is the pod's state.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { every, type Clock } from '../../common/clock.js';
import { request } from '../../bus/rpc.js';
import { Subjects } from '../../bus/subjects.js';
import type { MigrationStatus } from '../../machines/index.js';
import { migCodecs as c } from './codecs.js';

export const JANITOR_INTERVAL_MS = 30_000;
const JANITOR_REQUEST_TIMEOUT_MS = 15_000;

/** A Failed rollback the janitor may finish: no restore began, and nothing says where the pod serves. */
export function finishable(s: MigrationStatus): boolean {
  return s.phase === 'Failed' && s.error?.phase === 'RollingBack' && s.error.servedFrom === undefined &&
    !s.conditions.some((x) => x.type === 'Restore');
}

export class RollbackJanitor {
  private cancel: (() => void) | undefined;

  constructor(private readonly deps: {
    nc: NatsConnection;
    clock: Clock;
    statuses(): Iterable<MigrationStatus>;
    /** Records the updated status (the pod serves from the source again). */
    save(status: MigrationStatus): Promise<void>;
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
      try {
        // The source first: the pod serves again even if the destination still does not answer.
        await request(this.deps.nc, Subjects.node(s.spec.sourceNode, 'mig.rollback'), c.role, c.done, { ...step, role: 'source' }, opts);
        await request(this.deps.nc, Subjects.node(s.spec.destinationNode, 'mig.rollback'), c.role, c.done, { ...step, role: 'destination' }, opts);
      } catch {
        continue; // the next round asks again
      }
      const done: MigrationStatus = {
        ...s, updatedAtMs: this.deps.clock.nowMs(),
        error: { ...s.error!, servedFrom: s.spec.sourceNode, message: `${s.error!.message}; later resumed on ${s.spec.sourceNode} once it answered` },
      };
      await this.deps.save(done);
      this.deps.onDone?.(done);
    }
  }
}
