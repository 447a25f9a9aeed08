/**
 * PodMotion's Kubernetes API (group podmotion.io, version v1alpha1): the five kinds the CRDs in
 * deploy/chart/podmotion/crds define, as TypeScript, and the pure mapping from a migration's status on
 * the bus to a PodMigration's status (one metav1.Condition per phase).
 */
import type { MigrationStatusMsg } from '../bus/api.js';
import { isTerminal, outcomeOf, type Phase } from '../machines/index.js';

export const GROUP = 'podmotion.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
/** Held on every PodMigration the bridge started: deletion waits until the migration has ended. */
export const FINALIZER = 'podmotion.io/migration';

export const KINDS = {
  PodMigration: { plural: 'podmigrations', namespaced: true },
  MigrationPolicy: { plural: 'migrationpolicies', namespaced: false },
  NodeMigrationProfile: { plural: 'nodemigrationprofiles', namespaced: false },
  MigrationCheckpoint: { plural: 'migrationcheckpoints', namespaced: true },
  StorageMigration: { plural: 'storagemigrations', namespaced: true },
} as const;
export type Kind = keyof typeof KINDS;

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: Array<{ apiVersion: string; kind: string; name: string; uid: string; controller?: boolean; blockOwnerDeletion?: boolean }>;
}

export interface KubeObject<Spec = unknown, Status = unknown> {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec?: Spec;
  status?: Status;
}

export type Strategy = 'PreCopy' | 'PostCopy' | 'Cold';

export interface PodMigrationSpec {
  pod: string;
  destination?: { node?: string; nodeSelector?: Record<string, string> };
  strategy?: Strategy;
  allowPostCopy?: boolean;
  networkContinuity?: boolean;
  bandwidthMbps?: number;
  /** Seconds per phase. */
  timeouts?: Record<string, number>;
  dryRun?: boolean;
  cancel?: boolean;
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface PodMigrationStatus {
  migrationId?: string;
  phase?: string;
  observedGeneration?: number;
  sourceNode?: string;
  destinationNode?: string;
  strategy?: string;
  message?: string;
  startTime?: string;
  completionTime?: string;
  freezeWindowMs?: number;
  connections?: { total: number; preserved: number; seqDeltaMax: number; rst: number };
  preCopy?: { rounds: number; dataProcessedBytes: number; dataRemainingBytes: number; dirtyMemoryRateBytes: number; memoryTransferRateBytes: number };
  conditions?: Condition[];
}

export type PodMigration = KubeObject<PodMigrationSpec, PodMigrationStatus>;

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }>;
}

export interface MigrationPolicySpec {
  priority?: number;
  namespaceSelector?: LabelSelector;
  podSelector?: LabelSelector;
  strategy?: Strategy;
  allowPostCopy?: boolean;
  bandwidthMbps?: number;
  concurrency?: { perNode?: number; perCluster?: number };
  freezeBudgetMs?: number;
  timeouts?: Record<string, number>;
}
export type MigrationPolicy = KubeObject<MigrationPolicySpec, { observedGeneration?: number; matchedMigrations?: number }>;

/** Phases after which nothing more happens to a PodMigration: the migration's own, and Rejected (never started). */
export function isTerminalPhase(phase: string | undefined): boolean {
  return phase === 'Rejected' || (phase !== undefined && isTerminal(phase as Phase));
}

const iso = (ms: number) => new Date(ms).toISOString();

/** A metav1.Condition reason: CamelCase letters and digits, never empty. */
export function conditionReason(raw: string): string {
  const words = raw.replace(/[^A-Za-z0-9]+/g, ' ').trim().split(' ').filter(Boolean);
  const r = words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join('');
  return /^[A-Za-z]/.test(r) ? r.slice(0, 1024) : `Phase${r}`.slice(0, 1024);
}

/**
 * The PodMigration status for a migration's status on the bus: phase, nodes, times, freeze window,
 * connections, and one condition per phase the migration went through (True done, Unknown running, False
 * failed), each with the generation it was observed at.
 */
