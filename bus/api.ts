/**
 * The coordinator's API (`podmotion.v1.api.*`) and migration events: the messages the CLI, the CR bridge
 * and the inspector exchange with the coordinator. Shapes mirror machines/status.ts.
 */
import { NodeRegistration } from './messages.js';
import { arr, bool, json, literal, num, obj, optional, record, str, type Infer } from './schema.js';

const name = () => str({ minLength: 1, maxLength: 63, pattern: /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/ });

export const PhaseSchema = literal(
  'Pending', 'SocketInventory', 'Validating', 'DestinationPrewarm', 'PreCopyMemory', 'ZeroWindowArm', 'FinalFreeze',
  'OverlayHandoff', 'Restore', 'DisengageHold', 'TCPVerifying', 'ServiceVerifying', 'Cutover', 'RollingBack',
  'Complete', 'Validated', 'RolledBack', 'Cancelled', 'Failed',
);
export const StrategySchema = literal('PreCopy', 'PostCopy', 'Cold');

export const MigrationSpecSchema = obj({
  id: str({ minLength: 1, maxLength: 128 }),
  pod: name(),
  sourceNode: name(),
  destinationNode: name(),
  strategy: StrategySchema,
  networkContinuity: bool(),
  dryRun: bool(),
  bandwidthMbps: optional(num({ min: 1 })),
  allowPostCopy: optional(bool()),
  timeouts: optional(record(num({ min: 1 }), { maxKeys: 32 })),
});

export const ConditionSchema = obj({
  type: PhaseSchema,
  status: literal('True', 'False', 'Unknown'),
  reason: str({ maxLength: 128 }),
  message: str({ maxLength: 8192 }),
  lastTransitionTimeMs: num(),
  startedAtMs: num(),
  durationMs: optional(num()),
});

export const MigrationStatusSchema = obj({
  spec: MigrationSpecSchema,
  phase: PhaseSchema,
  conditions: arr(ConditionSchema, { maxItems: 64 }),
  results: record(json(), { maxKeys: 32 }),
  error: optional(obj({ phase: PhaseSchema, code: str({ maxLength: 64 }), message: str({ maxLength: 8192 }), servedFrom: optional(str({ maxLength: 63 })) })),
  cancelRequested: bool(),
  rollbackReason: optional(literal('failure', 'cancel', 'timeout', 'coordinator-restart')),
  cutoverAttempts: num({ int: true, min: 0 }),
  startedAtMs: num(),
  endedAtMs: optional(num()),
  updatedAtMs: num(),
});
export type MigrationStatusMsg = Infer<typeof MigrationStatusSchema>;

/** `podmotion migrate`: what a user may ask for. The coordinator fills in the rest. */
export const MigrateRequest = obj({
  pod: name(),
  toNode: optional(name()),
  strategy: optional(StrategySchema),
  dryRun: optional(bool()),
  networkContinuity: optional(bool()),
  bandwidthMbps: optional(num({ min: 1, max: 1_000_000 })),
  /** PreCopy only: when the rounds stall or hit a limit instead of converging, finish with PostCopy. */
  allowPostCopy: optional(bool()),
  /** Per-phase time limits (ms) that replace the defaults, keyed by phase name. */
  timeouts: optional(record(num({ min: 1 }), { maxKeys: 32 })),
  /** Test hook: fail after this phase's real work; refused unless the coordinator runs with test hooks. */
  failAt: optional(PhaseSchema),
  /** Test hook: after this phase's real work, wait (a window for cancel or a coordinator crash). */
  pauseAt: optional(PhaseSchema),
});
export type MigrateRequest = Infer<typeof MigrateRequest>;

export const MigrationRef = obj({ id: str({ minLength: 1, maxLength: 128 }) });
export type MigrationRef = Infer<typeof MigrationRef>;

export const StatusReply = obj({ status: MigrationStatusSchema });
export type StatusReply = Infer<typeof StatusReply>;

