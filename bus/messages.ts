/** Shapes of the messages node agents exchange. Every decode checks one of these. */
import { arr, bool, num, obj, optional, record, str, type Infer } from './schema.js';

const name = () => str({ minLength: 1, maxLength: 63, pattern: /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/ });

/** An error reply body (see bus/errors.ts toWire/fromWire). */
export const WireErrorSchema = obj({
  code: str({ maxLength: 64 }),
  message: str({ maxLength: 8192 }),
  retryable: bool(),
  details: optional(record(str({ maxLength: 65_536 }), { maxKeys: 16 })),
});

export const PingRequest = obj({ from: str({ maxLength: 128 }), sentAtMs: num() });
export type PingRequest = Infer<typeof PingRequest>;
export const PingReply = obj({ node: name(), pid: num({ int: true }), receivedAtMs: num() });
export type PingReply = Infer<typeof PingReply>;

/** What a node can do, as its agent measured it at start. */
export const Capabilities = obj({
  kernel: str({ maxLength: 128 }),
  criuVersion: optional(str({ maxLength: 64 })),
  criuPath: optional(str({ maxLength: 4096 })),
  /** `criu check` passed. */
  criuOk: bool(),
  /** First line of what went wrong when criuOk is false. */
  criuProblem: optional(str({ maxLength: 1024 })),
  /** Named CRIU features and whether `criu check --feature` accepted each. */
  features: record(bool(), { maxKeys: 64 }),
});
export type Capabilities = Infer<typeof Capabilities>;

/** A node's registration, written to the nodes KV bucket on every heartbeat. */
export const NodeRegistration = obj({
  node: name(),
  cluster: str({ maxLength: 32 }),
  agentPid: num({ int: true }),
  startedAtMs: num(),
  heartbeatAtMs: num(),
  podCidr: str({ maxLength: 32 }),
  capabilities: Capabilities,
});
export type NodeRegistration = Infer<typeof NodeRegistration>;

export const Empty = obj({});
export type Empty = Infer<typeof Empty>;

export const PodInfo = obj({
  name: name(),
  node: name(),
  ip: str({ maxLength: 45 }),
  mac: str({ maxLength: 17 }),
  port: optional(num({ int: true, min: 1, max: 65535 })),
  command: arr(str({ maxLength: 4096 }), { maxItems: 256 }),
  /** A pod of several containers: each its own process tree under the pod's init, sharing its network. */
  containers: optional(arr(obj({ name: name(), command: arr(str({ maxLength: 4096 }), { maxItems: 256 }) }), { maxItems: 16 })),
  initPid: num({ int: true }),
  running: bool(),
  startedAtMs: num(),
  user: optional(str({ maxLength: 32 })),
  volumes: optional(arr(obj({ name: str({ maxLength: 31 }), tier: str({ maxLength: 16 }), path: str({ maxLength: 4096 }) }), { maxItems: 16 })),
});
export type PodInfo = Infer<typeof PodInfo>;

export const PodRunRequest = obj({
  name: name(),
  command: arr(str({ maxLength: 4096 }), { maxItems: 256 }),
  /** A pod of several containers: each its own process tree under the pod's init, sharing its network. */
  containers: optional(arr(obj({ name: name(), command: arr(str({ maxLength: 4096 }), { maxItems: 256 }) }), { maxItems: 16 })),
  port: optional(num({ int: true, min: 1, max: 65535 })),
  user: optional(str({ maxLength: 32 })),
  volumes: optional(arr(obj({ name: str({ maxLength: 31 }), tier: str({ maxLength: 16 }) }), { maxItems: 16 })),
});
export type PodRunRequest = Infer<typeof PodRunRequest>;

export const PodRef = obj({
  name: name(),
  /** pod delete only: stop the pod gracefully (SIGINT to its command, then SIGKILL after 10 s) and keep its volumes. */
  keepVolumes: optional(bool()),
});
export type PodRef = Infer<typeof PodRef>;

export const PodList = obj({ pods: arr(PodInfo, { maxItems: 1000 }) });
export type PodList = Infer<typeof PodList>;

export const PodLogsRequest = obj({ name: name(), lines: optional(num({ int: true, min: 1, max: 2000 })) });
export type PodLogsRequest = Infer<typeof PodLogsRequest>;
export const PodLogs = obj({ name: name(), lines: arr(str({ maxLength: 65_536 }), { maxItems: 2000 }) });
export type PodLogs = Infer<typeof PodLogs>;

export const NodeInfo = obj({ registration: NodeRegistration, pods: num({ int: true, min: 0 }) });
export type NodeInfo = Infer<typeof NodeInfo>;