export function podMigrationStatus(s: MigrationStatusMsg, generation: number, prev?: PodMigrationStatus): PodMigrationStatus {
  const conditions: Condition[] = s.conditions.map((c) => ({
    type: c.type,
    status: c.status,
    observedGeneration: generation,
    lastTransitionTime: iso(c.lastTransitionTimeMs),
    reason: conditionReason(c.reason || c.type),
    message: (c.durationMs !== undefined ? `${c.message}${c.message ? ' ' : ''}(${Math.round(c.durationMs)} ms)` : c.message).slice(0, 32_768),
  }));
  const { freezeMs: freeze, connections, preserved, seqDeltaMax, rst } = outcomeOf(s);
  const out: PodMigrationStatus = {
    ...(prev?.preCopy ? { preCopy: prev.preCopy } : {}),
    migrationId: s.spec.id,
    phase: s.phase,
    observedGeneration: generation,
    sourceNode: s.spec.sourceNode,
    destinationNode: s.spec.destinationNode,
    strategy: s.spec.strategy,
    startTime: iso(s.startedAtMs),
    conditions,
  };
  if (s.endedAtMs !== undefined) out.completionTime = iso(s.endedAtMs);
  if (freeze !== undefined) out.freezeWindowMs = Math.round(freeze * 10) / 10;
  if (connections !== undefined) out.connections = { total: connections, preserved: preserved ?? 0, seqDeltaMax: seqDeltaMax ?? 0, rst: rst ?? 0 };
  if (s.error) out.message = `${s.error.phase}: ${s.error.message}`.slice(0, 32_768);
  else {
    const pending = s.conditions.find((c) => c.type === 'Pending' && c.status !== 'True');
    if (pending) out.message = pending.message;
  }
  return out;
}

/** Does a label set satisfy a selector? An absent or empty selector selects everything. */
export function selects(sel: LabelSelector | undefined, labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  for (const [k, v] of Object.entries(sel?.matchLabels ?? {})) if (l[k] !== v) return false;
  for (const e of sel?.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(l, e.key);
    const inValues = has && (e.values ?? []).includes(l[e.key]!);
    if (e.operator === 'In' && !inValues) return false;
    if (e.operator === 'NotIn' && inValues) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}

/** The policy that applies to a pod: among those selecting it, the highest priority, then the oldest. */
export function choosePolicy(policies: readonly MigrationPolicy[], namespaceLabels: Record<string, string>, podLabels: Record<string, string>): MigrationPolicy | undefined {
  return policies
    .filter((p) => selects(p.spec?.namespaceSelector, namespaceLabels) && selects(p.spec?.podSelector, podLabels))
    .sort((a, b) => (b.spec?.priority ?? 0) - (a.spec?.priority ?? 0)
      || (a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? '')
      || (a.metadata.name ?? '').localeCompare(b.metadata.name ?? ''))[0];
}

/** What a migration asks of the bus: the PodMigration's spec, with the policy's values where it leaves a gap. */
export function effectiveSpec(spec: PodMigrationSpec, policy?: MigrationPolicySpec): PodMigrationSpec {
  const timeouts = { ...(policy?.timeouts ?? {}), ...(spec.timeouts ?? {}) };
  const strategy = spec.strategy ?? policy?.strategy;
  const allowPostCopy = spec.allowPostCopy ?? (spec.strategy === undefined || spec.strategy === 'PreCopy' ? policy?.allowPostCopy : undefined);
  const bandwidthMbps = spec.bandwidthMbps ?? policy?.bandwidthMbps;
  return {
    ...spec,
    ...(strategy !== undefined ? { strategy } : {}),
    ...(allowPostCopy !== undefined && (strategy ?? 'PreCopy') === 'PreCopy' ? { allowPostCopy } : {}),
    ...(bandwidthMbps !== undefined ? { bandwidthMbps } : {}),
    ...(Object.keys(timeouts).length ? { timeouts } : {}),
  };
}
