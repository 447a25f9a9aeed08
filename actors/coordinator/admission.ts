/**
 * Admission: how many migrations run at once. A node takes part (as source or destination) in at most
 * `perNode` migrations and the cluster runs at most `perCluster`; the others wait in Pending and are admitted
 * in the order they were submitted. A waiting migration keeps later ones off its nodes, so none waits behind
 * one submitted after it (no starvation), and one busy node does not hold up migrations between other nodes.
 * Dry runs only validate: they are admitted at once and take no slot.
 */
import type { MigrationSpec } from '../../machines/index.js';

export interface AdmissionLimits {
  perNode: number;
  perCluster: number;
}

/** KubeVirt's defaults: parallelOutboundMigrationsPerNode 2, parallelMigrationsPerCluster 5. */
export const DEFAULT_ADMISSION_LIMITS: AdmissionLimits = { perNode: 2, perCluster: 5 };

interface Waiting {
  spec: MigrationSpec;
  admit: () => void;
}

export class Admission {
  private readonly running = new Map<string, MigrationSpec>();
  private readonly load = new Map<string, number>();
  private waiting: Waiting[] = [];

  constructor(readonly limits: AdmissionLimits = DEFAULT_ADMISSION_LIMITS) {
    if (!(limits.perNode >= 1 && limits.perCluster >= 1)) throw new RangeError('admission limits must be at least 1');
  }

  /** A migration that runs already (resumed after a restart): it counts, whatever the limits. */
  occupy(spec: MigrationSpec): void {
    if (spec.dryRun || this.running.has(spec.id)) return;
    this.running.set(spec.id, spec);
    for (const n of nodesOf(spec)) this.load.set(n, (this.load.get(n) ?? 0) + 1);
  }

  /**
   * Queues a migration; `admit` runs when it gets its slots — within this call if they are free. Returns why it
   * waits, or undefined when it was admitted at once.
   */
  submit(spec: MigrationSpec, admit: () => void): string | undefined {
    if (spec.dryRun) {
      admit();
      return undefined;
    }
    const reason = this.blockedBy(spec, new Set(this.waiting.flatMap((w) => nodesOf(w.spec))));
    this.waiting.push({ spec, admit });
    this.pump();
    return this.waiting.some((w) => w.spec.id === spec.id) ? reason : undefined;
  }

  /** The migration ended (or its machine stopped): its slots go to whoever waits. */
  release(id: string): void {
    const spec = this.running.get(id);
    if (!spec) return;
    this.running.delete(id);
    for (const n of nodesOf(spec)) {
      const left = (this.load.get(n) ?? 1) - 1;
      if (left > 0) this.load.set(n, left);
      else this.load.delete(n);
    }
    this.pump();
  }

  /**
   * Takes a waiting migration out of the queue (cancelled); false if it is not waiting. Those it kept off its
   * nodes are admitted only by `admitWaiting()`, once the host has recorded the cancel.
   */
  withdraw(id: string): boolean {
    const before = this.waiting.length;
    this.waiting = this.waiting.filter((w) => w.spec.id !== id);
    return this.waiting.length !== before;
  }

  /** Admits whatever waits and now fits. */
  admitWaiting(): void {
    this.pump();
  }

  isWaiting(id: string): boolean {
    return this.waiting.some((w) => w.spec.id === id);
  }

  /** Migrations holding slots, and how many take part on each node. */
  usage(): { running: number; waiting: number; perNode: ReadonlyMap<string, number> } {
    return { running: this.running.size, waiting: this.waiting.length, perNode: this.load };
  }

  /** Forgets everything (the host stopped). */
  clear(): void {
    this.running.clear();
    this.load.clear();
    this.waiting = [];
  }

  private blockedBy(spec: MigrationSpec, reserved: ReadonlySet<string>): string | undefined {
    if (this.running.size >= this.limits.perCluster) {
      return `waiting for a slot: ${this.running.size} migrations run in the cluster (limit ${this.limits.perCluster})`;
    }
    for (const n of nodesOf(spec)) {
      const load = this.load.get(n) ?? 0;
      if (load >= this.limits.perNode) return `waiting for a slot: node ${n} takes part in ${load} migrations (limit ${this.limits.perNode} per node)`;
      if (reserved.has(n)) return `waiting for a slot: an earlier migration waits for node ${n}`;
    }
    return undefined;
  }

  private pump(): void {
    const reserved = new Set<string>();
    const admitted: Waiting[] = [];
    for (const w of this.waiting) {
      if (this.running.size >= this.limits.perCluster) break;
      if (this.blockedBy(w.spec, reserved) !== undefined) {
        for (const n of nodesOf(w.spec)) reserved.add(n);
        continue;
      }
      this.occupy(w.spec);
      admitted.push(w);
    }
    if (admitted.length === 0) return;
    this.waiting = this.waiting.filter((w) => !admitted.includes(w));
    for (const w of admitted) w.admit();
  }
}

function nodesOf(spec: MigrationSpec): string[] {
  return spec.sourceNode === spec.destinationNode ? [spec.sourceNode] : [spec.sourceNode, spec.destinationNode];
}
