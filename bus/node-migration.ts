/**
 * Messages between the coordinator and the node-side migration actors (source node, destination node,
 * network relay), on `podmotion.v1.node.<node>.mig.<verb>` and `...relay.route`.
 */
import { arr, bool, bytes, literal, num, obj, optional, str, type Infer } from './schema.js';

const name = () => str({ minLength: 1, maxLength: 63, pattern: /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/ });
const id = () => str({ minLength: 1, maxLength: 128, pattern: /^[a-z0-9][a-z0-9-]*$/ });
/** A dotted-quad IPv4 address: these strings reach `ip` and the probe, so nothing else may pass. */
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const ipv4 = () => str({ maxLength: 15, pattern: IPV4 });
/** IPv4 address and port, as sockets are listed. */
const endpoint = () => str({ maxLength: 21, pattern: /^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/ });
const mac = () => str({ maxLength: 17, pattern: /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/ });

/** Node verbs of the migration actors (joined to `podmotion.v1.node.<node>.`). */
export const MIG_VERBS = [
  'mig.inventory', 'mig.prepare', 'mig.arm', 'mig.freeze', 'mig.restore', 'mig.disengage', 'mig.holdStats',
  'mig.probe', 'mig.cutover', 'mig.rollback', 'mig.estimate', 'mig.precopy.prepare', 'mig.precopy.round', 'mig.precopy.commit', 'mig.restored', 'mig.reclaim.prepare', 'mig.reclaim.abort', 'mig.reclaim.freeze', 'mig.reclaim.restore', 'mig.postcopy.finish', 'mig.where', 'vol.sync', 'relay.route', 'relay.conntrack',
] as const;
export type MigVerb = (typeof MIG_VERBS)[number];

export const MigStep = obj({ id: id(), pod: name() });
export type MigStep = Infer<typeof MigStep>;

/** One TCP connection of a pod, as sock_diag reports it. */
export const SocketInfo = obj({ local: endpoint(), remote: endpoint(), state: str({ maxLength: 16 }), rttMs: optional(num()) });
export type SocketInfo = Infer<typeof SocketInfo>;
/** A pod's volume as the migration sees it: its name and storage tier. */
export const VolumeRef = obj({ name: str({ maxLength: 31 }), tier: str({ maxLength: 16 }) });
export type VolumeRef = Infer<typeof VolumeRef>;

export const InventoryReply = obj({
  ip: ipv4(), mac: mac(), port: optional(num({ int: true })), initPid: num({ int: true }),
  sockets: arr(SocketInfo, { maxItems: 65_536 }),
  volumes: optional(arr(VolumeRef, { maxItems: 16 })),
});
export type InventoryReply = Infer<typeof InventoryReply>;

/** A TCP connection's sequence state, read from the socket in repair mode (or the checkpoint). */
export const SocketSeq = obj({ local: endpoint(), remote: endpoint(), sndSeq: num({ int: true }), rcvSeq: num({ int: true }) });
export type SocketSeq = Infer<typeof SocketSeq>;

/** Read-only measurements of a pod for `estimate`: memory a checkpoint carries and how fast it changes. */
export const EstimateRequest = obj({ pod: name(), intervalMs: num({ int: true, min: 0, max: 10_000 }) });
export type EstimateRequest = Infer<typeof EstimateRequest>;
export const EstimateReply = obj({
  memoryBytes: num({ int: true, min: 0 }), zeroBytes: num({ int: true, min: 0 }), dirtyBytesPerSec: num({ min: 0 }),
  processes: num({ int: true, min: 0 }), connections: num({ int: true, min: 0 }), scanMs: num({ min: 0 }),
});
export type EstimateReply = Infer<typeof EstimateReply>;

/** One pre-copy round: the destination opens a receiver, the source sends what changed, the destination keeps it. */
export const RoundRef = obj({ id: id(), pod: name(), round: num({ int: true, min: 1, max: 1000 }) });
export type RoundRef = Infer<typeof RoundRef>;
/** `tracked`: the source tracks writes, so the rounds after the first read only the pages written since. */
export const RoundReply = obj({
  pages: num({ int: true, min: 0 }), newPages: num({ int: true, min: 0 }), bytes: num({ int: true, min: 0 }),
  scanMs: num({ min: 0 }), transferMs: num({ min: 0 }), tracked: optional(bool()),
});
export type RoundReply = Infer<typeof RoundReply>;

