/**
 * The JSON lines pm-hold prints, as runtime-checked shapes: a controller from another build that prints
 * something else fails loudly at the boundary instead of deep inside a migration.
 */
import { arr, bool, literal, num, obj, optional, str, type Infer } from '../bus/schema.js';

/** Same bound as PM_FLOWS_MAX in bpf/hold.h: the flow map never holds more. */
export const MAX_HOLD_FLOWS = 16_384;

const u32 = () => num({ int: true, min: 0, max: 0xffff_ffff });
const count = () => num({ int: true, min: 0 });
/** "IP:PORT". */
const endpoint = () => str({ maxLength: 21, pattern: /^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/ });

/** One mode bit as `pm-hold set --mode` spells it. */
export const HoldModeFlagSchema = literal('zw', 'drop-in', 'drop-out');
const modeList = () => arr(HoldModeFlagSchema, { maxItems: 3 });

export const HoldAttachmentSchema = obj({
  attached: bool(),
  netns: str(),
  dev: str(),
  ifindex: count(),
  podIp: str(),
  pin: str(),
  qdiscCreated: bool(),
  replaced: bool(),
  progIds: obj({ fromPod: count(), toPod: count() }),
  mode: modeList(),
});

export const SetModeResultSchema = obj({ mode: modeList(), previous: modeList(), monoUs: count() });

/** What one direction of a flow last put on the wire past the hold (struct pm_side in bpf/hold.h). */
export const HoldSideSchema = obj({
  seen: bool(),
  /** Highest seq + length seen: the sender's snd_nxt as the receiver knows it. */
  nxt: u32(),
  ack: u32(),
  ackValid: bool(),
  /** Real window field of the newest segment, before any zero-window rewrite; unscaled. */
  win: num({ int: true, min: 0, max: 0xffff }),
  packets: count(),
  /** CLOCK_MONOTONIC microseconds of the newest segment. */
  lastUs: count(),
  tsval: optional(u32()),
  tsecr: optional(u32()),
  isn: optional(u32()),
  wscale: optional(num({ int: true, min: 0, max: 255 })),
  /** Ack of the newest segment that left with window 0 (only while the newest one did). */
  zeroWindowAck: optional(u32()),
  fin: bool(),
  rst: bool(),
});

export const HoldFlowSchema = obj({
  pod: endpoint(),
  peer: endpoint(),
  fromPod: HoldSideSchema,
  toPod: HoldSideSchema,
  /** Neither side sent FIN or RST. */
  open: bool(),
  /** Nothing in flight either way and the pod's newest segment told the peer window 0. */
  quiesced: bool(),
  /** Bytes the peer sent that the pod has not acknowledged (as seen at the hook). */
  unackedFromPeer: u32(),
  /** Bytes the pod sent that the peer has not acknowledged. */
  unackedFromPod: u32(),
});

export const HoldCountersSchema = obj({
  droppedToPod: count(),
  droppedFromPod: count(),
  rstToPod: count(),
  rstFromPod: count(),
  zeroWindowRewrites: count(),
  markExempt: count(),
  trackedToPod: count(),
  trackedFromPod: count(),
});

export const HoldStatsSchema = obj({
  monoUs: count(),
  mode: modeList(),
  counters: HoldCountersSchema,
  flows: arr(HoldFlowSchema, { maxItems: MAX_HOLD_FLOWS }),
});

export const ForgedSegmentSchema = obj({
  from: endpoint(),
  to: endpoint(),
  seq: u32(),
  ack: u32(),
  win: num({ int: true, min: 0, max: 0xffff }),
  tsval: optional(u32()),
  tsecr: optional(u32()),
});

/** What `pm-hold reopen` and `pm-hold kick` sent. */
export const ForgeResultSchema = obj({
  kind: literal('reopen', 'elicit', 'kick'),
  /** Segments sent (kick sends two per flow). */
  sent: count(),
  /** Flows that got segments, and flows left out (closed, never seen, or another pod's). */
  flows: count(),
  skipped: count(),
  /** CLOCK_MONOTONIC microseconds right after the last segment left. */
  monoUs: count(),
  segments: arr(ForgedSegmentSchema, { maxItems: 2 * MAX_HOLD_FLOWS }),
});

export const DetachResultSchema = obj({
  detached: bool(),
  filtersRemoved: count(),
  qdiscRemoved: bool(),
  netnsGone: bool(),
  deviceGone: bool(),
  unpinned: bool(),
});

export type HoldModeFlag = Infer<typeof HoldModeFlagSchema>;
export type HoldAttachment = Infer<typeof HoldAttachmentSchema>;
export type SetModeResult = Infer<typeof SetModeResultSchema>;
export type HoldSide = Infer<typeof HoldSideSchema>;
export type HoldFlow = Infer<typeof HoldFlowSchema>;
export type HoldCounters = Infer<typeof HoldCountersSchema>;
export type HoldStats = Infer<typeof HoldStatsSchema>;
export type ForgedSegment = Infer<typeof ForgedSegmentSchema>;
export type ForgeResult = Infer<typeof ForgeResultSchema>;
export type DetachResult = Infer<typeof DetachResultSchema>;
