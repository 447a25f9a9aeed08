/** What the node actors need from the traffic hold (bpf/), as one small interface they can be tested against. */
export type HoldMode = 'zw' | 'drop-in' | 'drop-out';

export interface HoldCounters {
  rstToPod: number;
  rstFromPod: number;
  droppedToPod: number;
  droppedFromPod: number;
}

export interface HoldOps {
  /** Attaches the hold to a pod's node-side veth (idempotent) with the given modes. */
  attach(opts: { nodeNetns: string; dev: string; podIp: string; pin: string; modes: HoldMode[] }): Promise<void>;
  setModes(pin: string, modes: HoldMode[]): Promise<void>;
  /**
   * Waits (bounded) until no peer has bytes in flight toward the pod under the zero window; kicks the peers
   * from `kickNetns` (the node's) and asks the pod for held-back ACKs from `podNetns`.
   */
  quiesce(pin: string, timeoutMs: number, netns: { kickNetns: string; podNetns: string }): Promise<{ settled: boolean; waitedMs: number }>;
  counters(pin: string): Promise<HoldCounters | undefined>;
  /** Flows ("pod ip:port|peer ip:port") on which a RST passed the hold, either way; undefined without a hold. */
  resets(pin: string): Promise<Set<string> | undefined>;
  /** Sends, from `netns`, a window-opening ACK for every flow the hold at `flowsPin` recorded. */
  reopen(opts: { netns: string; flowsPin: string }): Promise<number>;
  /** Removes the hold (idempotent; a device already gone is fine). */
  detach(opts: { nodeNetns: string; dev: string; pin: string }): Promise<void>;
}