/** `lazy`: PostCopy, the destination also opens a page channel for the pages fetched after the restore. */
export const PrepareRequest = obj({ id: id(), pod: name(), ip: ipv4(), mac: mac(), sourceNode: name(), lazy: optional(bool()), volumes: optional(arr(VolumeRef, { maxItems: 16 })) });
export type PrepareRequest = Infer<typeof PrepareRequest>;
export const PrepareReply = obj({
  host: ipv4(), port: num({ int: true }), key: bytes({ maxBytes: 64 }), pagesPort: optional(num({ int: true })),
  /** A receiver per `local` volume, keyed like the images. */
  volumes: optional(arr(obj({ name: str({ maxLength: 31 }), port: num({ int: true }) }), { maxItems: 16 })),
});
export const RoundRequest = obj({ id: id(), pod: name(), round: num({ int: true, min: 1, max: 1000 }), target: PrepareReply, bandwidthMbps: optional(num({ min: 1 })) });
export type RoundRequest = Infer<typeof RoundRequest>;
export type PrepareReply = Infer<typeof PrepareReply>;

export const ArmReply = obj({ armedAtMs: num(), waitedMs: num() });
export type ArmReply = Infer<typeof ArmReply>;

/** `lazy`: PostCopy, private memory stays behind and is served over the page channel after the freeze. */
export const FreezeRequest = obj({ id: id(), pod: name(), networkContinuity: bool(), target: PrepareReply, bandwidthMbps: optional(num({ min: 1 })), lazy: optional(bool()) });
export type FreezeRequest = Infer<typeof FreezeRequest>;
const port = () => num({ int: true, min: 0, max: 65535 });
const ctTuple = () => obj({ src: ipv4(), dst: ipv4(), sport: port(), dport: port() });
/**
 * A node's conntrack entry of one of the pod's flows (node-runtime/conntrack.ts). Its fields become arguments of
 * the `conntrack` tool on the destination, so each is held to the shape that tool prints.
 */
export const CtEntrySchema = obj({
  proto: literal('tcp', 'udp'), state: optional(str({ maxLength: 16, pattern: /^[A-Z][A-Z0-9_]{0,15}$/ })), timeoutS: num({ int: true, min: 0, max: 1 << 30 }),
  orig: ctTuple(), reply: ctTuple(), assured: bool(), seenReply: bool(), mark: num({ int: true, min: 0, max: 0xffffffff }),
});
/** Entries carried per migration (one bus message); node-runtime/conntrack.ts keeps the same bound. */
export const MAX_CT_ENTRIES = 4096;

export const FreezeReply = obj({
  frozenAtMs: num(), dumpMs: num(), transferMs: num(), bytes: num(), files: num({ int: true }),
  /** Pages sent by reference because a pre-copy round had delivered them already. */
  referencedPages: optional(num({ int: true, min: 0 })), wireBytes: optional(num({ int: true, min: 0 })), encodeMs: optional(num({ min: 0 })),
  /** Of encodeMs, what followed the dump (the images CRIU closed earlier were encoded while it dumped on). */
  encodeAfterDumpMs: optional(num({ min: 0 })),
  sockets: arr(SocketSeq, { maxItems: 65_536 }),
  /** Memory left behind for post-copy, as the dump counted it (bytes of lazy pages). */
  lazyBytes: optional(num({ int: true, min: 0 })),
  /**
   * Pre-copy with tracked writes: the destination restores lazily from the rounds' pages and `finalPages`
   * pages written since the last round (`writtenBytes`, as the tracker counted them) that crossed in the freeze.
   */
  lazyFromRounds: optional(bool()),
  writtenBytes: optional(num({ int: true, min: 0 })),
  finalPages: optional(num({ int: true, min: 0 })),
  /** TCP connections established in the pod at the freeze (each should have its sequence state in `sockets`). */
  established: optional(num({ int: true, min: 0 })),
  /** The volumes' last round, alongside the images. */
  volumeFiles: optional(num({ int: true, min: 0 })), volumeBytes: optional(num({ int: true, min: 0 })), volumeMs: optional(num({ min: 0 })),
  /** The source node's conntrack entries of the pod's flows, listed at the freeze, for the destination node. */
  conntrack: optional(arr(CtEntrySchema, { maxItems: MAX_CT_ENTRIES })),
  /** Entries of the pod's flows that could not be carried (over the bound, or SNATed to the source node). */
  conntrackLeft: optional(num({ int: true, min: 0 })),
});
export type FreezeReply = Infer<typeof FreezeReply>;

/** PostCopy's end on the destination: every page the restored pod lacked has arrived (or the pod is lost). */
export const PostCopyReply = obj({ bytes: num({ int: true, min: 0 }), ms: num({ min: 0 }), afterResumeMs: num({ min: 0 }) });
export type PostCopyReply = Infer<typeof PostCopyReply>;

