/**
 * A node's connection-tracking entries for a pod's flows, carried to the node the pod moves to.
 *
 * Where a node filters on conntrack state (kube-proxy drops `ctstate INVALID` in FORWARD) the entries of the
 * pod's flows live in the node's namespace, not the pod's: CRIU does not see them. Without the entry on the
 * destination, its first packet of a flow is picked up mid-stream (or INVALID with tcp_loose=0), and a
 * pod's flow to a Service address is DNATed afresh, to any endpoint. Worse, a node the pod comes back to
 * still holds the entries of its last stay, whose sequence windows are long behind: every packet is
 * INVALID and dropped. So the source lists the entries at the freeze, the destination replaces whatever it
 * has of the pod's flows with them before traffic is routed to it, and the node left behind forgets them.
 */
import { NodeOperationError } from '../bus/errors.js';
import { inNetns } from './exec.js';
import { POD_GATEWAY } from './constants.js';

/** Listing or loading a few thousand entries is milliseconds; a hang means netlink trouble. */
const CONNTRACK_TIMEOUT_MS = 10_000;

export interface CtTuple {
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

/** One conntrack entry as the `conntrack` tool prints it (IPv4 TCP or UDP). */
export interface CtEntry {
  proto: 'tcp' | 'udp';
  /** TCP state (ESTABLISHED, FIN_WAIT, ...); absent for UDP. */
  state?: string;
  timeoutS: number;
  orig: CtTuple;
  reply: CtTuple;
  assured: boolean;
  seenReply: boolean;
  mark: number;
}

/** The kernel's default for an established TCP entry (5 days): no carried entry lives longer. */
const MAX_TIMEOUT_S = 432_000;
/** TCP states not worth carrying: the flow is over. */
const ENDED_STATES = new Set(['TIME_WAIT', 'CLOSE']);

/** Parses `conntrack -L` output (default format); lines that are not IPv4 TCP/UDP entries are skipped. */
export function parseConntrack(text: string): CtEntry[] {
  const out: CtEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^(tcp|udp)\s+\d+\s+(\d+)\s+(?:([A-Z][A-Z0-9_]*)\s+)?(.*)$/.exec(line.trim());
    if (!m) continue;
    const rest = m[4]!;
    const kv = [...rest.matchAll(/\b(src|dst|sport|dport|mark)=(\S+)/g)].map((x) => [x[1]!, x[2]!] as const);
    const tuples: Array<Partial<Record<string, string>>> = [{}, {}];
    let t = 0;
    let mark = 0;
    for (const [k, v] of kv) {
      if (k === 'mark') {
        mark = Number(v);
        continue;
      }
      // The second `src=` starts the reply tuple.
      if (k === 'src' && tuples[0]!['src'] !== undefined) t = 1;
      tuples[t]![k] = v;
    }
    const orig = tupleOf(tuples[0]!);
    const reply = tupleOf(tuples[1]!);
    if (!orig || !reply) continue;
    out.push({
      proto: m[1] as 'tcp' | 'udp', ...(m[3] ? { state: m[3] } : {}), timeoutS: Number(m[2]), orig, reply,
      assured: rest.includes('[ASSURED]'), seenReply: !rest.includes('[UNREPLIED]'), mark: Number.isFinite(mark) ? mark : 0,
    });
  }
  return out;
}

function tupleOf(t: Partial<Record<string, string>>): CtTuple | undefined {
  const ok = (a: string | undefined) => a !== undefined && /^\d{1,3}(\.\d{1,3}){3}$/.test(a);
  if (!ok(t['src']) || !ok(t['dst'])) return undefined;
  const sport = Number(t['sport']);
  const dport = Number(t['dport']);
  if (!Number.isInteger(sport) || !Number.isInteger(dport)) return undefined;
  return { src: t['src']!, dst: t['dst']!, sport, dport };
}

/** The NAT an entry applies, read from its tuples: DNAT to where the reply comes from, SNAT to where it goes. */
export function natOf(e: CtEntry): { dnat?: string; snat?: string } {
  const dnat = e.reply.src !== e.orig.dst || e.reply.sport !== e.orig.dport ? `${e.reply.src}:${e.reply.sport}` : undefined;
  const snat = e.reply.dst !== e.orig.src || e.reply.dport !== e.orig.sport ? `${e.reply.dst}:${e.reply.dport}` : undefined;
  return { ...(dnat ? { dnat } : {}), ...(snat ? { snat } : {}) };
}

/** The pod's end's peer address in an entry's original direction. */
function peerOf(e: CtEntry, podIp: string): string {
  return e.orig.src === podIp ? e.orig.dst : e.orig.src;
}

/**
 * The entries of a pod's live flows (the pod is an end of the original direction, the flow is not over, its
 * peer is not the node itself: the pod's gateway is another host on every node), split into those that can
 * move with the pod and those SNATed to an address of this node, whose replies keep coming here.
 */
export function carriable(entries: readonly CtEntry[], podIp: string, nodeAddrs: ReadonlySet<string>): { carry: CtEntry[]; stuck: CtEntry[] } {
  // A TCP entry without a state cannot be recreated (`conntrack -I -p tcp` needs one): it is left to pickup.
  const live = entries.filter((e) => (e.orig.src === podIp || e.orig.dst === podIp) && (e.proto !== 'tcp' || e.state !== undefined) &&
    !(e.state && ENDED_STATES.has(e.state)) && peerOf(e, podIp) !== POD_GATEWAY);
  const isStuck = (e: CtEntry) => nodeAddrs.has(natOf(e).snat?.split(':')[0] ?? '');
  return { carry: live.filter((e) => !isStuck(e)), stuck: live.filter(isStuck) };
}

