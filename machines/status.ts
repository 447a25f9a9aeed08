/**
 * The migration's status: what the machine keeps as context, what the host writes to the KV bucket, and
 * what the CR status and CLI show. Everything here is pure and JSON-safe; helpers return the same object
 * when nothing changed, so `statusChanged` and `===` both tell a host whether to write.
 */
import type { Phase, Strategy, WorkPhase } from './phases.js';

/** What the user asked for. */
export interface MigrationSpec {
  id: string;
  pod: string;
  sourceNode: string;
  destinationNode: string;
  strategy: Strategy;
  /** Keep established TCP connections across the move (traffic hold, repair-mode sockets, verification). */
  networkContinuity: boolean;
  /** Stop after Validating, changing nothing. */
  dryRun: boolean;
  bandwidthMbps?: number;
  /**
   * PreCopy only (KubeVirt's allowPostCopy): when the rounds stall or hit a limit instead of converging,
   * the freeze leaves memory behind and the pod finishes as PostCopy does.
   */
  allowPostCopy?: boolean;
  /** Per-phase timeouts that replace the defaults (ms). */
  timeouts?: Partial<Record<Phase, number>>;
}

/** A condition's state, as in metav1.Condition. */
export type ConditionStatus = 'True' | 'False' | 'Unknown';

/** One phase's record, modelled on metav1.Condition; `type` is the phase. */
export interface Condition {
  type: Phase;
  status: ConditionStatus;
  /** One CamelCase word: InProgress, Succeeded, Skipped, Failed, TimedOut, Cancelled, CoordinatorRestart, Retrying. */
  reason: string;
  message: string;
  /** When `status` last changed. */
  lastTransitionTimeMs: number;
  startedAtMs: number;
  /** Set once the condition is True or False. */
  durationMs?: number;
}

/** Why a migration failed, as it travels on the bus: a code plus a message. */
export interface PhaseError {
  phase: Phase;
  code: string;
  message: string;
  /** Where the pod serves from after this failure, when the rollback knows (e.g. it stayed on the destination). */
  servedFrom?: string;
}

/** What sent a migration to RollingBack. */
export type RollbackReason = 'failure' | 'cancel' | 'timeout' | 'coordinator-restart';

/** The whole status of one migration; the machine's context. */
export interface MigrationStatus {
  spec: MigrationSpec;
  phase: Phase;
  /** One per phase entered, in the order entered. */
  conditions: Condition[];
  /** Each phase's output keyed by phase name (sockets, freezeMs, ...); JSON-safe. */
  results: Record<string, unknown>;
  error?: PhaseError;
  cancelRequested: boolean;
  rollbackReason?: RollbackReason;
  /** Cutover effect runs started, bounded by the machine's retry limit. */
  cutoverAttempts: number;
  startedAtMs: number;
  endedAtMs?: number;
  updatedAtMs: number;
}

/** Longest error message kept in a status; longer ones are cut (the tool's own log tail can be long). */
export const MAX_ERROR_MESSAGE_CHARS = 4096;

/** Deepest nesting accepted in a phase result. */
const MAX_RESULT_DEPTH = 32;

/** The status of a migration that has been accepted and not started. */
export function initialStatus(spec: MigrationSpec, nowMs: number): MigrationStatus {
  return {
    spec, phase: 'Pending', conditions: [], results: {}, cancelRequested: false,
    cutoverAttempts: 0, startedAtMs: nowMs, updatedAtMs: nowMs,
  };
}

/** A migration waiting for admission: its Pending condition says why. */
export function queuedStatus(status: MigrationStatus, reason: string, nowMs: number): MigrationStatus {
  return noteCondition(startCondition(status, 'Pending', nowMs), 'Pending', 'Queued', reason, nowMs);
}

/** The migration got its slots: Pending ends True (when it had waited), the machine takes over. */
export function admittedStatus(status: MigrationStatus, nowMs: number): MigrationStatus {
  if (!conditionOf(status, 'Pending')) return status;
  return finishCondition(status, 'Pending', true, 'Admitted', `admitted after waiting ${Math.round(nowMs - status.startedAtMs)} ms`, nowMs);
}

/** Cancelled before it was admitted: nothing ran, nothing to undo. */
export function cancelledWhilePending(status: MigrationStatus, nowMs: number): MigrationStatus {
  const s = finishCondition(status, 'Pending', false, 'Cancelled', 'cancelled while waiting for admission; nothing ran', nowMs);
  return { ...s, phase: 'Cancelled', cancelRequested: true, endedAtMs: nowMs, updatedAtMs: nowMs };
}

