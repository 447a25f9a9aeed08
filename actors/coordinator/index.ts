/**
 * The coordinator: hosts one migration machine per migration, persists every status to the KV bucket,
 * publishes phase events, and serves the `podmotion.v1` API (migrate, status, watch, list, cancel) as a
 * NATS micro service. A restarted coordinator resumes or rolls back every migration it finds unfinished.
 */
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstream } from '@nats-io/jetstream';
import { createActor, type AnyActorLogic, type Actor } from 'xstate';
import type { Logger } from 'pino';
import { sleep, type Clock } from '../../common/clock.js';
import { ConflictError, InvalidRequestError, NotFoundError, PreconditionError } from '../../bus/errors.js';
import { request } from '../../bus/rpc.js';
import { createService, type Service } from '../../bus/service.js';
import { Subjects } from '../../bus/subjects.js';
import { RegistrationWatch } from '../../bus/registry.js';
import { planVolumes } from '../storage/index.js';
import type { CheckReply, CheckRequest, EstimateApiReply, EstimateApiRequest, MigrateRequest, MigrationSummary } from '../../bus/api.js';
import type { PodInfo } from '../../bus/messages.js';
import { codecs as agentCodecs } from '../../node-runtime/agent.js';
import {
  DEFAULT_TIMEOUTS_MS, admittedStatus, outcomeOf, cancelledWhilePending, initialStatus, isBeforeCutover, queuedStatus, isTerminal, migrationClock, snapshotForRestart, statusChanged,
  type MigrationSpec, type MigrationStatus, type Phase,
} from '../../machines/index.js';
import { apiCodecs as c, migCodecs as migC } from './codecs.js';
import { predictFreeze } from './predict.js';
import { createEffects, type EffectDeps } from './effects.js';
import { provideEffects } from './machine.js';
import { RouteReconciler } from './routes.js';
import { RollbackJanitor } from './janitor.js';
import { MigrationStore } from './store.js';
import { Admission, DEFAULT_ADMISSION_LIMITS, type AdmissionLimits } from './admission.js';

export const SERVICE_NAME = 'podmotion';
export const SERVICE_VERSION = '0.1.0';
/** Test hook pause: long enough to cancel or kill the coordinator, short of every phase timeout. */
const TEST_PAUSE_MS = Number(process.env['PODMOTION_TEST_PAUSE_MS']) || 5_000;
/** Dirty rate is measured over this interval: long enough to average a writer's bursts. */
const ESTIMATE_SAMPLE_MS = 1_000;
/** `list` returns the newest migrations only: one reply must stay within the message limits. */
const LIST_LIMIT = 1_000;
/** Asking every agent for its pods: a local query on each node, well under a second. */
const POD_LOOKUP_TIMEOUT_MS = 5_000;

export interface CoordinatorConfig {
  nc: NatsConnection;
  clock: Clock;
  log: Logger;
  /** Accept `failAt` in migrate requests (tests only). */
  testHooks: boolean;
  routeExtraMembers: EffectDeps['routeExtraMembers'];
  newId?: (pod: string) => string;
  /** How many migrations run at once, per node and in the cluster (default DEFAULT_ADMISSION_LIMITS). */
  limits?: AdmissionLimits;
}

export interface Coordinator {
  stop(): Promise<void>;
}

type MigrationActor = Actor<AnyActorLogic>;

function summary(s: MigrationStatus): MigrationSummary {
  const { freezeMs } = outcomeOf(s);
  return {
    id: s.spec.id, pod: s.spec.pod, sourceNode: s.spec.sourceNode, destinationNode: s.spec.destinationNode,
    strategy: s.spec.strategy, phase: s.phase, startedAtMs: s.startedAtMs,
    ...(s.endedAtMs !== undefined ? { endedAtMs: s.endedAtMs } : {}), ...(freezeMs !== undefined ? { freezeMs } : {}),
  };
}

