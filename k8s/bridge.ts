/**
 * The CR bridge actor: PodMigration objects in, migrations on the bus out, their progress back into the
 * objects' status. It watches PodMigrations (and the policies and node profiles they depend on), starts
 * each one with the coordinator's `migrate` request, follows the migration's events on the bus and writes
 * one condition per phase, honours cancel (spec.cancel, and deletion through a finalizer), keeps the
 * MigrationCheckpoint and StorageMigration records of each migration, and mirrors the node agents'
 * registrations into NodeMigrationProfiles. It writes only PodMotion's own kinds: never a pod or its
 * owner, so GitOps tools see no drift.
 */
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import { apiCodecs as c } from '../actors/coordinator/codecs.js';
import type { CheckReply, MigrateRequest, MigrationStatusMsg, ProgressEvent } from '../bus/api.js';
import { oneLine, type PodMotionError } from '../bus/errors.js';
import type { NodeRegistration } from '../bus/messages.js';
import { request } from '../bus/rpc.js';
import { Subjects } from '../bus/subjects.js';
import {
  API_VERSION, FINALIZER, choosePolicy, conditionReason, effectiveSpec, isTerminalPhase, podMigrationStatus, selects,
  type Condition, type KubeObject, type MigrationPolicy, type PodMigration, type PodMigrationStatus,
} from './api.js';
import { statusCode, type Kube } from './client.js';
import { Informer } from './informer.js';

/** How often node registrations are mirrored into NodeMigrationProfiles. */
export const PROFILE_SYNC_MS = 10_000;
/** A registration whose heartbeat is older than this makes its profile Ready=False. */
const HEARTBEAT_STALE_MS = 30_000;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;

export type NodeProfile = KubeObject<{ cluster?: string }, {
  kernel?: string; criuVersion?: string; criuOk?: boolean; criuProblem?: string; podCidr?: string;
  features?: Record<string, boolean>; agentStartTime?: string; lastHeartbeatTime?: string; conditions?: Condition[];
}>;

export interface BridgeConfig {
  kube: Kube;
  nc: NatsConnection;
  log: Logger;
  /** The PodMotion cluster's name (written into each NodeMigrationProfile). */
  cluster: string;
  /** The Kubernetes namespace the cluster's pods live in: PodMigrations elsewhere name no pod of it. */
  podNamespace: string;
  /** Honour the `podmotion.io/test-pause-at` annotation (the coordinator must run with test hooks too). */
  testHooks?: boolean;
}

/** Test hook: the phase after whose work the migration waits (a window for cancel). */
export const PAUSE_AT_ANNOTATION = 'podmotion.io/test-pause-at';

const key = (ns: string | undefined, name: string | undefined) => `${ns ?? ''}/${name ?? ''}`;
const iso = (ms: number) => new Date(ms).toISOString();

function condition(type: string, status: Condition['status'], reason: string, message: string, generation: number, prev?: Condition[]): Condition {
  const old = prev?.find((x) => x.type === type);
  const lastTransitionTime = old && old.status === status ? old.lastTransitionTime : new Date().toISOString();
  return { type, status, reason: conditionReason(reason), message: message.slice(0, 32_768), observedGeneration: generation, lastTransitionTime };
}

