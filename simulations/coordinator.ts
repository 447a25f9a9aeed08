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
import { isTerminal, migrationClock, snapshotForRestart, statusChanged, type MigrationSpec, type MigrationStatus, type Phase } from '../machines/index.js';
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

  constructor(
    private readonly bus: SimBus,
    private readonly clock: Scheduler,
    private readonly registrations: () => Map<string, NodeRegistration>,
    private readonly onPhase: (s: MigrationStatus) => void,
  ) {}

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
      onDone: (status) => this.onPhase(status),
    });
    this.janitor = janitor;
    janitor.start();
    for (const [id] of this.kv) {
      const rec = this.record(id)!;
      this.latest.set(id, rec.status);
      if (isTerminal(rec.status.phase)) continue;
      const actor = createActor(this.machine, {
        snapshot: snapshotForRestart(rec.snapshot as never), input: { spec: rec.status.spec, nowMs: this.clock.nowMs() },
        clock: migrationClock(this.clock),
      });
      this.host(actor as unknown as Actor<AnyActorLogic>, id);
      actor.send({ type: 'RESUME_AFTER_RESTART' });
    }
  }

  crash(): void {
    this.up = false;
    this.routes?.stop();
    this.janitor?.stop();
    this.restarts++;
    for (const a of this.actors.values()) a.stop();
    this.actors.clear();
    this.latest.clear();
  }

  migrate(spec: MigrationSpec): void {
    if (!this.up || !this.machine) throw new Error('coordinator is down');
    const actor = createActor(this.machine, { input: { spec, nowMs: this.clock.nowMs() }, clock: migrationClock(this.clock) });
    this.host(actor as unknown as Actor<AnyActorLogic>, spec.id);
  }

  private host(actor: Actor<AnyActorLogic>, id: string): void {
    this.actors.set(id, actor);
    actor.subscribe({
      next: (snap) => this.latest.set(id, (snap as { context: MigrationStatus }).context),
      error: () => {},
      complete: () => this.actors.delete(id),
    });
    actor.start();
  }

  /** Migrations not yet ended, per the KV bucket. */
  unfinished(): string[] {
    return [...this.phases].filter(([, phase]) => !isTerminal(phase)).map(([id]) => id);
  }
}