export async function startCoordinator(cfg: CoordinatorConfig): Promise<Coordinator> {
  const { nc, log } = cfg;
  const store = await MigrationStore.open(nc);
  const js = jetstream(nc);
  const nodes = await RegistrationWatch.start(nc);
  const readRegistrations = () => nodes.current();
  const actors = new Map<string, MigrationActor>();
  const latest = new Map<string, MigrationStatus>();
  const failAt = new Map<string, Phase>();
  const pauseAt = new Map<string, Phase>();
  /** Pods with a migration being planned: reserved before the first await, so two requests cannot both pass. */
  const planning = new Set<string>();
  const admission = new Admission(cfg.limits ?? DEFAULT_ADMISSION_LIMITS);
  const newId = cfg.newId ?? ((pod: string) => `${pod}-${randomBytes(4).toString('hex')}`.slice(0, 63));
  const effects = createEffects({
    nc, clock: cfg.clock,
    progress: async (ev) => {
      await js.publish(Subjects.migrationProgress(ev.id), c.progress.encode(ev)).catch((e: Error) => log.warn({ err: e.message }, 'progress event not published'));
    },
    secrets: new Map(), sockets: new Map(), volumeSyncs: new Map(), routeExtraMembers: cfg.routeExtraMembers, registrations: readRegistrations,
    routesOwed: (node, podIp) => routes.owe(node, podIp),
  });
  const routes = new RouteReconciler({
    nc, clock: cfg.clock, registrations: readRegistrations, statuses: () => latest.values(),
    onError: (node, err) => log.warn({ node, err: err.message }, 'route not brought up to date; will retry'),
  });

  async function persist(status: MigrationStatus): Promise<void> {
    const prev = latest.get(status.spec.id);
    if (prev && !statusChanged(prev, status)) return;
    const actor = actors.get(status.spec.id);
    await store.put(status, actor ? actor.getPersistedSnapshot() : {});
    latest.set(status.spec.id, status);
    if (!prev || prev.phase !== status.phase) {
      log.info({ migration: status.spec.id, pod: status.spec.pod, phase: status.phase }, 'phase');
      await js.publish(Subjects.migrationEvents(status.spec.id), c.event.encode({
        type: 'phase', id: status.spec.id, phase: status.phase, atMs: cfg.clock.nowMs(), status: status as never,
      }));
    }
  }

  const machine = provideEffects(effects, persist, async (phase, status, signal) => {
    const id = status.spec.id;
    if (failAt.get(id) === phase) throw new PreconditionError(`injected failure after ${phase} (test hook)`);
    if (pauseAt.get(id) === phase) await sleep(cfg.clock, TEST_PAUSE_MS, signal).catch(() => {});
  });

  function host(actor: MigrationActor, id: string): void {
    actors.set(id, actor);
    actor.subscribe({
      next: (snap) => latest.set(id, (snap as { context: MigrationStatus }).context),
      error: (err) => log.error({ migration: id, err: (err as Error).message }, 'migration actor failed'),
      complete: () => {
        actors.delete(id);
        admission.release(id);
        failAt.delete(id);
        pauseAt.delete(id);
      },
    });
    actor.start();
  }

  async function findPod(pod: string): Promise<PodInfo> {
    const regs = await readRegistrations();
    const answers = await Promise.allSettled([...regs.keys()].map((n) =>
      request(nc, Subjects.node(n, 'pod.list'), agentCodecs.empty, agentCodecs.podList, {}, { timeoutMs: POD_LOOKUP_TIMEOUT_MS })));
    for (const a of answers) {
      const found = a.status === 'fulfilled' ? a.value.pods.find((p) => p.name === pod) : undefined;
      if (found) return found;
    }
    throw new NotFoundError(`pod ${pod} not found (see: podmotion pod list)`);
  }

  /** `found`: the pod, when the caller has already looked it up. */
  async function planSpec(req: MigrateRequest, found?: PodInfo): Promise<MigrationSpec> {
    if ((req.failAt || req.pauseAt) && !cfg.testHooks) throw new InvalidRequestError('failAt and pauseAt are test hooks; this coordinator runs without test hooks');
    for (const st of latest.values()) {
      if (st.spec.pod === req.pod && !isTerminal(st.phase) && !st.spec.dryRun) {
        throw new ConflictError(`pod ${req.pod} is already migrating (migration ${st.spec.id}, phase ${st.phase})`);
      }
    }
    const pod = found ?? await findPod(req.pod);
    if (!pod.running) throw new PreconditionError(`pod ${req.pod} is not running on ${pod.node}`);
    const regs = await readRegistrations();
    let dest = req.toNode;
    if (dest !== undefined) {
      const reg = regs.get(dest);
      if (!reg) throw new NotFoundError(`node ${dest} not found (nodes: ${[...regs.keys()].sort().join(', ')})`);
      if (!reg.capabilities.criuOk) throw new PreconditionError(`node ${dest} has no working CRIU: ${reg.capabilities.criuProblem ?? 'criu check failed'}`);
      if (dest === pod.node) throw new InvalidRequestError(`pod ${req.pod} already runs on ${dest}`);
    } else {
      const candidates = [...regs.values()].filter((r) => r.node !== pod.node && r.capabilities.criuOk).map((r) => r.node).sort();
      dest = candidates[0];
      if (!dest) throw new PreconditionError(`no other node with a working CRIU to move pod ${req.pod} to`);
    }
    const src = regs.get(pod.node);
    if (src && !src.capabilities.criuOk) throw new PreconditionError(`node ${pod.node} has no working CRIU: ${src.capabilities.criuProblem ?? 'criu check failed'}`);
    const strategy = req.strategy ?? 'PreCopy';
    const unknownPhase = Object.keys(req.timeouts ?? {}).find((k) => !(k in DEFAULT_TIMEOUTS_MS));
    if (unknownPhase !== undefined) throw new InvalidRequestError(`timeouts: "${unknownPhase}" is not a phase with a time limit (${Object.keys(DEFAULT_TIMEOUTS_MS).join(', ')})`);
    if (req.allowPostCopy && strategy !== 'PreCopy') throw new InvalidRequestError(`--allow-post-copy applies to the PreCopy strategy only (got ${strategy})`);
    if ((strategy === 'PostCopy' || req.allowPostCopy) && !regs.get(dest)?.capabilities.features['uffd-noncoop']) {
      throw new PreconditionError(`node ${dest} cannot take a PostCopy migration: its kernel lacks non-cooperative userfaultfd (criu check --feature uffd-noncoop)`);
    }
    return {
      id: newId(req.pod), pod: req.pod, sourceNode: pod.node, destinationNode: dest, strategy,
      networkContinuity: req.networkContinuity ?? true, dryRun: req.dryRun ?? false,
      ...(req.bandwidthMbps !== undefined ? { bandwidthMbps: req.bandwidthMbps } : {}),
      ...(req.allowPostCopy ? { allowPostCopy: true } : {}),
      ...(req.timeouts && Object.keys(req.timeouts).length ? { timeouts: req.timeouts } : {}),
    };
  }

  /** Read-only: would this pod move, what would it carry, and how long would it freeze? */
  async function estimate(req: EstimateApiRequest): Promise<EstimateApiReply> {
    const strategy = req.strategy ?? 'PreCopy';
    const reply: EstimateApiReply = { pod: req.pod, strategy, migratable: false, reasons: [], storageTier: 'none (the pod has no volumes)', predictionBasis: '' };
    let spec: MigrationSpec | undefined;
    try {
      spec = await planSpec({ pod: req.pod, strategy, dryRun: true, ...(req.toNode ? { toNode: req.toNode } : {}) });
      reply.migratable = true;
    } catch (e) {
      reply.reasons.push((e as Error).message);
    }
    const pod = await findPod(req.pod).catch(() => undefined);
    if (pod?.volumes?.length) {
      try {
        reply.storageTier = planVolumes(req.pod, pod.volumes).map((v) => `${v.tier} (${v.volume})`).join(', ');
      } catch (e) {
        reply.storageTier = 'none';
        reply.migratable = false;
        reply.reasons.push((e as Error).message);
      }
    }
    const source = spec?.sourceNode ?? pod?.node;
    if (source) {
      reply.sourceNode = source;
      const m = await request(nc, Subjects.node(source, 'mig.estimate'), migC.estimate, migC.estimateReply,
        { pod: req.pod, intervalMs: ESTIMATE_SAMPLE_MS }, { timeoutMs: ESTIMATE_SAMPLE_MS + 60_000 });
      Object.assign(reply, { memoryBytes: m.memoryBytes, dirtyBytesPerSec: Math.round(m.dirtyBytesPerSec), connections: m.connections });
      const p = predictFreeze([...latest.values()], m.memoryBytes, strategy);
      reply.predictionBasis = p.basis;
      if (p.freezeMs !== undefined) reply.predictedFreezeMs = p.freezeMs;
    } else {
      reply.predictionBasis = 'no prediction: the pod was not found';
    }
    if (spec) reply.destinationNode = spec.destinationNode;
    return reply;
  }

  /** What `migrate` would say to this request now, without starting anything (admission webhooks ask it). */
  async function check(req: CheckRequest): Promise<CheckReply> {
    const reply: CheckReply = { allowed: false, reasons: [], volumes: [] };
    if (planning.has(req.pod)) reply.reasons.push(`pod ${req.pod} is already migrating (a migration is being planned)`);
    // One lookup of the pod (a pod.list to every node) serves both the plan and its volumes.
    const pod = await findPod(req.pod).catch(() => undefined);
    try {
      const spec = await planSpec({ ...req, dryRun: true }, pod);
      reply.sourceNode = spec.sourceNode;
      reply.destinationNode = spec.destinationNode;
    } catch (e) {
      reply.reasons.push((e as Error).message);
    }
    if (pod?.volumes?.length) {
      try {
        reply.volumes = planVolumes(req.pod, pod.volumes).map((v) => ({ volume: v.volume, tier: v.tier }));
      } catch (e) {
        reply.reasons.push((e as Error).message);
      }
    }
    reply.allowed = reply.reasons.length === 0;
    return reply;
  }

  async function statusOf(id: string): Promise<MigrationStatus> {
    const s = latest.get(id) ?? (await store.get(id))?.status;
    if (!s) throw new NotFoundError(`migration ${id} not found (see: podmotion list)`);
    return s;
  }

  /** Starts the machine of an admitted migration, once its Pending status (if it waited) is stored. */
  function admit(id: string, stored: Promise<unknown>): void {
    void stored.catch(() => {}).then(() => {
      const waited = latest.get(id);
      if (!waited) return;
      const pending = admittedStatus(waited, cfg.clock.nowMs());
      latest.set(id, pending);
      host(createActor(machine, { input: { spec: waited.spec, nowMs: cfg.clock.nowMs(), pending }, clock: migrationClock(cfg.clock) }) as unknown as MigrationActor, id);
    });
  }

  /**
   * Queues a new migration for admission. It is stored as Pending before the reply (a coordinator restart
   * queues it again); one that must wait says why in its Pending condition.
   */
  async function submit(status: MigrationStatus): Promise<MigrationStatus> {
    const id = status.spec.id;
    latest.set(id, status);
    let stored: (v?: unknown) => void = () => {};
    const ready = new Promise((resolve) => { stored = resolve; });
    const reason = admission.submit(status.spec, () => admit(id, ready));
    const queued = reason === undefined ? status : queuedStatus(status, reason, cfg.clock.nowMs());
    if (reason !== undefined) log.info({ migration: id, pod: status.spec.pod, reason }, 'migration queued');
    try {
      await store.put(queued, {});
      if (latest.get(id) === status) latest.set(id, queued);
    } catch (e) {
      // Not stored, so not accepted: nothing may start.
      latest.delete(id);
      if (admission.withdraw(id)) admission.admitWaiting();
      else admission.release(id);
      throw e;
    } finally {
      stored();
    }
    return queued;
  }

  // Resume what a previous coordinator left unfinished: before Cutover that means roll back. Migrations
  // still waiting for admission queue again, in the order they were submitted, after the running ones count.
  const stillPending: MigrationStatus[] = [];
  for (const rec of await store.all((key, err) => log.error({ key, err: (err as Error).message }, 'unreadable migration record skipped'))) {
    latest.set(rec.status.spec.id, rec.status);
    if (isTerminal(rec.status.phase)) continue;
    if (rec.status.phase === 'Pending') {
      stillPending.push(rec.status);
      continue;
    }
    admission.occupy(rec.status.spec);
    log.warn({ migration: rec.status.spec.id, phase: rec.status.phase }, 'resuming after coordinator restart');
    try {
      const actor = createActor(machine, {
        snapshot: snapshotForRestart(rec.snapshot as never), input: { spec: rec.status.spec, nowMs: cfg.clock.nowMs() },
        clock: migrationClock(cfg.clock),
      });
      host(actor as unknown as MigrationActor, rec.status.spec.id);
      actor.send({ type: 'RESUME_AFTER_RESTART' });
    } catch (e) {
      log.error({ migration: rec.status.spec.id, err: (e as Error).message }, 'could not resume migration');
      admission.release(rec.status.spec.id);
    }
  }
  for (const st of stillPending.sort((a, b) => a.startedAtMs - b.startedAtMs)) {
    const reason = admission.submit(st.spec, () => admit(st.spec.id, Promise.resolve()));
    log.warn({ migration: st.spec.id, reason: reason ?? 'admitted' }, 'pending migration queued again after coordinator restart');
  }

  const service: Service = createService(nc, { name: SERVICE_NAME, version: SERVICE_VERSION, description: 'PodMotion live pod migration' },
    (subject, err) => log.warn({ subject, err: (err as Error).message }, 'request failed'))
    .endpoint('migrate', Subjects.api('migrate'), c.migrate, c.statusReply, async (req) => {
      if (planning.has(req.pod)) throw new ConflictError(`pod ${req.pod} is already migrating (a migration is being planned)`);
      planning.add(req.pod);
      let spec: MigrationSpec;
      try {
        spec = await planSpec(req);
      } finally {
        planning.delete(req.pod);
      }
      if (req.failAt) failAt.set(spec.id, req.failAt);
      if (req.pauseAt) pauseAt.set(spec.id, req.pauseAt);
      return { status: (await submit(initialStatus(spec, cfg.clock.nowMs()))) as never };
    })
    .endpoint('status', Subjects.api('status'), c.ref, c.statusReply, async (req) => ({ status: (await statusOf(req.id)) as never }))
    .endpoint('watch', Subjects.api('watch'), c.ref, c.statusReply, async (req) => ({ status: (await statusOf(req.id)) as never }))
    .endpoint('list', Subjects.api('list'), c.listReq, c.listReply, async (req) => {
      const all = new Map<string, MigrationStatus>();
      for (const r of await store.all()) all.set(r.status.spec.id, r.status);
      for (const [id, s] of latest) all.set(id, s);
      const rows = [...all.values()].filter((s) => !req.active || !isTerminal(s.phase)).map(summary);
      return { migrations: rows.sort((a, b) => a.startedAtMs - b.startedAtMs).slice(-LIST_LIMIT) };
    })
    .endpoint('estimate', Subjects.api('estimate'), c.estimateReq, c.estimateReply, (req) => estimate(req))
    .endpoint('check', Subjects.api('check'), c.checkReq, c.checkReply, (req) => check(req))
    .endpoint('nodes', Subjects.api('nodes'), c.empty, c.nodesReply, async () => ({
      nodes: [...(await readRegistrations()).values()].sort((a, b) => a.node.localeCompare(b.node)),
    }))
    .endpoint('cancel', Subjects.api('cancel'), c.ref, c.cancelReply, async (req) => {
      const s = await statusOf(req.id);
      const actor = actors.get(req.id);
      if (isTerminal(s.phase)) return { id: req.id, phase: s.phase, accepted: false, message: `migration ${req.id} already ended: ${s.phase}` };
      if (admission.withdraw(req.id)) {
        try {
          await persist(cancelledWhilePending(s, cfg.clock.nowMs()));
        } finally {
          admission.admitWaiting();
        }
        return { id: req.id, phase: 'Cancelled', accepted: true, message: 'cancelled before it started — nothing to roll back' };
      }
      if (!isBeforeCutover(s.phase) || !actor) {
        return { id: req.id, phase: s.phase, accepted: false, message: `migration ${req.id} is in ${s.phase}: too late to cancel` };
      }
      actor.send({ type: 'CANCEL' });
      return { id: req.id, phase: s.phase, accepted: true, message: 'cancelled — rollback initiated' };
    })
    .start();
  const janitor = new RollbackJanitor({
    nc, clock: cfg.clock, statuses: () => latest.values(),
    save: async (st) => {
      const rec = await store.get(st.spec.id);
      await store.put(st, rec?.snapshot ?? {});
      latest.set(st.spec.id, st);
    },
    rerouted: (ip) => routes.oweEverywhere(ip),
    onDone: (st) => log.warn({ migration: st.spec.id, pod: st.spec.pod, node: st.error?.servedFrom }, 'failed rollback finished: the pod serves from one copy, the other was removed'),
  });
  routes.start();
  janitor.start();
  log.info({ service: SERVICE_NAME, id: service.id }, 'coordinator serving');

  return {
    async stop() {
      routes.stop();
      janitor.stop();
      service.stop();
      for (const a of actors.values()) a.stop();
      admission.clear();
      nodes.stop();
    },
  };
}