/** The condition recorded for a phase, if any. */
export function conditionOf(status: MigrationStatus, phase: Phase): Condition | undefined {
  return status.conditions.find((c) => c.type === phase);
}

/** Records that a phase started (Unknown, InProgress); a phase's condition is added only once. */
export function startCondition(status: MigrationStatus, phase: Phase, nowMs: number): MigrationStatus {
  if (conditionOf(status, phase)) return status;
  const condition: Condition = {
    type: phase, status: 'Unknown', reason: 'InProgress', message: `${phase} started`,
    lastTransitionTimeMs: nowMs, startedAtMs: nowMs,
  };
  return { ...status, conditions: [...status.conditions, condition], updatedAtMs: nowMs };
}

/** Records how a phase ended (True when ok); adds the condition if the phase never started. */
export function finishCondition(
  status: MigrationStatus, phase: Phase, ok: boolean, reason: string, message: string, nowMs: number,
): MigrationStatus {
  const started = startCondition(status, phase, nowMs);
  const current = conditionOf(started, phase);
  if (!current) return status;
  const value: ConditionStatus = ok ? 'True' : 'False';
  if (current.status === value && current.reason === reason && current.message === message) return status;
  const changed = current.status !== value;
  return replaceCondition(started, {
    ...current, status: value, reason, message,
    lastTransitionTimeMs: changed ? nowMs : current.lastTransitionTimeMs,
    durationMs: changed ? nowMs - current.startedAtMs : current.durationMs,
  }, nowMs);
}

/** Updates a running phase's reason and message without changing its status (for example while retrying). */
export function noteCondition(
  status: MigrationStatus, phase: Phase, reason: string, message: string, nowMs: number,
): MigrationStatus {
  const current = conditionOf(status, phase);
  if (!current || (current.reason === reason && current.message === message)) return status;
  return replaceCondition(status, { ...current, reason, message }, nowMs);
}

/** Replaces the condition of the same type, keeping the order conditions were added in. */
function replaceCondition(status: MigrationStatus, next: Condition, nowMs: number): MigrationStatus {
  const conditions = status.conditions.map((c) => (c.type === next.type ? next : c));
  return { ...status, conditions, updatedAtMs: nowMs };
}

/** True when `b` says something `a` does not; `updatedAtMs` alone is not a change. Write status only then. */
export function statusChanged(a: MigrationStatus, b: MigrationStatus): boolean {
  if (a === b) return false;
  const { updatedAtMs: _a, ...restA } = a;
  const { updatedAtMs: _b, ...restB } = b;
  return !jsonEqual(restA, restB);
}

/** Structural equality of JSON values; key order and keys holding `undefined` do not matter. */
function jsonEqual(x: unknown, y: unknown, depth = 0): boolean {
  if (x === y) return true;
  if (depth > MAX_RESULT_DEPTH * 2 || typeof x !== 'object' || typeof y !== 'object' || x === null || y === null) {
    return false;
  }
  if (Array.isArray(x) !== Array.isArray(y)) return false;
  if (Array.isArray(x) && Array.isArray(y)) {
    return x.length === y.length && x.every((v, i) => jsonEqual(v, y[i], depth + 1));
  }
  const xo = x as Record<string, unknown>;
  const yo = y as Record<string, unknown>;
  const keys = new Set([...Object.keys(xo), ...Object.keys(yo)]);
  for (const k of keys) if (!jsonEqual(xo[k], yo[k], depth + 1)) return false;
  return true;
}

/**
 * A failure as the status keeps it. Effects may throw an Error (a `code` property is kept when it is a
 * string, as the bus's errors carry one) or reject with a plain `{ code, message }`.
 */
export function toPhaseError(phase: Phase, err: unknown, fallbackCode = 'INTERNAL'): PhaseError {
  let code = fallbackCode;
  let message: string;
  if (typeof err === 'object' && err !== null) {
    const e = err as { code?: unknown; message?: unknown; servedFrom?: unknown };
    if (typeof e.code === 'string' && e.code.length > 0) code = e.code;
    message = typeof e.message === 'string' ? e.message : describe(err);
    if (typeof e.servedFrom === 'string' && e.servedFrom.length > 0) {
      return { phase, code, message: message.slice(0, MAX_ERROR_MESSAGE_CHARS), servedFrom: e.servedFrom.slice(0, 63) };
    }
  } else {
    message = err === undefined ? 'unknown error' : String(err);
  }
  return { phase, code, message: message.slice(0, MAX_ERROR_MESSAGE_CHARS) };
}

