/**
 * The traffic hold of a migrating pod, driven through the pm-hold controller (bpf/pm-hold.c). Every call is
 * one short process that prints one JSON line; its shape is checked here (bpf/output.ts).
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { InvalidRequestError, NodeOperationError, ShapeError } from '../bus/errors.js';
import { parse, type Schema } from '../bus/schema.js';
import { run } from '../node-runtime/exec.js';
import {
  DetachResultSchema,
  HoldAttachmentSchema,
  ForgeResultSchema,
  HoldStatsSchema,
  SetModeResultSchema,
  type DetachResult,
  type ForgeResult,
  type HoldAttachment,
  type HoldFlow,
  type HoldModeFlag,
  type HoldSide,
  type HoldStats,
  type SetModeResult,
} from './output.js';

/** Loading and verifying two programs takes tens of milliseconds; seconds mean a stuck machine. */
export const HOLD_ATTACH_TIMEOUT_MS = 10_000;
/** set, stats and reopen are a few syscalls and run inside a freeze, where a slow answer is already a failure. */
export const HOLD_CONTROL_TIMEOUT_MS = 2_000;
/** A few netlink deletes and three unlinks. */
export const HOLD_DETACH_TIMEOUT_MS = 5_000;
/** A peer's delayed ACK (40 ms, when not kicked) plus a LAN round trip; waiting longer only postpones the freeze. */
export const HOLD_QUIESCE_TIMEOUT_MS = 100;
/** Each poll spawns pm-hold stats (a few ms); 2 ms apart keeps the wait close to the event. */
export const HOLD_QUIESCE_POLL_MS = 2;
/**
 * Bytes from a peer still unacknowledged by the pod this long after the kick are not on their way: the pod's
 * kernel is holding its ACK back (delayed ACK, 40 ms, for a reply its process is not about to send).
 */
export const HOLD_QUIESCE_ELICIT_AFTER_MS = 4;
/** pm-hold's exit code for a command line it refuses (PM_EXIT_USAGE). */
const EXIT_USAGE = 2;

/** The mode combinations a migration uses, in the order it uses them. */
export const HOLD_MODES = {
  /** Pass everything (the state after attach and after release). */
  none: [],
  /** Before the freeze: peers get window 0, finish what is in flight and wait in persist mode. */
  quiesce: ['zw'],
  /** During the freeze: nothing reaches the frozen (or not yet restored) pod, nothing leaves it. */
  freeze: ['zw', 'drop-in', 'drop-out'],
} as const satisfies Record<string, readonly HoldModeFlag[]>;

/** pm-hold as bpf/build.sh builds it into dist/native, unless PODMOTION_PM_HOLD names another binary. */
export function defaultHoldBinary(): string {
  // This file runs from <root>/dist/bpf/hold.js.
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  return process.env['PODMOTION_PM_HOLD'] ?? path.join(root, 'dist', 'native', 'pm-hold');
}

export interface HoldCallOptions {
  /** The pm-hold binary; defaults to {@link defaultHoldBinary}. */
  binary?: string;
}

export interface AttachHoldOptions extends HoldCallOptions {
  /** Network namespace holding the device: the pod's node. */
  netns: string;
  /** The node-side pod veth (pm<hash>). */
  dev: string;
  /** The pod's IPv4 address; only its traffic is held. */
  podIp: string;
  /** Directory on bpffs for this hold's maps, e.g. /sys/fs/bpf/podmotion/<migration>. */
  pin: string;
}

export interface DetachHoldOptions extends HoldCallOptions {
  netns: string;
  dev: string;
  pin: string;
}

export interface ForgeOptions extends HoldCallOptions {
  /** Where the segments are sent from (a namespace that routes to the peers and, for elicit, to the pod). */
  netns: string;
  /** Read flows from this hold's pinned map ... */
  pin?: string;
  /** ... or send for these flows (e.g. a holdStats() taken on the source node). */
  flows?: readonly HoldFlow[];
  /** Only flows of this pod address. */
  podIp?: string;
}