export const MigrationSummary = obj({
  id: str({ maxLength: 128 }),
  pod: name(),
  sourceNode: name(),
  destinationNode: name(),
  strategy: StrategySchema,
  phase: PhaseSchema,
  startedAtMs: num(),
  endedAtMs: optional(num()),
  freezeMs: optional(num()),
});
export type MigrationSummary = Infer<typeof MigrationSummary>;

export const ListRequest = obj({ active: optional(bool()) });
export type ListRequest = Infer<typeof ListRequest>;
export const ListReply = obj({ migrations: arr(MigrationSummary, { maxItems: 10_000 }) });
export type ListReply = Infer<typeof ListReply>;

/** `podmotion estimate`: whether and how a pod would move, measured without touching it. */
export const EstimateApiRequest = obj({ pod: name(), toNode: optional(name()), strategy: optional(StrategySchema) });
export type EstimateApiRequest = Infer<typeof EstimateApiRequest>;
export const EstimateApiReply = obj({
  pod: name(),
  sourceNode: optional(name()),
  destinationNode: optional(name()),
  strategy: StrategySchema,
  migratable: bool(),
  reasons: arr(str({ maxLength: 1024 }), { maxItems: 32 }),
  storageTier: str({ maxLength: 128 }),
  memoryBytes: optional(num({ min: 0 })),
  dirtyBytesPerSec: optional(num({ min: 0 })),
  connections: optional(num({ int: true, min: 0 })),
  predictedFreezeMs: optional(num({ min: 0 })),
  /** What the prediction rests on (or why there is none). */
  predictionBasis: str({ maxLength: 512 }),
});
export type EstimateApiReply = Infer<typeof EstimateApiReply>;

/**
 * Admission check (the Kubernetes webhook asks it): would a migrate request with these fields be accepted
 * now? Answered from the registry, the pods and the migrations in flight; nothing is measured or started.
 */
export const CheckRequest = obj({ pod: name(), toNode: optional(name()), strategy: optional(StrategySchema), allowPostCopy: optional(bool()) });
export type CheckRequest = Infer<typeof CheckRequest>;
export const CheckReply = obj({
  allowed: bool(),
  /** Why not, one line each; empty when allowed. */
  reasons: arr(str({ maxLength: 1024 }), { maxItems: 32 }),
  sourceNode: optional(name()),
  destinationNode: optional(name()),
  volumes: arr(obj({ volume: name(), tier: str({ maxLength: 32 }) }), { maxItems: 64 }),
});
export type CheckReply = Infer<typeof CheckReply>;

/** Every node agent registered now, as each reported itself (kernel, CRIU, features). */
export const NodesReply = obj({ nodes: arr(NodeRegistration, { maxItems: 10_000 }) });
export type NodesReply = Infer<typeof NodesReply>;

export const CancelReply = obj({ id: str({ maxLength: 128 }), phase: PhaseSchema, accepted: bool(), message: str({ maxLength: 1024 }) });
export type CancelReply = Infer<typeof CancelReply>;

/** Published on `podmotion.v1.events.migration.<id>` at every phase change (and kept in the events stream). */
export const MigrationEvent = obj({
  type: literal('phase'),
  id: str({ maxLength: 128 }),
  phase: PhaseSchema,
  atMs: num(),
  status: MigrationStatusSchema,
});
export type MigrationEvent = Infer<typeof MigrationEvent>;

/** Published per pre-copy round; field names follow KubeVirt's migration metrics where they fit. */
export const ProgressEvent = obj({
  type: literal('progress'),
  id: str({ maxLength: 128 }),
  phase: PhaseSchema,
  round: num({ int: true, min: 1 }),
  /** Bytes sent so far (kubevirt_vmi_migration_data_processed_bytes). */
  dataProcessedBytes: num({ min: 0 }),
  /** What the last round still found changed: what the freeze would send now (…_data_remaining_bytes). */
  dataRemainingBytes: num({ min: 0 }),
  /** (…_dirty_memory_rate_bytes) */
  dirtyMemoryRateBytes: num({ min: 0 }),
  /** (…_memory_transfer_rate_bytes) */
  memoryTransferRateBytes: num({ min: 0 }),
  atMs: num(),
});
export type ProgressEvent = Infer<typeof ProgressEvent>;