export const RestoreRequest = obj({ id: id(), pod: name(), sourceNode: name(), networkContinuity: bool() });
export type RestoreRequest = Infer<typeof RestoreRequest>;
export const RestoreReply = obj({
  resumedAtMs: num(), restoreMs: num(), initPid: num({ int: true }), reopened: optional(num({ int: true })),
  pagesFromCache: optional(num({ int: true, min: 0 })), decodeMs: optional(num({ min: 0 })),
  /** Of decodeMs, what followed the last image's arrival (the others were rebuilt while the images came in). */
  decodeAfterImagesMs: optional(num({ min: 0 })), sockets: arr(SocketSeq, { maxItems: 65_536 }),
});
export type RestoreReply = Infer<typeof RestoreReply>;

/** Rollback after the destination served: checkpoint it and send it back to the source. */
export const ReclaimFreezeRequest = obj({ id: id(), pod: name(), target: PrepareReply });
export type ReclaimFreezeRequest = Infer<typeof ReclaimFreezeRequest>;
export const ReclaimRestoreRequest = obj({ id: id(), pod: name(), destinationNode: name(), networkContinuity: bool() });
export type ReclaimRestoreRequest = Infer<typeof ReclaimRestoreRequest>;

export const DisengageRequest = obj({ id: id(), pod: name(), sourceNode: name() });
export type DisengageRequest = Infer<typeof DisengageRequest>;
export const DisengageReply = obj({ reopened: num({ int: true }), releasedAtMs: num() });
export type DisengageReply = Infer<typeof DisengageReply>;

export const HoldStatsReply = obj({
  attached: bool(), rstToPod: num({ int: true }), rstFromPod: num({ int: true }),
  droppedToPod: num({ int: true }), droppedFromPod: num({ int: true }),
  /**
   * Of the connections this node moved (source: checkpointed; destination: restored), how many saw a RST pass
   * the hold. The counters above count every RST of the pod, also on connections that had ended before the
   * freeze (a socket closed there is not restored, and its peer's late segments are answered with RST).
   */
  migratedFlows: optional(num({ int: true, min: 0 })), rstMigrated: optional(num({ int: true, min: 0 })),
});
export type HoldStatsReply = Infer<typeof HoldStatsReply>;

export const ProbeRequest = obj({ id: id(), pod: name(), ip: ipv4(), port: num({ int: true, min: 1, max: 65535 }) });
export type ProbeRequest = Infer<typeof ProbeRequest>;
export const ProbeReply = obj({ ok: bool(), ms: num() });
export type ProbeReply = Infer<typeof ProbeReply>;

export const RoleRequest = obj({ id: id(), pod: name(), role: literal('source', 'destination') });
export type RoleRequest = Infer<typeof RoleRequest>;
export const Done = obj({ done: bool(), note: optional(str({ maxLength: 1024 })) });
export type Done = Infer<typeof Done>;

/**
 * What a node holds of a pod, for finishing a rollback that failed: whether a copy is there, whether it runs
 * (not frozen or stopped), the migration it is an incoming copy of, and the move back that restored it.
 */
export const WhereReply = obj({ present: bool(), running: bool(), incoming: optional(id()), reclaimedBy: optional(id()) });
export type WhereReply = Infer<typeof WhereReply>;

/** Where a pod IP is served from now on: every overlay member routes it to that node's VTEP. */
/**
 * `version` orders route changes of one pod IP (the coordinator's clock when it decided them): a node keeps
 * the newest it has seen, so a late or repeated older request cannot move the route back.
 */
export const RouteRequest = obj({ id: id(), pod: name(), podIp: ipv4(), node: name(), vtepIp: ipv4(), version: optional(num({ min: 0 })) });
export type RouteRequest = Infer<typeof RouteRequest>;

/** The destination node takes the source's conntrack entries of the pod's flows (OverlayHandoff). */
export type CtEntry = Infer<typeof CtEntrySchema>;
export const ConntrackRequest = obj({ id: id(), pod: name(), podIp: ipv4(), entries: arr(CtEntrySchema, { maxItems: MAX_CT_ENTRIES }), forget: optional(bool()) });
export type ConntrackRequest = Infer<typeof ConntrackRequest>;
export const ConntrackReply = obj({ inserted: num({ int: true, min: 0 }), forgotten: optional(num({ int: true, min: 0 })), ms: num({ min: 0 }) });
export type ConntrackReply = Infer<typeof ConntrackReply>;

/** One round of a pod's `local` volumes, source to destination (the destination's receivers in `target`). */
export const VolumeSyncRequest = obj({ id: id(), pod: name(), target: PrepareReply });
export type VolumeSyncRequest = Infer<typeof VolumeSyncRequest>;
export const VolumeSyncReply = obj({
  volumes: num({ int: true, min: 0 }), files: num({ int: true, min: 0 }), bytes: num({ int: true, min: 0 }),
  deleted: num({ int: true, min: 0 }), ms: num({ min: 0 }),
});
export type VolumeSyncReply = Infer<typeof VolumeSyncReply>;
