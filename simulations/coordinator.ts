/**
 * The coordinator as the simulation runs it: the real migration machine with the real effects
 * (actors/coordinator/machine.ts, effects.ts), hosted the way actors/coordinator/index.ts hosts them, with
 * the KV bucket replaced by a map that survives crashes. A crash stops every machine and forgets all in
 * memory (the image stream keys and sequence state included); a restart resumes from what was persisted.
 */
import { createActor, type AnyActorLogic, type Actor } from 'xstate';
import type { NodeRegistration } from '../bus/messages.js';
import { createEffects } from '../actors/coordinator/effects.js';
import { provideEffects } from '../actors/coordinator/machine.js';
import { RouteReconciler } from '../actors/coordinator/routes.js';
import { RollbackJanitor } from '../actors/coordinator/janitor.js';
import { Admission, type AdmissionLimits } from '../actors/coordinator/admission.js';
import {
  admittedStatus, cancelledWhilePending, initialStatus, isBeforeCutover, isTerminal, migrationClock, queuedStatus, snapshotForRestart, statusChanged,
  type MigrationSpec, type MigrationStatus, type Phase,
} from '../machines/index.js';
import type { SimBus } from './bus.js';
import type { Scheduler } from './scheduler.js';

export interface Persisted {
  status: MigrationStatus;
  snapshot: unknown;
}

export class SimCoordinator {
  /** The KV bucket: survives crashes. Stored as JSON, as the real store stores it. */
  readonly kv = new Map<string, string>();
  private actors = new Map<string, Actor<AnyActorLogic>>();
  /** Latest status per migration, as this incarnation knows it. */
  readonly latest = new Map<string, MigrationStatus>();
  /** Phase of each record in the KV bucket (kept beside it: reading it back parses JSON). */
  private phases = new Map<string, Phase>();
  up = false;
  restarts = 0;
  private machine: ReturnType<typeof provideEffects> | undefined;
  private routes: RouteReconciler | undefined;
  private janitor: RollbackJanitor | undefined;
  private admission: Admission;

  constructor(
    private readonly bus: SimBus,
    private readonly clock: Scheduler,
    private readonly registrations: () => Map<string, NodeRegistration>,
    private readonly onPhase: (s: MigrationStatus) => void,
    private readonly limits: AdmissionLimits,
  ) {
    this.admission = new Admission(limits);
  }

  record(id: string): Persisted | undefined {
    const raw = this.kv.get(id);
    return raw === undefined ? undefined : (JSON.parse(raw) as Persisted);
  }

  start(): void {
    this.up = true;
    const incarnation = this.restarts;
    const nc = this.bus.connection(() => this.up && this.restarts === incarnation);
    const routes = new RouteReconciler({ nc, clock: this.clock, registrations: async () => this.registrations(), statuses: () => this.latest.values() });
    this.routes = routes;
    const effects = createEffects({
      nc, clock: this.clock, progress: async () => {}, secrets: new Map(), sockets: new Map(),
      routeExtraMembers: async () => {}, registrations: async () => this.registrations(), routesOwed: (n, ip) => routes.owe(n, ip),
    });
    this.machine = provideEffects(effects, async (status) => {
      // A stopped incarnation's effects may still finish; what they persist must not count.
      if (!this.up || this.restarts !== incarnation) throw new Error('coordinator is down');
      const prev = this.latest.get(status.spec.id);
      if (prev && !statusChanged(prev, status)) return;
      const actor = this.actors.get(status.spec.id);
      this.kv.set(status.spec.id, JSON.stringify({ status, snapshot: actor ? actor.getPersistedSnapshot() : {} }));
      this.phases.set(status.spec.id, status.phase);
      this.latest.set(status.spec.id, status);
      if (!prev || prev.phase !== status.phase) this.onPhase(status);
    });
    routes.start();
    const janitor = new RollbackJanitor({
      nc, clock: this.clock, statuses: () => this.latest.values(),
      save: async (status) => {
        const prev = this.record(status.spec.id);
        this.kv.set(status.spec.id, JSON.stringify({ status, snapshot: prev?.snapshot ?? {} }));
        this.latest.set(status.spec.id, status);
      },
      rerouted: (ip) => routes.oweEverywhere(ip),
      onDone: (status) => this.onPhase(status),
    });
    this.janitor = janitor;
    janitor.start();
    this.admission = new Admission(this.limits);
    const stillPending: MigrationStatus[] = [];
    for (const [id] of this.kv) {
      const rec = this.record(id)!;
      this.latest.set(id, rec.status);
      if (isTerminal(rec.status.phase)) continue;
      if (rec.status.phase === 'Pending') {
        stillPending.push(rec.status);
        continue;
      }
      this.admission.occupy(rec.status.spec);
      const actor = createActor(this.machine, {
        snapshot: snapshotForRestart(rec.snapshot as never), input: { spec: rec.status.spec, nowMs: this.clock.nowMs() },
        clock: migrationClock(this.clock),
      });
      this.host(actor as unknown as Actor<AnyActorLogic>, id);
      actor.send({ type: 'RESUME_AFTER_RESTART' });
    }
    for (const st of stillPending.sort((a, b) => a.startedAtMs - b.startedAtMs)) this.admission.submit(st.spec, () => this.admit(st.spec.id, incarnation));
  }