export class CrBridge {
  readonly migrations: Informer<PodMigration>;
  readonly policies: Informer<MigrationPolicy>;
  readonly profiles: Informer<NodeProfile>;
  /** Latest status from the bus, by migration id. */
  private readonly busStatus = new Map<string, MigrationStatusMsg>();
  private readonly progress = new Map<string, ProgressEvent>();
  private readonly follows = new Map<string, Subscription>();
  private readonly cancelSent = new Set<string>();
  /** Per object: the work running now, and whether another pass is owed after it. */
  private readonly running = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private readonly retries = new Map<string, number>();
  /** Record phase last written, by record key: a write happens only on a change. */
  private readonly recorded = new Map<string, string>();
  private profileTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly cfg: BridgeConfig) {
    const log = cfg.log;
    this.migrations = new Informer<PodMigration>(cfg.kube, 'PodMigration', (_t, o) => this.enqueue(key(o.metadata.namespace, o.metadata.name)), log);
    this.policies = new Informer<MigrationPolicy>(cfg.kube, 'MigrationPolicy', () => this.enqueueWaiting(), log);
    this.profiles = new Informer<NodeProfile>(cfg.kube, 'NodeMigrationProfile', () => this.enqueueWaiting(), log);
  }

  async start(): Promise<void> {
    await Promise.all([this.policies.start(), this.profiles.start()]);
    await this.syncProfiles().catch((e) => this.cfg.log.warn({ err: oneLine(e) }, 'node profiles not synced yet'));
    await this.migrations.start();
    this.profileTimer = setInterval(() => void this.syncProfiles().catch((e) => this.cfg.log.warn({ err: oneLine(e) }, 'node profile sync failed')), PROFILE_SYNC_MS);
    this.profileTimer.unref();
    this.cfg.log.info({ podMigrations: this.migrations.list().length, policies: this.policies.list().length }, 'CR bridge watching PodMigrations');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.profileTimer);
    for (const i of [this.migrations, this.policies, this.profiles]) i.stop();
    for (const s of this.follows.values()) s.unsubscribe();
    this.follows.clear();
    await Promise.allSettled([...this.running.values()]);
  }

  /** Runs `reconcile` for an object, one pass at a time per object; a change during a pass owes another. */
  private enqueue(k: string): void {
    if (this.stopped) return;
    if (this.running.has(k)) {
      this.again.add(k);
      return;
    }
    const work = this.reconcile(k).then(() => {
      this.retries.delete(k);
    }, (e) => {
      const n = (this.retries.get(k) ?? 0) + 1;
      this.retries.set(k, n);
      const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (n - 1));
      this.cfg.log.warn({ podMigration: k, err: oneLine(e), retryInMs: delay }, 'reconcile failed: retrying');
      setTimeout(() => this.enqueue(k), delay).unref();
    }).finally(() => {
      this.running.delete(k);
      if (this.again.delete(k)) this.enqueue(k);
    });
    this.running.set(k, work);
  }

  /** PodMigrations waiting for a policy's concurrency or a node: looked at again when something changed. */
  private enqueueWaiting(): void {
    for (const o of this.migrations.list()) {
      if (!o.status?.migrationId && !isTerminalPhase(o.status?.phase)) this.enqueue(key(o.metadata.namespace, o.metadata.name));
    }
  }

  private async reconcile(k: string): Promise<void> {
    const [ns, name] = k.split('/') as [string, string];
    const pm = this.migrations.get(name, ns);
    if (!pm) return;
    const id = pm.status?.migrationId;
    if (pm.metadata.deletionTimestamp) return this.finalize(pm);
    if (!id) {
      if (isTerminalPhase(pm.status?.phase)) return;
      return this.begin(pm);
    }
    const bus = this.busStatus.get(id);
    const phase = bus?.phase ?? pm.status?.phase;
    if (!isTerminalPhase(phase) && !this.follows.has(id)) await this.follow(id, k);
    if (pm.spec?.cancel && !isTerminalPhase(this.busStatus.get(id)?.phase ?? phase)) await this.cancel(id, pm);
    await this.writeStatus(pm);
  }

  /** A PodMigration being deleted: cancel what runs, wait for it to end, then let the object go. */
  private async finalize(pm: PodMigration): Promise<void> {
    if (!pm.metadata.finalizers?.includes(FINALIZER)) return;
    const id = pm.status?.migrationId;
    if (id) {
      if (!this.follows.has(id) && !this.busStatus.has(id)) await this.follow(id, key(pm.metadata.namespace, pm.metadata.name)).catch(() => {});
      const phase = this.busStatus.get(id)?.phase ?? pm.status?.phase;
      if (!isTerminalPhase(phase)) {
        await this.cancel(id, pm);
        // Its terminal event brings this object back here.
        return;
      }
      await this.writeStatus(pm).catch(() => {});
    }
    await this.cfg.kube.patch('PodMigration', pm.metadata.name!, {
      metadata: { finalizers: (pm.metadata.finalizers ?? []).filter((f) => f !== FINALIZER), resourceVersion: pm.metadata.resourceVersion },
    }, pm.metadata.namespace).catch((e) => {
      if (statusCode(e) !== 404) throw e;
    });
    if (id) this.unfollow(id);
    this.cfg.log.info({ podMigration: key(pm.metadata.namespace, pm.metadata.name), migration: id }, 'PodMigration deleted: finalizer removed');
  }

  private async cancel(id: string, pm: PodMigration): Promise<void> {
    if (this.cancelSent.has(id)) return;
    const r = await request(this.cfg.nc, Subjects.api('cancel'), c.ref, c.cancelReply, { id });
    this.cancelSent.add(id);
    this.cfg.log.info({ podMigration: key(pm.metadata.namespace, pm.metadata.name), migration: id, accepted: r.accepted, message: r.message }, 'cancel requested');
  }

  /** A PodMigration not started yet: its policy, its destination, then the migrate request. */
  private async begin(pm: PodMigration): Promise<void> {
    const ns = pm.metadata.namespace!;
    const name = pm.metadata.name!;
    const gen = pm.metadata.generation ?? 1;
    const spec = pm.spec!;
    if (spec.cancel) {
      await this.cfg.kube.patchStatus('PodMigration', name, {
        phase: 'Cancelled', observedGeneration: gen, message: 'cancelled before it started', completionTime: new Date().toISOString(),
        conditions: [condition('Accepted', 'False', 'Cancelled', 'cancelled before it started: nothing was done to the pod', gen, pm.status?.conditions)],
      }, ns);
      return;
    }
    if (!pm.metadata.finalizers?.includes(FINALIZER)) {
      await this.cfg.kube.patch('PodMigration', name, { metadata: { finalizers: [...(pm.metadata.finalizers ?? []), FINALIZER], resourceVersion: pm.metadata.resourceVersion } }, ns);
      // The update comes back through the watch, with the finalizer in place.
      return;
    }
    const reject = async (reason: string, message: string) => {
      this.cfg.log.info({ podMigration: key(ns, name), reason, message }, 'PodMigration rejected');
      await this.cfg.kube.patchStatus('PodMigration', name, {
        phase: 'Rejected', observedGeneration: gen, message, completionTime: new Date().toISOString(),
        conditions: [condition('Accepted', 'False', reason, message, gen, pm.status?.conditions)],
      }, ns);
    };
    if (ns !== this.cfg.podNamespace) {
      return reject('UnknownPod', `pod ${spec.pod} not found in namespace ${ns}: this PodMotion cluster's pods are in namespace ${this.cfg.podNamespace}`);
    }
    const podLabels = (await this.cfg.kube.podLabels(spec.pod, ns)) ?? {};
    const policy = choosePolicy(this.policies.list(), await this.cfg.kube.namespaceLabels(ns), podLabels);
    const eff = effectiveSpec(spec, policy?.spec);
    let toNode = eff.destination?.node;
    // Where the pod runs now (and where the coordinator would send it), asked once: for a node selector and
    // for a per-node limit.
    let placing: Promise<CheckReply> | undefined;
    const placement = () => (placing ??= request(this.cfg.nc, Subjects.api('check'), c.checkReq, c.checkReply, { pod: spec.pod }));
    if (eff.destination?.nodeSelector) {
      const source = (await placement()).sourceNode;
      toNode = this.nodesMatching(eff.destination.nodeSelector).find((n) => n !== source);
      if (!toNode) return reject('NoMatchingNode', `no ready node other than ${source ?? 'the source'} matches destination.nodeSelector ${JSON.stringify(eff.destination.nodeSelector)}`);
    }
    const limit = policy?.spec?.concurrency;
    if (limit && (limit.perCluster !== undefined || limit.perNode !== undefined)) {
      const wait = await this.overPolicyLimit(pm, policy!, toNode, placement);
      if (wait) {
        await this.cfg.kube.patchStatus('PodMigration', name, {
          phase: 'Pending', observedGeneration: gen, policy: policy!.metadata.name, message: wait,
          conditions: [condition('Admitted', 'False', 'ConcurrencyLimit', wait, gen, pm.status?.conditions)],
        }, ns);
        return;
      }
    }
    const req: MigrateRequest = {
      pod: spec.pod,
      ...(toNode ? { toNode } : {}),
      ...(eff.strategy ? { strategy: eff.strategy } : {}),
      ...(eff.allowPostCopy ? { allowPostCopy: true } : {}),
      ...(eff.bandwidthMbps !== undefined ? { bandwidthMbps: eff.bandwidthMbps } : {}),
      ...(eff.networkContinuity === false ? { networkContinuity: false } : {}),
      ...(eff.dryRun ? { dryRun: true } : {}),
      ...(this.cfg.testHooks && pm.metadata.annotations?.[PAUSE_AT_ANNOTATION] ? { pauseAt: pm.metadata.annotations[PAUSE_AT_ANNOTATION] as MigrateRequest['pauseAt'] } : {}),
      ...(eff.timeouts ? { timeouts: Object.fromEntries(Object.entries(eff.timeouts).map(([p, s]) => [p, s * 1000])) } : {}),
    };
    let status: MigrationStatusMsg;
    try {
      status = (await request(this.cfg.nc, Subjects.api('migrate'), c.migrate, c.statusReply, req, { timeoutMs: 30_000 })).status;
    } catch (e) {
      const code = (e as PodMotionError).code;
      // The bus being down is not the request's fault: try again later rather than reject.
      if (code === 'TIMEOUT' || /nobody answers/.test((e as Error).message)) throw e;
      return reject(code ?? 'Rejected', oneLine(e));
    }
    const id = status.spec.id;
    this.busStatus.set(id, status);
    this.cfg.log.info({ podMigration: key(ns, name), migration: id, from: status.spec.sourceNode, to: status.spec.destinationNode, strategy: status.spec.strategy, policy: policy?.metadata.name }, 'migration started');
    const st: PodMigrationStatus & { policy?: string } = {
      ...podMigrationStatus(status, gen),
      ...(policy ? { policy: policy.metadata.name } : {}),
    };
    st.conditions = [condition('Accepted', 'True', 'Started', `migration ${id} started on the bus`, gen), ...(st.conditions ?? [])];
    const written = await this.cfg.kube.patchStatus<PodMigration>('PodMigration', name, st, ns);
    await this.follow(id, key(ns, name));
    await this.writeStatus(written);
  }

  /** Why a PodMigration must wait for its policy's concurrency limits, or undefined. */
  private async overPolicyLimit(pm: PodMigration, policy: MigrationPolicy, toNode: string | undefined, placement: () => Promise<CheckReply>): Promise<string | undefined> {
    const limit = policy.spec!.concurrency!;
    const active = this.migrations.list().filter((o) => o !== pm && (o.status as { policy?: string } | undefined)?.policy === policy.metadata.name
      && o.status?.migrationId && !isTerminalPhase(this.busStatus.get(o.status.migrationId)?.phase ?? o.status.phase));
    if (limit.perCluster !== undefined && active.length >= limit.perCluster) {
      return `waiting: policy ${policy.metadata.name} allows ${limit.perCluster} migrations at once in the cluster (${active.length} running)`;
    }
    if (limit.perNode !== undefined) {
      const check = await placement();
      for (const node of [check.sourceNode, toNode ?? check.destinationNode]) {
        if (!node) continue;
        const n = active.filter((o) => o.status?.sourceNode === node || o.status?.destinationNode === node).length;
        if (n >= limit.perNode) return `waiting: policy ${policy.metadata.name} allows ${limit.perNode} migrations at once per node (node ${node} takes part in ${n})`;
      }
    }
    return undefined;
  }

  /** Ready nodes whose NodeMigrationProfile carries these labels. */
  nodesMatching(sel: Record<string, string>): string[] {
    return this.profiles.list()
      .filter((p) => selects({ matchLabels: sel }, p.metadata.labels) && p.status?.criuOk && p.status.conditions?.some((x) => x.type === 'Ready' && x.status === 'True'))
      .map((p) => p.metadata.name!).sort();
  }

  /** Subscribes to a migration's events and reads its status once (nothing missed before the subscription). */
  private async follow(id: string, k: string): Promise<void> {
    if (this.follows.has(id)) return;
    const sub = this.cfg.nc.subscribe(Subjects.migrationAll(id), {
      callback: (err, m) => {
        if (err) return;
        try {
          if (m.subject === Subjects.migrationProgress(id)) this.progress.set(id, c.progress.decode(m.data));
          else this.noteStatus(c.event.decode(m.data).status);
          this.enqueue(k);
        } catch (e) {
          this.cfg.log.warn({ migration: id, err: oneLine(e) }, 'undecodable migration event dropped');
        }
      },
    });
    this.follows.set(id, sub);
    const r = await request(this.cfg.nc, Subjects.api('status'), c.ref, c.statusReply, { id });
    this.noteStatus(r.status);
  }

  private noteStatus(s: MigrationStatusMsg): void {
    const prev = this.busStatus.get(s.spec.id);
    if (!prev || s.updatedAtMs >= prev.updatedAtMs) this.busStatus.set(s.spec.id, s);
  }

  private unfollow(id: string): void {
    this.follows.get(id)?.unsubscribe();
    this.follows.delete(id);
    this.progress.delete(id);
    this.cancelSent.delete(id);
  }

  /** Writes the bus status into the PodMigration when it changed, and keeps the migration's records. */
  private async writeStatus(pm: PodMigration): Promise<void> {
    const id = pm.status!.migrationId!;
    const s = this.busStatus.get(id);
    if (!s) return;
    const ns = pm.metadata.namespace!;
    const name = pm.metadata.name!;
    const gen = pm.metadata.generation ?? 1;
    const policyName = (pm.status as { policy?: string } | undefined)?.policy;
    const st = podMigrationStatus(s, gen, pm.status);
    const p = this.progress.get(id);
    if (p) {
      st.preCopy = { rounds: p.round, dataProcessedBytes: p.dataProcessedBytes, dataRemainingBytes: p.dataRemainingBytes,
        dirtyMemoryRateBytes: p.dirtyMemoryRateBytes, memoryTransferRateBytes: p.memoryTransferRateBytes };
    }
    const extra: Condition[] = (pm.status?.conditions ?? []).filter((x) => x.type === 'Accepted' || x.type === 'Admitted');
    if (pm.spec?.cancel) extra.push(condition('CancelRequested', 'True', 'SpecCancel', 'spec.cancel is true', gen, pm.status?.conditions));
    if (pm.metadata.deletionTimestamp) extra.push(condition('CancelRequested', 'True', 'Deleted', 'the PodMigration is being deleted', gen, pm.status?.conditions));
    const budget = policyName ? this.policies.get(policyName)?.spec?.freezeBudgetMs : undefined;
    if (budget !== undefined && st.freezeWindowMs !== undefined) {
      const ok = st.freezeWindowMs <= budget;
      extra.push(condition('FreezeWithinBudget', ok ? 'True' : 'False', ok ? 'WithinBudget' : 'OverBudget',
        `freeze ${st.freezeWindowMs} ms; policy ${policyName} allows ${budget} ms`, gen, pm.status?.conditions));
    }
    st.conditions = [...extra.filter((x, i) => extra.findIndex((y) => y.type === x.type) === i), ...(st.conditions ?? [])];
    const before = JSON.stringify({ ...pm.status, conditions: pm.status?.conditions?.map(({ lastTransitionTime: _t, ...r }) => r) });
    const merged = { ...pm.status, ...st };
    const after = JSON.stringify({ ...merged, conditions: merged.conditions?.map(({ lastTransitionTime: _t, ...r }) => r) });
    if (before !== after) await this.cfg.kube.patchStatus('PodMigration', name, { ...st, ...(policyName ? { policy: policyName } : {}) }, ns);
    await this.writeRecords(pm, s);
    if (isTerminalPhase(s.phase)) {
      this.unfollow(id);
      this.enqueueWaiting();
    }
  }

  /** The MigrationCheckpoint and StorageMigration records of one migration, owned by its PodMigration. */
  private async writeRecords(pm: PodMigration, s: MigrationStatusMsg): Promise<void> {
    const ns = pm.metadata.namespace!;
    const name = pm.metadata.name!;
    const owner = [{ apiVersion: API_VERSION, kind: 'PodMigration', name, uid: pm.metadata.uid!, controller: true, blockOwnerDeletion: false }];
    const cond = (type: string) => s.conditions.find((x) => x.type === type && x.status === 'True');
    const ended = s.phase === 'Complete' || s.phase === 'RolledBack' || s.phase === 'Cancelled';
    const freeze = s.results['FinalFreeze'] as { bytes?: number; wireBytes?: number; files?: number; referencedPages?: number;
      volumeBulkBytes?: number; volumeBulkFiles?: number; volumeBytes?: number } | undefined;
    if (freeze && cond('FinalFreeze')) {
      const restored = cond('Restore');
      const phase = ended ? 'Deleted' : s.phase === 'Failed' ? 'Failed' : restored ? 'Restored' : 'Transferred';
      await this.upsertRecord('MigrationCheckpoint', name, ns, owner, {
        migration: name, migrationId: s.spec.id, pod: s.spec.pod, sourceNode: s.spec.sourceNode, destinationNode: s.spec.destinationNode, strategy: s.spec.strategy,
      }, {
        phase, imageBytes: freeze.bytes ?? 0, wireBytes: freeze.wireBytes ?? 0, files: freeze.files ?? 0, referencedPages: freeze.referencedPages ?? 0,
        capturedTime: iso(cond('FinalFreeze')!.lastTransitionTimeMs),
        ...(restored ? { restoredTime: iso(restored.lastTransitionTimeMs) } : {}),
        ...(ended ? { deletedTime: iso(s.endedAtMs ?? s.updatedAtMs) } : {}),
        ...(s.phase === 'Failed' && s.error ? { message: s.error.message } : {}),
      });
    }
    const volumes = (s.results['Validating'] as { volumes?: Array<{ volume: string; tier: string }> } | undefined)?.volumes ?? [];
    const local = volumes.filter((v) => v.tier === 'local');
    for (const v of volumes) {
      const phase = s.phase === 'Failed' ? 'Failed'
        : s.phase === 'RolledBack' || s.phase === 'Cancelled' ? 'RolledBack'
        : freeze && cond('FinalFreeze') ? 'CutOver'
        : v.tier === 'local' && cond('DestinationPrewarm') ? 'Syncing' : 'Planned';
      // The freeze reports the volumes' bytes together: one local volume's own figures are those.
      const figures = freeze && v.tier === 'local' && local.length === 1
        ? { bulkBytes: freeze.volumeBulkBytes ?? 0, bulkFiles: freeze.volumeBulkFiles ?? 0, finalBytes: freeze.volumeBytes ?? 0 } : {};
      await this.upsertRecord('StorageMigration', `${name}-${v.volume}`, ns, owner, { migration: name, pod: s.spec.pod, volume: v.volume, tier: v.tier },
        { phase, ...figures, ...(s.phase === 'Failed' && s.error ? { message: s.error.message } : {}) });
    }
  }

  private async upsertRecord(kind: 'MigrationCheckpoint' | 'StorageMigration', name: string, ns: string,
    ownerReferences: NonNullable<PodMigration['metadata']['ownerReferences']>, spec: object, status: { phase: string } & Record<string, unknown>): Promise<void> {
    const rk = `${kind}/${ns}/${name}`;
    if (this.recorded.get(rk) === JSON.stringify(status)) return;
    try {
      await this.cfg.kube.create(kind, { apiVersion: API_VERSION, kind, metadata: { name, namespace: ns, ownerReferences, labels: { 'podmotion.io/migration': ownerReferences[0]!.name } }, spec }, ns);
    } catch (e) {
      if (statusCode(e) !== 409) throw e;
    }
    await this.cfg.kube.patchStatus(kind, name, status, ns);
    this.recorded.set(rk, JSON.stringify(status));
  }

  /** Mirrors every registered node agent into a NodeMigrationProfile named after its node. */
  async syncProfiles(): Promise<void> {
    const { nodes } = await request(this.cfg.nc, Subjects.api('nodes'), c.empty, c.nodesReply, {});
    const now = Date.now();
    const registered = new Set(nodes.map((n) => n.node));
    for (const n of nodes) await this.writeProfile(n, now);
    for (const p of this.profiles.list()) {
      if (registered.has(p.metadata.name!) || p.spec?.cluster !== this.cfg.cluster) continue;
      const ready = condition('Ready', 'False', 'NotRegistered', 'the node agent is not registered on the bus', p.metadata.generation ?? 1, p.status?.conditions);
      if (p.status?.conditions?.find((x) => x.type === 'Ready')?.status !== 'False') {
        await this.cfg.kube.patchStatus('NodeMigrationProfile', p.metadata.name!, { conditions: [ready] });
      }
    }
  }

  private async writeProfile(n: NodeRegistration, now: number): Promise<void> {
    let p = this.profiles.get(n.node);
    if (!p) {
      try {
        p = await this.cfg.kube.create<NodeProfile>('NodeMigrationProfile', {
          apiVersion: API_VERSION, kind: 'NodeMigrationProfile',
          metadata: { name: n.node, labels: { 'podmotion.io/cluster': this.cfg.cluster } }, spec: { cluster: this.cfg.cluster },
        });
      } catch (e) {
        if (statusCode(e) !== 409) throw e;
        p = await this.cfg.kube.get<NodeProfile>('NodeMigrationProfile', n.node);
      }
    }
    const fresh = now - n.heartbeatAtMs < HEARTBEAT_STALE_MS;
    const ok = fresh && n.capabilities.criuOk;
    const why = !fresh ? `no heartbeat for ${Math.round((now - n.heartbeatAtMs) / 1000)} s`
      : !n.capabilities.criuOk ? `CRIU does not work: ${n.capabilities.criuProblem ?? 'criu check failed'}` : 'agent registered, CRIU works';
    const status = {
      kernel: n.capabilities.kernel, criuOk: n.capabilities.criuOk, podCidr: n.podCidr, features: n.capabilities.features,
      ...(n.capabilities.criuVersion ? { criuVersion: n.capabilities.criuVersion } : {}),
      ...(n.capabilities.criuProblem ? { criuProblem: n.capabilities.criuProblem } : {}),
      agentStartTime: iso(n.startedAtMs),
      conditions: [condition('Ready', ok ? 'True' : 'False', ok ? 'AgentReady' : fresh ? 'CriuUnavailable' : 'HeartbeatStale', why, p.metadata.generation ?? 1, p.status?.conditions)],
    };
    const { conditions: _a, ...cmpNew } = status;
    const { conditions: _b, lastHeartbeatTime: _h, ...cmpOld } = p.status ?? {};
    const changed = JSON.stringify(cmpNew) !== JSON.stringify({ ...cmpNew, ...cmpOld })
      || JSON.stringify(status.conditions.map(({ lastTransitionTime: _t, ...r }) => r)) !== JSON.stringify((p.status?.conditions ?? []).map(({ lastTransitionTime: _t, ...r }) => r));
    const beatDue = !p.status?.lastHeartbeatTime || now - Date.parse(p.status.lastHeartbeatTime) >= PROFILE_SYNC_MS;
    if (changed || beatDue) await this.cfg.kube.patchStatus('NodeMigrationProfile', n.node, { ...status, lastHeartbeatTime: iso(n.heartbeatAtMs) });
  }
}
