/** Codecs for everything the coordinator sends and receives. */
import { createCodec } from '../../bus/codec.js';
import * as api from '../../bus/api.js';
import * as mig from '../../bus/node-migration.js';
import { obj, str } from '../../bus/schema.js';

/** What the migrations bucket holds per migration: the status and the machine's persisted snapshot. */
export const StoredMigration = obj({
  status: api.MigrationStatusSchema,
  snapshotJson: str({ maxLength: 4 << 20 }),
});

export const apiCodecs = {
  migrate: createCodec(api.MigrateRequest, 'migrate request'),
  ref: createCodec(api.MigrationRef, 'migration reference'),
  statusReply: createCodec(api.StatusReply, 'migration status'),
  listReq: createCodec(api.ListRequest, 'list request'),
  listReply: createCodec(api.ListReply, 'migration list'),
  cancelReply: createCodec(api.CancelReply, 'cancel reply'),
  estimateReq: createCodec(api.EstimateApiRequest, 'estimate request'),
  estimateReply: createCodec(api.EstimateApiReply, 'estimate reply'),
  checkReq: createCodec(api.CheckRequest, 'check request'),
  checkReply: createCodec(api.CheckReply, 'check reply'),
  empty: createCodec(obj({}), 'empty request'),
  nodesReply: createCodec(api.NodesReply, 'node list'),
  event: createCodec(api.MigrationEvent, 'migration event'),
  progress: createCodec(api.ProgressEvent, 'progress event'),
  stored: createCodec(StoredMigration, 'stored migration'),
} as const;

export const migCodecs = {
  step: createCodec(mig.MigStep, 'migration step'),
  inventory: createCodec(mig.InventoryReply, 'socket inventory'),
  prepare: createCodec(mig.PrepareRequest, 'prepare request'),
  prepareReply: createCodec(mig.PrepareReply, 'prepare reply'),
  arm: createCodec(mig.ArmReply, 'arm reply'),
  freeze: createCodec(mig.FreezeRequest, 'freeze request'),
  freezeReply: createCodec(mig.FreezeReply, 'freeze reply'),
  restore: createCodec(mig.RestoreRequest, 'restore request'),
  restoreReply: createCodec(mig.RestoreReply, 'restore reply'),
  disengageReq: createCodec(mig.DisengageRequest, 'disengage request'),
  disengage: createCodec(mig.DisengageReply, 'disengage reply'),
  holdStats: createCodec(mig.HoldStatsReply, 'hold stats'),
  probe: createCodec(mig.ProbeRequest, 'probe request'),
  probeReply: createCodec(mig.ProbeReply, 'probe reply'),
  role: createCodec(mig.RoleRequest, 'role request'),
  done: createCodec(mig.Done, 'done'),
  where: createCodec(mig.WhereReply, 'where reply'),
  route: createCodec(mig.RouteRequest, 'route request'),
  conntrack: createCodec(mig.ConntrackRequest, 'conntrack request'),
  conntrackReply: createCodec(mig.ConntrackReply, 'conntrack reply'),
  estimate: createCodec(mig.EstimateRequest, 'estimate request'),
  roundRef: createCodec(mig.RoundRef, 'pre-copy round'),
  round: createCodec(mig.RoundRequest, 'pre-copy round request'),
  roundReply: createCodec(mig.RoundReply, 'pre-copy round reply'),
  estimateReply: createCodec(mig.EstimateReply, 'estimate reply'),
  reclaimFreeze: createCodec(mig.ReclaimFreezeRequest, 'reclaim freeze request'),
  reclaimRestore: createCodec(mig.ReclaimRestoreRequest, 'reclaim restore request'),
  postcopy: createCodec(mig.PostCopyReply, 'post-copy reply'),
  volSync: createCodec(mig.VolumeSyncRequest, 'volume sync request'),
  volSyncReply: createCodec(mig.VolumeSyncReply, 'volume sync reply'),
} as const;