  crash(): void {
    this.up = false;
    this.routes?.stop();
    this.janitor?.stop();
    this.restarts++;
    for (const a of this.actors.values()) a.stop();
    this.actors.clear();
    this.latest.clear();
    this.admission.clear();
  }

  /** As the real coordinator's `migrate` endpoint: stored as Pending (saying why it waits, if it does) before it starts. */
  migrate(spec: MigrationSpec): void {
    if (!this.up || !this.machine) throw new Error('coordinator is down');
    const status = initialStatus(spec, this.clock.nowMs());
    this.latest.set(spec.id, status);
    const incarnation = this.restarts;
    const reason = this.admission.submit(spec, () => this.clock.setTimer(() => this.admit(spec.id, incarnation), 0));
    this.store(reason === undefined ? status : queuedStatus(status, reason, this.clock.nowMs()));
  }

  /** As the real `cancel` endpoint: a waiting migration ends Cancelled at once, a running one rolls back. */
  cancel(id: string): boolean {
    const st = this.latest.get(id);
    if (!this.up || !st || isTerminal(st.phase)) return false;
    if (this.admission.withdraw(id)) {
      this.store(cancelledWhilePending(st, this.clock.nowMs()));
      this.admission.admitWaiting();
      return true;
    }
    const actor = this.actors.get(id);
    if (!actor || !isBeforeCutover(st.phase)) return false;
    actor.send({ type: 'CANCEL' });
    return true;
  }

  /** What the admission holds now (for the limit checker). */
  usage(): ReturnType<Admission['usage']> {
    return this.admission.usage();
  }

  private store(status: MigrationStatus): void {
    this.kv.set(status.spec.id, JSON.stringify({ status, snapshot: {} }));
    this.phases.set(status.spec.id, status.phase);
    this.latest.set(status.spec.id, status);
    this.onPhase(status);
  }

  private admit(id: string, incarnation: number): void {
    const waited = this.latest.get(id);
    if (!waited || !this.machine || !this.up || this.restarts !== incarnation) return;
    const pending = admittedStatus(waited, this.clock.nowMs());
    this.latest.set(id, pending);
    const actor = createActor(this.machine, { input: { spec: waited.spec, nowMs: this.clock.nowMs(), pending }, clock: migrationClock(this.clock) });
    this.host(actor as unknown as Actor<AnyActorLogic>, id);
  }

  private host(actor: Actor<AnyActorLogic>, id: string): void {
    this.actors.set(id, actor);
    actor.subscribe({
      next: (snap) => this.latest.set(id, (snap as { context: MigrationStatus }).context),
      error: () => {},
      complete: () => {
        this.actors.delete(id);
        this.admission.release(id);
      },
    });
    actor.start();
  }

  /** Migrations not yet ended, per the KV bucket. */
  unfinished(): string[] {
    return [...this.phases].filter(([, phase]) => !isTerminal(phase)).map(([id]) => id);
  }
}