export interface ReopenOptions extends ForgeOptions {
  /** Forge an out-of-window probe toward the pod, so its restored socket sends the window update itself. */
  elicit?: boolean;
}

async function runHold<T>(schema: Schema<T>, args: string[], timeoutMs: number, binary?: string, input?: string): Promise<T> {
  const bin = binary ?? defaultHoldBinary();
  const res = await run(bin, args, { timeoutMs, okCodes: [0, EXIT_USAGE], ...(input === undefined ? {} : { input }) });
  if (res.code === EXIT_USAGE) throw new InvalidRequestError(res.stderr.trim() || `pm-hold ${args[0]}: bad arguments`);
  try {
    return parse(schema, JSON.parse(res.stdout) as unknown, `pm-hold ${args[0]} output`);
  } catch (err) {
    const why = err instanceof ShapeError ? err.message : `pm-hold ${args[0]} printed no JSON line`;
    throw new NodeOperationError(why, { cause: err });
  }
}

/** Loads the hold on a pod's node-side veth, mode none. Idempotent: maps (mode, flows) survive a re-attach. */
export function attachHold(o: AttachHoldOptions): Promise<HoldAttachment> {
  const args = ['attach', '--netns', o.netns, '--dev', o.dev, '--pod-ip', o.podIp, '--pin', o.pin];
  return runHold(HoldAttachmentSchema, args, HOLD_ATTACH_TIMEOUT_MS, o.binary);
}

/** Arms or releases the hold; an empty list passes everything. Resolves once the datapath obeys. */
export function setHoldMode(pin: string, mode: readonly HoldModeFlag[], o: HoldCallOptions = {}): Promise<SetModeResult> {
  const text = mode.length === 0 ? 'none' : mode.join(',');
  return runHold(SetModeResultSchema, ['set', '--pin', pin, '--mode', text], HOLD_CONTROL_TIMEOUT_MS, o.binary);
}

/** Mode, counters and every recorded flow. */
export function holdStats(pin: string, o: HoldCallOptions = {}): Promise<HoldStats> {
  return runHold(HoldStatsSchema, ['stats', '--pin', pin], HOLD_CONTROL_TIMEOUT_MS, o.binary);
}

/** A flow as a `--flows -` line (format in bpf/hold_forge.c), or undefined when it cannot be used. */
function flowLine(f: HoldFlow): string | undefined {
  const side = (s: HoldSide) => `${s.nxt} ${s.ack} ${s.win} ${s.tsval === undefined ? '- -' : `${s.tsval} ${s.tsecr ?? 0}`}`;
  const usable = (s: HoldSide) => s.seen && s.ackValid;
  if (!f.open || !usable(f.fromPod) || !usable(f.toPod)) return undefined;
  return `${f.pod} ${f.peer} ${side(f.fromPod)} ${side(f.toPod)}`;
}

function forge(command: 'reopen' | 'kick', o: ForgeOptions, elicit: boolean): Promise<ForgeResult> {
  const args = [command, '--netns', o.netns];
  let input: string | undefined;
  if (o.flows !== undefined) {
    args.push('--flows', '-');
    input = o.flows.flatMap((f) => flowLine(f) ?? []).join('\n') + '\n';
  } else if (o.pin !== undefined) {
    args.push('--pin', o.pin);
  } else {
    return Promise.reject(new InvalidRequestError(`${command} needs pin or flows`));
  }
  if (o.podIp !== undefined) args.push('--pod-ip', o.podIp);
  if (elicit) args.push('--elicit');
  return runHold(ForgeResultSchema, args, HOLD_CONTROL_TIMEOUT_MS, o.binary, input);
}

/**
 * Tells every held peer at once that the pod's window is open again (instead of at its next persist probe,
 * 0.2–1.6 s later). Call after the pod's sockets are restored and the hold is released: a peer that sends into
 * a namespace without its socket gets an RST. The TCP_REPAIR_OFF window probe does not do this (see README).
 */