/** JSON text for an error object without a message; some (cycles, BigInt) have none. */
function describe(err: object): string {
  try {
    return JSON.stringify(err);
  } catch {
    return 'an error that cannot be shown as JSON';
  }
}

/** True for a plain object holding only JSON values (finite numbers, no undefined, no class instances). */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return isPlainObject(value) && isJsonValue(value, 0);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function isJsonValue(value: unknown, depth: number): boolean {
  if (depth > MAX_RESULT_DEPTH) return false;
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (Array.isArray(value)) return value.every((v) => isJsonValue(v, depth + 1));
  if (!isPlainObject(value)) return false;
  return Object.values(value).every((v) => isJsonValue(v, depth + 1));
}

/** Why a phase is skipped for this spec, or undefined when it runs. */
export function skipMessage(spec: MigrationSpec, phase: Phase): string | undefined {
  if (phase === 'PreCopyMemory' && spec.strategy === 'Cold') {
    return 'skipped: the Cold strategy moves all memory during the freeze';
  }
  if (phase === 'PreCopyMemory' && spec.strategy === 'PostCopy') {
    return 'skipped: the PostCopy strategy moves memory after the pod resumes';
  }
  const holdPhases: Phase[] = ['ZeroWindowArm', 'DisengageHold', 'TCPVerifying'];
  if (!spec.networkContinuity && holdPhases.includes(phase)) {
    return 'skipped: network continuity is off, connections are not preserved';
  }
  return undefined;
}

/** Phases that run under a timeout. */
export type TimedPhase = WorkPhase | 'RollingBack';

/** What a migration came to: its freeze window and the TCP verification's figures, when it has them. */
export interface Outcome {
  freezeMs?: number;
  connections?: number;
  preserved?: number;
  seqDeltaMax?: number;
  rst?: number;
}

/** The outcome recorded in a status's results (Restore's freeze window, TCPVerifying's figures). */
export function outcomeOf(s: { results: Readonly<Record<string, unknown>> }): Outcome {
  const restore = s.results['Restore'] as { freezeMs?: number } | undefined;
  const tcp = s.results['TCPVerifying'] as { connections?: number; preserved?: number; seqDeltaMax?: number; rst?: number } | undefined;
  return { ...(restore?.freezeMs !== undefined ? { freezeMs: restore.freezeMs } : {}), ...(tcp ?? {}) };
}

/** Default time each phase may take (ms); spec.timeouts replaces any of them. */
export const DEFAULT_TIMEOUTS_MS: Readonly<Record<TimedPhase, number>> = {
  SocketInventory: 30_000, // one sock_diag dump on the source node
  Validating: 30_000, // a few capability and capacity queries over the bus
  DestinationPrewarm: 120_000, // namespaces, addresses and volume attach; attaching storage can be slow
  PreCopyMemory: 1_800_000, // memory size over bandwidth: tens of GiB over a slow link
  ZeroWindowArm: 15_000, // load and attach two tc programs
  FinalFreeze: 120_000, // freeze plus the dump of dirty pages, registers, fds and TCP repair state
  OverlayHandoff: 15_000, // a few route and FDB changes
  Restore: 120_000, // CRIU restore into prepared namespaces, sockets in repair mode
  DisengageHold: 15_000, // detach the hold and flush what it kept
  TCPVerifying: 30_000, // per-connection sequence checks, a few round trips each
  ServiceVerifying: 60_000, // an application probe with its own retries
  Cutover: 60_000, // per attempt: delete the source copy and wipe images and page caches
  RollingBack: 300_000, // undo everything; generous because giving up means Failed
};

/** Longest timer a clock can hold: Node fires a setTimeout beyond 2^31-1 ms at once instead of late. */
export const MAX_TIMEOUT_MS = 2_147_483_647;

/** The timeout for a phase: spec.timeouts when it holds a positive number (capped), else the default. */
export function phaseTimeoutMs(spec: MigrationSpec, phase: Phase): number {
  const custom = spec.timeouts?.[phase];
  if (custom !== undefined && custom > 0) return Math.min(custom, MAX_TIMEOUT_MS);
  // PostCopy verifies the service once all memory has arrived: as long as pre-copy may take.
  if (phase === 'ServiceVerifying' && (spec.strategy === 'PostCopy' || spec.allowPostCopy)) return DEFAULT_TIMEOUTS_MS.PreCopyMemory;
  return DEFAULT_TIMEOUTS_MS[phase as TimedPhase] ?? DEFAULT_TIMEOUTS_MS.RollingBack;
}