/**
 * Entries of a pod's flows a node no longer serves the pod from can forget: all but a plain flow to a peer
 * the node itself still serves (that peer's packets still pass through here, and match it).
 */
export function forgettable(entries: readonly CtEntry[], podIp: string, localPeers: ReadonlySet<string>): CtEntry[] {
  return entries.filter((e) => (e.orig.src === podIp || e.orig.dst === podIp) &&
    !(localPeers.has(peerOf(e, podIp)) && !natOf(e).dnat && !natOf(e).snat));
}

function tupleArgs(e: CtEntry): string[] {
  return ['-p', e.proto, '-s', e.orig.src, '-d', e.orig.dst, '--sport', String(e.orig.sport), '--dport', String(e.orig.dport)];
}

/** A `conntrack -R` line deleting the entry of this flow (whatever its state), matched on the original tuple. */
export function deleteLine(e: CtEntry): string {
  return ['-D', ...tupleArgs(e)].join(' ');
}

/**
 * A `conntrack -R` line creating the entry, with its NAT, state, status, mark and remaining timeout. A NATed
 * entry is given the reply tuple it had before translation and its NAT: the kernel derives the translated
 * reply itself, and sets the NAT status bits only when that changed the tuple (given the translated reply
 * directly, the entry would carry no translation and pass packets untranslated).
 */
export function insertLine(e: CtEntry): string {
  const nat = natOf(e);
  const reply = nat.dnat || nat.snat ? { src: e.orig.dst, dst: e.orig.src, sport: e.orig.dport, dport: e.orig.sport } : e.reply;
  const status = [e.assured ? 'ASSURED' : '', e.seenReply ? 'SEEN_REPLY' : ''].filter(Boolean).join(',');
  return ['-I', ...tupleArgs(e),
    '-r', reply.src, '-q', reply.dst, '--reply-port-src', String(reply.sport), '--reply-port-dst', String(reply.dport),
    ...(e.state ? ['--state', e.state] : []), ...(status ? ['-u', status] : []), '-t', String(Math.min(MAX_TIMEOUT_S, Math.max(1, e.timeoutS))), '-m', String(e.mark),
    ...(nat.dnat ? ['--dst-nat', nat.dnat] : []), ...(nat.snat ? ['--src-nat', nat.snat] : []),
  ].join(' ');
}

/** Every IPv4 TCP/UDP entry of a namespace with `ip` at an end of its original direction. */
export async function listEntries(netns: string, ip: string): Promise<CtEntry[]> {
  const [bySrc, byDst] = await Promise.all(['-s', '-d'].map((flag) =>
    inNetns(netns, 'conntrack', ['-L', '-f', 'ipv4', flag, ip], { timeoutMs: CONNTRACK_TIMEOUT_MS }).then((r) => parseConntrack(r.stdout))));
  return [...bySrc!, ...byDst!.filter((e) => e.orig.src !== ip)];
}

/** Runs `conntrack -R -` over the lines (one process, one netlink socket); it stops at the first failure. */
async function loadBatch(netns: string, lines: readonly string[]): Promise<void> {
  if (lines.length === 0) return;
  await inNetns(netns, 'conntrack', ['-R', '-'], { input: lines.join('\n') + '\n', timeoutMs: CONNTRACK_TIMEOUT_MS });
}

/**
 * Deletes every entry with `ip` at an end of its original direction: two table walks whatever their number
 * (a `-D` per entry walks the table once each). Exit 1 means there was none.
 */
async function deleteAll(netns: string, ip: string): Promise<void> {
  for (const flag of ['-s', '-d']) await inNetns(netns, 'conntrack', ['-D', '-f', 'ipv4', flag, ip], { okCodes: [0, 1], timeoutMs: CONNTRACK_TIMEOUT_MS });
}

/**
 * Creates the carried entries. A packet of one of the flows may have made an entry here first (a copy of the pod
 * that served here and moves back, or a peer that routed here early): then the pod's entries are all deleted
 * and the carried ones created again, and checked.
 */
export async function insertEntries(netns: string, podIp: string, carried: readonly CtEntry[]): Promise<{ retried: string | undefined }> {
  const lines = carried.map(insertLine);
  let retried: string | undefined;
  try {
    await loadBatch(netns, lines);
  } catch (e) {
    retried = (e as Error).message;
    await deleteAll(netns, podIp);
    await loadBatch(netns, lines);
  }
  if (retried === undefined) return { retried };
  // After a second pass every carried flow must have its entry, as carried (a NAT that did not take would show
  // in its reply tuple); a clean first pass is all conntrack's own word (it stops at the first failure).
  const have = new Set((await listEntries(netns, podIp)).map(flowKey));
  const missing = carried.filter((e) => !have.has(flowKey(e)));
  if (missing.length > 0) throw new NodeOperationError(`conntrack: ${missing.length} of ${carried.length} carried entries are not in place (first: ${insertLine(missing[0]!)})`);
  return { retried };
}

/** A flow's identity in a listing: both tuples, so an entry picked up in the other direction does not pass for it. */
function flowKey(e: CtEntry): string {
  const t = (x: CtTuple) => `${x.src}:${x.sport}>${x.dst}:${x.dport}`;
  return `${e.proto} ${t(e.orig)} ${t(e.reply)}`;
}

/** Deletes the pod's flows' entries a node no longer needs; returns how many. */
export async function forgetEntries(netns: string, podIp: string, localPeers: ReadonlySet<string>): Promise<number> {
  const all = await listEntries(netns, podIp);
  const gone = forgettable(all, podIp, localPeers);
  if (gone.length === 0) return 0;
  // Usually none is kept, and two walks delete them all; otherwise one by one.
  if (gone.length === all.length) await deleteAll(netns, podIp);
  else await loadBatch(netns, gone.map(deleteLine));
  return gone.length;
}