export function reopen(o: ReopenOptions): Promise<ForgeResult> {
  return forge('reopen', o, o.elicit === true);
}

/**
 * Right after zero-window is armed: closes the window of idle flows and asks every peer for an immediate ACK,
 * so quiescence does not wait for the peers' delayed-ACK timers. The pod's sockets must exist.
 */
export function kick(o: ForgeOptions): Promise<ForgeResult> {
  return forge('kick', o, false);
}

/** Removes the filters (and the clsact qdisc if attach created it) and the pins. Idempotent; a gone device is fine. */
export function detachHold(o: DetachHoldOptions): Promise<DetachResult> {
  const args = ['detach', '--netns', o.netns, '--dev', o.dev, '--pin', o.pin];
  return runHold(DetachResultSchema, args, HOLD_DETACH_TIMEOUT_MS, o.binary);
}

/** Open flows with bytes in flight either way: a freeze starting now costs that side a retransmission timeout. */
export function unsettledFlows(stats: HoldStats): HoldFlow[] {
  return stats.flows.filter((f) => f.open && f.toPod.seen && (f.unackedFromPeer > 0 || f.unackedFromPod > 0));
}

export interface QuiesceOptions extends HoldCallOptions {
  timeoutMs?: number;
  /** Kick (see {@link kick}) from this namespace once, right away: the node's netns. */
  kickNetns?: string;
  /**
   * Where to ask the pod for ACKs it holds back (reopen --elicit): the pod's own netns, so the forged segment
   * meets no conntrack of the node's (a peer→pod segment there matches no entry of a DNATed flow, and the
   * node would take it for a new flow). Defaults to kickNetns.
   */
  elicitNetns?: string;
}

export interface QuiesceResult {
  settled: boolean;
  waitedMs: number;
  stats: HoldStats;
  /** Flows still unsettled when the wait ended (empty when settled). */
  pending: HoldFlow[];
}

/**
 * After arming zero-window, waits (at most timeoutMs) until no flow has bytes in flight either way. A flow
 * idle all along counts as settled; unless kicked, its peer has not been told window 0 and may still send into
 * the freeze (and then retransmit after an RTO). When kicked, bytes the pod leaves unacknowledged are
 * acknowledged on request (reopen --elicit) instead of after the pod's delayed-ACK timer.
 */
export async function waitQuiesced(pin: string, o: QuiesceOptions = {}): Promise<QuiesceResult> {
  const timeoutMs = o.timeoutMs ?? HOLD_QUIESCE_TIMEOUT_MS;
  const t0 = performance.now();
  const maxPolls = Math.ceil(timeoutMs / HOLD_QUIESCE_POLL_MS) + 1;
  if (o.kickNetns !== undefined) await kick({ netns: o.kickNetns, pin, binary: o.binary });
  let stats = await holdStats(pin, o);
  const elicitNetns = o.elicitNetns ?? o.kickNetns;
  let elicited = false;
  for (let poll = 0; poll < maxPolls; poll++) {
    const pending = unsettledFlows(stats);
    const waitedMs = performance.now() - t0;
    if (pending.length === 0 || waitedMs >= timeoutMs) return { settled: pending.length === 0, waitedMs, stats, pending };
    // A database backend waiting on a lock (whose holder's client cannot send under window 0) answers
    // nothing: ask the pod's kernel for the ACK now (an out-of-window segment gets one at once).
    if (elicitNetns !== undefined && !elicited && waitedMs >= HOLD_QUIESCE_ELICIT_AFTER_MS && pending.some((f) => f.unackedFromPeer > 0)) {
      elicited = true;
      await forge('reopen', { netns: elicitNetns, pin, binary: o.binary }, true);
    }
    await sleep(HOLD_QUIESCE_POLL_MS);
    stats = await holdStats(pin, o);
  }
  const pending = unsettledFlows(stats);
  return { settled: pending.length === 0, waitedMs: performance.now() - t0, stats, pending };
}
