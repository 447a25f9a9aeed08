/**
 * The traffic hold used while a pod migrates (tc programs on the pod's node-side veth, see bpf/README.md):
 * attach, arm (zero-window, then drop), read, release, reopen the peers' windows, detach.
 */
export {
  attachHold,
  defaultHoldBinary,
  detachHold,
  holdStats,
  kick,
  reopen,
  setHoldMode,
  unsettledFlows,
  waitQuiesced,
  HOLD_ATTACH_TIMEOUT_MS,
  HOLD_CONTROL_TIMEOUT_MS,
  HOLD_DETACH_TIMEOUT_MS,
  HOLD_MODES,
  HOLD_QUIESCE_POLL_MS,
  HOLD_QUIESCE_TIMEOUT_MS,
  type AttachHoldOptions,
  type DetachHoldOptions,
  type ForgeOptions,
  type HoldCallOptions,
  type QuiesceOptions,
  type QuiesceResult,
  type ReopenOptions,
} from './hold.js';
export {
  MAX_HOLD_FLOWS,
  type DetachResult,
  type ForgedSegment,
  type ForgeResult,
  type HoldAttachment,
  type HoldCounters,
  type HoldFlow,
  type HoldModeFlag,
  type HoldSide,
  type HoldStats,
  type SetModeResult,
} from './output.js';
