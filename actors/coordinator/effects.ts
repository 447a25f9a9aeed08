/**
 * The migration machine's effects, as the coordinator performs them: each is a request to the source
 * node, the destination node or every node's network relay. Node operations are idempotent per
 * migration id, so a retried or resumed effect is safe.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { request } from '../../bus/rpc.js';
import { Subjects } from '../../bus/subjects.js';
import { InvalidRequestError, NodeOperationError, PodMotionError, PreconditionError } from '../../bus/errors.js';
import { sleep } from '../../common/clock.js';
import type { CtEntry, FreezeReply, InventoryReply, PrepareReply, RoundReply, SocketSeq } from '../../bus/node-migration.js';
import type { NodeRegistration } from '../../bus/messages.js';
import type { ProgressEvent } from '../../bus/api.js';
import { phaseTimeoutMs, type MigrationStatus, type WorkPhase } from '../../machines/index.js';
import { migCodecs as c } from './codecs.js';
import type { Clock } from '../../common/clock.js';
import { planVolumes } from '../storage/index.js';
import { startVolumeRounds, type VolumeRounds } from '../storage/rounds.js';

/** What effects need from the coordinator. */
export interface EffectDeps {
  nc: NatsConnection;
  /** Current node registrations (from the nodes bucket). */
  registrations(): Promise<Map<string, NodeRegistration>>;
  /** Overlay members that are not nodes (the local cluster's client namespace): route them here. */
  routeExtraMembers(podIp: string, vtepIp: string): Promise<void>;
  clock: Clock;
  /** Publishes progress within a phase (pre-copy rounds); never throws. */
  progress(event: ProgressEvent): Promise<void>;
  /** Per-migration secrets that must never enter a status (the image stream key). */
  secrets: Map<string, PrepareReply>;
  /** Per-connection sequence state before and after, kept out of the status (it can be large). */
  /** Per migration: sequence state of its connections at the freeze and after the restore, and its flows' conntrack entries. */
  sockets: Map<string, { before: SocketSeq[]; after: SocketSeq[]; conntrack?: CtEntry[] }>;
  /** A node missed a route change (see routes.ts). */
  routesOwed?: (node: string, podIp: string) => void;
  /** Volumes' rounds (bulk, then catch-up), started when the destination is ready and stopped at the freeze. */
  volumeSyncs?: Map<string, VolumeRounds>;
}

export type Json = Record<string, unknown>;
/** Connections listed in a status at most; the counts are always complete. */
export const STATUS_SAMPLE = 32;
/** Pre-copy limits (named, as KubeVirt names them): rounds, time, and when rounds count as converged or stalled. */
export const PRECOPY_MAX_ROUNDS = 8;
export const PRECOPY_MAX_MS = 120_000;
/** Converged when a round sends under 4 MiB, or under 5 % of the first round: the rest fits in the freeze. */
export const PRECOPY_CONVERGED_BYTES = 4 << 20;
export const PRECOPY_CONVERGED_FRACTION = 0.05;
/** With tracked writes: a round this small is what the freeze carries (~20 ms on the image stream). */
export const PRECOPY_TRACKED_CONVERGED_BYTES = 8 << 20;
/** Stalled when two rounds in a row send at least 90 % of the round before. */
export const PRECOPY_STALL_RATIO = 0.9;
/** How long a rollback keeps asking a node that does not answer (the RollingBack phase allows 300 s). */
export const ROLLBACK_RETRY_MS = 240_000;
export const ROLLBACK_RETRY_PAUSE_MS = 2_000;
/**
 * Verbs that answer within a second or two (a route, a counter read, a question): a request that gets no
 * answer in this long was lost, or its agent died with it, and waiting out the whole phase would only delay
 * the retry or rollback. Everything else (dump, restore, transfers) may take as long as its phase allows.
 */
export const QUICK_REQUEST_TIMEOUT_MS = 15_000;
/**
 * In a rollback, one attempt of a long operation (a move back's dump or restore, bounded by CRIU's own
 * 120 s) may take this long; its operations are idempotent, so an unanswered one is asked again.
 */
export const ROLLBACK_REQUEST_TIMEOUT_MS = 120_000;
const QUICK_VERBS: ReadonlySet<string> = new Set([
  'relay.route', 'relay.conntrack', 'mig.restored', 'mig.holdStats', 'mig.disengage', 'mig.inventory', 'mig.arm', 'mig.probe', 'mig.precopy.commit',
  // Kill, remove, resume: seconds at most, and idempotent, so a rollback asks again rather than wait.
  'mig.rollback', 'mig.cutover', 'mig.reclaim.prepare', 'mig.reclaim.abort',
]);
/** A route change on a node other than the migration's two: it is owed (and sent later) if not done by then. */
export const OTHER_NODE_ROUTE_TIMEOUT_MS = 5_000;
/** One effect: the machine's status in, a JSON-safe result out. */
export type Effect = (status: MigrationStatus, signal?: AbortSignal) => Promise<Json>;

/** The VTEP address of a node: the .0 of its pod CIDR (flannel's convention, see node-runtime/plan.ts). */
export function vtepOf(podCidr: string): string {
  return podCidr.split('/')[0]!;
}

function result<T>(status: MigrationStatus, phase: WorkPhase): T {
  return status.results[phase] as T;
}

/** Compares sequence state before (source, at freeze) and after (destination, restored). */
export function compareSockets(before: readonly SocketSeq[], after: readonly SocketSeq[]) {
  const key = (s: SocketSeq) => `${s.local}>${s.remote}`;
  const restored = new Map(after.map((s) => [key(s), s]));
  const connections = before.map((b) => {
    const a = restored.get(key(b));
    const seqDelta = a ? Math.max(Math.abs(a.sndSeq - b.sndSeq), Math.abs(a.rcvSeq - b.rcvSeq)) : undefined;
    return { local: b.local, remote: b.remote, preserved: a !== undefined && seqDelta === 0, seqDelta: seqDelta ?? -1 };
  });
  const seqDeltaMax = connections.reduce((m, x) => Math.max(m, x.seqDelta), 0);
  return { connections, preserved: connections.filter((x) => x.preserved).length, seqDeltaMax };
}

/** Whether this migration's memory moves (or moved) after the resume: PostCopy, or PreCopy switched to it. */
export function postCopied(s: MigrationStatus): boolean {
  if (s.spec.strategy === 'PostCopy') return true;
  return (s.results['PreCopyMemory'] as { then?: string } | undefined)?.then === 'PostCopy';
}

/**
 * Whether the restored pod's memory is filled in after it resumed: PostCopy (from the source), or a pre-copy
 * whose writes were tracked (from the pages that arrived before the resume, on the destination itself).
 */
export function lazilyRestored(s: MigrationStatus): boolean {
  return postCopied(s) || (s.results['FinalFreeze'] as { lazyFromRounds?: boolean } | undefined)?.lazyFromRounds === true;
}

/** Marks a failure with the node the pod serves from after it (the status shows it; routes follow it). */
export function servedFrom<E extends Error>(err: E, node: string): E & { servedFrom: string } {
  return Object.assign(err, { servedFrom: node });
}

/** Builds the machine's actors for one coordinator. */
export function createEffects(deps: EffectDeps) {
  const { nc } = deps;
  const ask = <Req, Res>(node: string, verb: Parameters<typeof Subjects.node>[1], reqC: { encode(v: Req): Uint8Array }, resC: { decode(d: Uint8Array): Res }, body: Req, status: MigrationStatus, phase: WorkPhase | 'RollingBack') =>
    request(nc, Subjects.node(node, verb), reqC as never, resC as never, body as never, {
      timeoutMs: Math.min(phaseTimeoutMs(status.spec, phase as never),
        QUICK_VERBS.has(verb) ? QUICK_REQUEST_TIMEOUT_MS : phase === 'RollingBack' ? ROLLBACK_REQUEST_TIMEOUT_MS : Infinity),
    }) as Promise<Res>;
  const step = (s: MigrationStatus) => ({ id: s.spec.id, pod: s.spec.pod });
  /**
   * A rollback must reach nodes that are restarting or cut off for a while: a request nobody answered (no
   * responders, or no reply in time) or that failed for a transient reason is asked again every few seconds,
   * until ROLLBACK_RETRY_MS have passed.
   * Node operations are idempotent per migration, so asking again is safe.
   */
  const askRetry: typeof ask = async (...args) => {
    const deadline = deps.clock.nowMs() + ROLLBACK_RETRY_MS;
    for (;;) {
      try {
        return await ask(...args);
      } catch (e) {
        // Unanswered (no responders, no reply in time) or a failure the node calls transient.
        if (!(e instanceof PodMotionError && e.retryable) || deps.clock.nowMs() >= deadline) throw e;
        await sleep(deps.clock, ROLLBACK_RETRY_PAUSE_MS);
      }
    }
  };
  const effect = (fn: (s: MigrationStatus, signal?: AbortSignal) => Promise<Json>) => fn;

  /**
   * Routes the pod IP to `node` on every overlay member. The `critical` nodes must succeed; a failure
   * elsewhere (a node going away) is reported and does not block the migration or its rollback.
   */
  async function routeEverywhere(s: MigrationStatus, podIp: string, node: string, phase: WorkPhase | 'RollingBack', critical: readonly string[],
    decidedAtMs?: number): Promise<{ updated: number; failed: string[] }> {
    let regs = await deps.registrations();
    // A rollback waits (bounded) for its critical nodes to be registered again after an agent restart.
    const deadline = deps.clock.nowMs() + ROLLBACK_RETRY_MS;
    while (phase === 'RollingBack' && critical.some((n) => !regs.has(n)) && deps.clock.nowMs() < deadline) {
      await sleep(deps.clock, ROLLBACK_RETRY_PAUSE_MS);
      regs = await deps.registrations();
    }
    const version = decidedAtMs ?? deps.clock.nowMs();
    const target = regs.get(node);
    if (!target) throw new PreconditionError(`node ${node} is not registered; cannot route ${podIp} to it`);
    const vtepIp = vtepOf(target.podCidr);
    const names = [...regs.keys()];
    // A rollback waits for its critical nodes to answer (they may be restarting). The others get a few seconds:
    // one slow or lost answer among a hundred nodes must not time the phase out; what they miss is owed.
    const body = { id: s.spec.id, pod: s.spec.pod, podIp, node, vtepIp, version };
    // Members that are not nodes (the local cluster's client) are routed at the same time as the nodes.
    const extra = deps.routeExtraMembers(podIp, vtepIp);
    extra.catch(() => {});
    const results = await Promise.allSettled(names.map((n) => !critical.includes(n)
      ? request(nc, Subjects.node(n, 'relay.route'), c.route, c.done, body, { timeoutMs: OTHER_NODE_ROUTE_TIMEOUT_MS })
      : (phase === 'RollingBack' ? askRetry : ask)(n, 'relay.route', c.route, c.done, body, s, phase)));
    const failed: string[] = [];
    results.forEach((r, i) => {
      if (r.status === 'rejected') {
        const n = names[i]!;
        if (critical.includes(n)) throw r.reason;
        failed.push(`${n}: ${(r.reason as Error).message}`);
        // The route reconciler sends it again until that node has it.
        deps.routesOwed?.(n, podIp);
      }
    });
    await extra;
    return { updated: names.length - failed.length, failed };
  }

  return {
    socketInventory: effect(async (s) => {
      const inv = await ask(s.spec.sourceNode, 'mig.inventory', c.step, c.inventory, step(s), s, 'SocketInventory');
      // A status stays small whatever the pod: counts plus a sample of the connections.
      return { ip: inv.ip, mac: inv.mac, initPid: inv.initPid, ...(inv.port !== undefined ? { port: inv.port } : {}),
        connections: inv.sockets.length, sample: inv.sockets.slice(0, STATUS_SAMPLE), ...(inv.volumes?.length ? { volumes: inv.volumes } : {}) };
    }),

    validate: effect(async (s) => {
      const regs = await deps.registrations();
      const src = regs.get(s.spec.sourceNode);
      const dst = regs.get(s.spec.destinationNode);
      if (s.spec.sourceNode === s.spec.destinationNode) throw new InvalidRequestError(`pod ${s.spec.pod} already runs on ${s.spec.destinationNode}`);
      if (!src) throw new PreconditionError(`source node ${s.spec.sourceNode} is not registered`);
      if (!dst) throw new PreconditionError(`destination node ${s.spec.destinationNode} is not registered`);
      for (const r of [src, dst]) {
        if (!r.capabilities.criuOk) throw new PreconditionError(`node ${r.node} has no working CRIU: ${r.capabilities.criuProblem ?? 'criu check failed'}`);
      }
      if ((s.spec.strategy === 'PostCopy' || s.spec.allowPostCopy) && !dst.capabilities.features['uffd-noncoop']) {
        throw new PreconditionError(`node ${dst.node} cannot take a PostCopy migration: its kernel lacks non-cooperative userfaultfd`);
      }
      // Each volume needs a storage tier that can move it; one that none accepts is refused here, with why.
      const inv = result<InventoryReply>(s, 'SocketInventory');
      let volumes;
      try {
        volumes = planVolumes(s.spec.pod, inv.volumes ?? []);
      } catch (e) {
        throw new InvalidRequestError((e as Error).message);
      }
      return { source: src.node, destination: dst.node, criu: dst.capabilities.criuVersion ?? '', kernel: dst.capabilities.kernel, volumes };
    }),

    prewarmDestination: effect(async (s) => {
      const inv = result<InventoryReply>(s, 'SocketInventory');
      const reply = await ask(s.spec.destinationNode, 'mig.prepare', c.prepare, c.prepareReply,
        { id: s.spec.id, pod: s.spec.pod, ip: inv.ip, mac: inv.mac, sourceNode: s.spec.sourceNode, lazy: s.spec.strategy === 'PostCopy' || s.spec.allowPostCopy === true,
          ...(inv.volumes?.length ? { volumes: inv.volumes } : {}) }, s, 'DestinationPrewarm');
      deps.secrets.set(s.spec.id, reply);
      // The storage-tier actor copies `local` volumes while memory is pre-copied: the bulk round starts now,
      // catch-up rounds follow until the freeze stops them (which then carries only the last one's changes).
      if (reply.volumes?.length && deps.volumeSyncs) {
        deps.volumeSyncs.get(s.spec.id)?.cancel();
        deps.volumeSyncs.set(s.spec.id, startVolumeRounds(
          () => ask(s.spec.sourceNode, 'vol.sync', c.volSync, c.volSyncReply, { id: s.spec.id, pod: s.spec.pod, target: reply }, s, 'PreCopyMemory'), deps.clock));
      }
      return { receiver: `${reply.host}:${reply.port}`, ...(reply.volumes?.length ? { volumes: reply.volumes.length } : {}) };
    }),

    preCopyMemory: effect(async (s, signal) => {
      const rounds: Array<RoundReply & { round: number; dirtyBytesPerSec: number }> = [];
      const t0 = deps.clock.nowMs();
      let stop = 'max-rounds';
      for (let round = 1; round <= PRECOPY_MAX_ROUNDS; round++) {
        // A cancelled or timed-out phase must not go on starting rounds behind its rollback.
        if (signal?.aborted) throw new PreconditionError('pre-copy stopped: the phase was cancelled');
        const ref = { ...step(s), round };
        const target = await ask(s.spec.destinationNode, 'mig.precopy.prepare', c.roundRef, c.prepareReply, ref, s, 'PreCopyMemory');
        const r = await ask(s.spec.sourceNode, 'mig.precopy.round', c.round, c.roundReply,
          { ...ref, target, ...(s.spec.bandwidthMbps !== undefined ? { bandwidthMbps: s.spec.bandwidthMbps } : {}) }, s, 'PreCopyMemory');
        await ask(s.spec.destinationNode, 'mig.precopy.commit', c.roundRef, c.done, ref, s, 'PreCopyMemory');
        const prev = rounds.at(-1);
        const sinceMs = prev ? r.scanMs + prev.transferMs : r.scanMs;
        rounds.push({ ...r, round, dirtyBytesPerSec: prev ? Math.round((r.newPages * 4096 * 1000) / Math.max(1, sinceMs)) : 0 });
        await deps.progress({
          type: 'progress', id: s.spec.id, phase: 'PreCopyMemory', round, atMs: deps.clock.nowMs(),
          dataProcessedBytes: rounds.reduce((a, x) => a + x.bytes, 0), dataRemainingBytes: r.bytes,
          dirtyMemoryRateBytes: rounds.at(-1)!.dirtyBytesPerSec,
          memoryTransferRateBytes: Math.round((r.bytes * 1000) / Math.max(1, r.transferMs)),
        });
        const first = rounds[0]!.bytes;
        // Rounds that read only what was written (tracked) cost little: they go on down to a fixed bound, what
        // the freeze sends in a few tens of milliseconds; each round more only resends what the pod rewrote.
        const converged = r.tracked ? PRECOPY_TRACKED_CONVERGED_BYTES : Math.max(PRECOPY_CONVERGED_BYTES, first * PRECOPY_CONVERGED_FRACTION);
        if (round > 1 && r.bytes <= converged) { stop = 'converged'; break; }
        // Stall, as KubeVirt judges it: rounds no longer shrink (the pod dirties memory as fast as it moves).
        if (rounds.length >= 3 && rounds.slice(-2).every((x, i) => x.bytes >= PRECOPY_STALL_RATIO * rounds[rounds.length - 3 + i]!.bytes)) { stop = 'stalled'; break; }
        if (deps.clock.nowMs() - t0 > PRECOPY_MAX_MS) { stop = 'time-limit'; break; }
      }
      const sent = rounds.reduce((a, x) => a + x.bytes, 0);
      // Not converged: what is left does not fit a short freeze; with allowPostCopy it moves after the resume.
      const then = stop !== 'converged' && s.spec.allowPostCopy ? 'PostCopy' : 'stop-and-copy';
      return { rounds: rounds.slice(0, STATUS_SAMPLE), roundCount: rounds.length, bytesSent: sent, stopped: stop, then,
        memoryBytes: rounds[0]!.pages * 4096, lastRoundBytes: rounds.at(-1)!.bytes };
    }),

    armHold: effect(async (s) => {
      // The freeze comes next: no volume round starts any more (FinalFreeze waits for the one in flight).
      deps.volumeSyncs?.get(s.spec.id)?.cancel();
      return { ...(await ask(s.spec.sourceNode, 'mig.arm', c.step, c.arm, step(s), s, 'ZeroWindowArm')) };
    }),

    freezeAndCapture: effect(async (s) => {
      const target = deps.secrets.get(s.spec.id);
      if (!target) throw new PreconditionError('the destination image receiver is unknown (coordinator restarted?)');
      // Volumes: the rounds before must be over before the last one (with the pod frozen) can start.
      const rounds = deps.volumeSyncs?.get(s.spec.id);
      const synced = target.volumes?.length
        ? await (rounds?.stop() ?? ask(s.spec.sourceNode, 'vol.sync', c.volSync, c.volSyncReply, { id: s.spec.id, pod: s.spec.pod, target }, s, 'FinalFreeze')
          .then((bulk) => ({ bulk, rounds: 1, last: bulk, failed: undefined as string | undefined })))
        : undefined;
      deps.volumeSyncs?.delete(s.spec.id);
      const bulk = synced?.bulk;
      const r = await ask(s.spec.sourceNode, 'mig.freeze', c.freeze, c.freezeReply,
        { ...step(s), networkContinuity: s.spec.networkContinuity, target, lazy: postCopied(s),
          ...(s.spec.bandwidthMbps !== undefined ? { bandwidthMbps: s.spec.bandwidthMbps } : {}) }, s, 'FinalFreeze');
      const { sockets, conntrack, ...rest } = r;
      deps.sockets.set(s.spec.id, { before: sockets, after: [], ...(conntrack ? { conntrack } : {}) });
      return { ...rest, connections: sockets.length, conntrackEntries: conntrack?.length ?? 0, ...(bulk ? { volumeBulkFiles: bulk.files, volumeBulkBytes: bulk.bytes, volumeBulkMs: bulk.ms } : {}),
        ...(synced && synced.rounds > 1 ? { volumeCatchUpRounds: synced.rounds - 1, volumeLastCatchUpBytes: synced.last.bytes } : {}),
        ...(synced?.failed ? { volumeCatchUpFailed: synced.failed } : {}) };
    }),

    handoffOverlay: effect(async (s, signal) => {
      // The route change is decided now: a rollback decided while the conntrack step below runs is newer and wins.
      const decidedAtMs = deps.clock.nowMs();
      const inv = result<InventoryReply>(s, 'SocketInventory');
      // The destination has the flows' conntrack entries before any packet of theirs is routed to it: one that
      // arrived first would be picked up mid-stream (or be INVALID), and its entry would be in the way.
      const entries = deps.sockets.get(s.spec.id)?.conntrack ?? [];
      const ct = entries.length
        ? await ask(s.spec.destinationNode, 'relay.conntrack', c.conntrack, c.conntrackReply, { ...step(s), podIp: inv.ip, entries }, s, 'OverlayHandoff')
        : undefined;
      if (signal?.aborted) throw new PreconditionError('OverlayHandoff abandoned: the migration is rolling back');
      // The source forgets them meanwhile: the pod's packets DNATed on the destination may come back through the
      // source (an endpoint there), and would collide with its old entries. A rollback gives them back.
      const [r, forgot] = await Promise.all([
        routeEverywhere(s, inv.ip, s.spec.destinationNode, 'OverlayHandoff', [s.spec.sourceNode, s.spec.destinationNode], decidedAtMs),
        entries.length
          ? ask(s.spec.sourceNode, 'relay.conntrack', c.conntrack, c.conntrackReply, { ...step(s), podIp: inv.ip, entries: [], forget: true }, s, 'OverlayHandoff')
            .then((x) => x.forgotten ?? 0, (e: Error) => `not forgotten on the source: ${e.message}`)
          : undefined,
      ]);
      return { podIp: inv.ip, node: s.spec.destinationNode, nodesUpdated: r.updated, nodesFailed: r.failed,
        ...(ct ? { conntrackCarried: ct.inserted, conntrackMs: Math.round(ct.ms), conntrackSourceForgot: forgot ?? 0 } : {}) };
    }),

    restore: effect(async (s) => {
      const r = await ask(s.spec.destinationNode, 'mig.restore', c.restore, c.restoreReply,
        { ...step(s), sourceNode: s.spec.sourceNode, networkContinuity: s.spec.networkContinuity }, s, 'Restore');
      const frozen = result<FreezeReply>(s, 'FinalFreeze');
      const seqs = deps.sockets.get(s.spec.id);
      if (seqs) seqs.after = r.sockets;
      const { sockets, ...rest } = r;
      return { ...rest, connections: sockets.length, freezeMs: Math.round(r.resumedAtMs - frozen.frozenAtMs) };
    }),

    disengageHold: effect(async (s) => ({ ...(await ask(s.spec.destinationNode, 'mig.disengage', c.disengageReq, c.disengage, { ...step(s), sourceNode: s.spec.sourceNode }, s, 'DisengageHold')) })),

    verifyTcp: effect(async (s) => {
      const seqs = deps.sockets.get(s.spec.id);
      if (!seqs) throw new PreconditionError('the sequence state read at the freeze is unknown (coordinator restarted?)');
      const { before, after } = seqs;
      const listed = result<{ connections: number }>(s, 'SocketInventory').connections;
      // Connections established at the freeze with no sequence state read were not checkpointed as TCP
      // connections this build understands (IPv6, say): verification must not pass without them. Those
      // closed between the inventory and the freeze are not counted.
      const established = result<{ established?: number }>(s, 'FinalFreeze').established ?? listed;
      if (before.length < established) throw new PreconditionError(`TCP verification failed: no sequence state read for ${established - before.length} of ${established} connections`);
      const cmp = compareSockets(before, after);
      const [src, dst] = await Promise.all([
        ask(s.spec.sourceNode, 'mig.holdStats', c.step, c.holdStats, step(s), s, 'TCPVerifying'),
        ask(s.spec.destinationNode, 'mig.holdStats', c.step, c.holdStats, step(s), s, 'TCPVerifying'),
      ]);
      if (!src.attached || !dst.attached) throw new PreconditionError('TCP verification failed: a traffic hold is not attached, RSTs cannot be counted');
      const allRst = src.rstToPod + src.rstFromPod + dst.rstToPod + dst.rstFromPod;
      // What counts is a RST on a connection that moved. Others are the pod's ended connections (their sockets
      // are not restored, so a peer's late segment is answered with RST) and are reported apart. A node that
      // cannot tell them apart has every RST counted.
      const perFlow = src.rstMigrated !== undefined && dst.rstMigrated !== undefined;
      const rst = perFlow ? src.rstMigrated! + dst.rstMigrated! : allRst;
      const out = { connections: before.length, preserved: cmp.preserved, seqDeltaMax: cmp.seqDeltaMax, rst, ...(perFlow ? { rstOtherPackets: allRst } : {}), inventoried: listed,
        perConnection: cmp.connections.slice(0, STATUS_SAMPLE) };
      if (cmp.preserved !== before.length || rst > 0) {
        throw new PreconditionError(`TCP verification failed: ${cmp.preserved}/${before.length} connections preserved, seq_delta max ${cmp.seqDeltaMax}, ${rst} RST`);
      }
      return out;
    }),

    verifyService: effect(async (s) => {
      const inv = result<InventoryReply>(s, 'SocketInventory');
      let probe: Json = { probed: false, note: 'the pod declares no port' };
      if (inv.port !== undefined) {
        const r = await ask(s.spec.destinationNode, 'mig.probe', c.probe, c.probeReply, { ...step(s), ip: inv.ip, port: inv.port }, s, 'ServiceVerifying');
        if (!r.ok) throw new PreconditionError(`pod ${s.spec.pod} does not answer on ${inv.ip}:${inv.port} after restore`);
        probe = { probed: true, ms: r.ms };
      }
      if (!lazilyRestored(s)) return probe;
      // PostCopy: the pod is whole only once every page has arrived, and until then the source copy holds
      // the rest. A failure here is a pod lost after it resumed, which the rollback reports as such.
      const pc = await ask(s.spec.destinationNode, 'mig.postcopy.finish', c.step, c.postcopy, step(s), s, 'ServiceVerifying');
      // A tracked pre-copy: every page was on the destination before the resume; it has now been filled in.
      if (!postCopied(s)) return { ...probe, lazyFillBytes: pc.bytes, lazyFillMs: Math.round(pc.ms) };
      await deps.progress({
        type: 'progress', id: s.spec.id, phase: 'ServiceVerifying', round: 1, atMs: deps.clock.nowMs(),
        dataProcessedBytes: pc.bytes, dataRemainingBytes: 0, dirtyMemoryRateBytes: 0,
        memoryTransferRateBytes: Math.round((pc.bytes * 1000) / Math.max(1, pc.ms)),
      });
      return { ...probe, postCopyBytes: pc.bytes, postCopyMs: Math.round(pc.ms), postCopyAfterResumeMs: Math.round(pc.afterResumeMs) };
    }),

    cutover: effect(async (s) => {
      // The destination takes the pod first (its record loses `incoming`): if removing the source copy then
      // fails, the pod is still served and listed, and only a frozen, silent copy is left to remove.
      await ask(s.spec.destinationNode, 'mig.cutover', c.role, c.done, { ...step(s), role: 'destination' }, s, 'Cutover');
      await ask(s.spec.sourceNode, 'mig.cutover', c.role, c.done, { ...step(s), role: 'source' }, s, 'Cutover');
      deps.secrets.delete(s.spec.id);
      deps.sockets.delete(s.spec.id);
      return { node: s.spec.destinationNode };
    }),

    rollback: effect(async (s, signal) => {
      // No more volume rounds toward a destination that is being given up.
      deps.volumeSyncs?.get(s.spec.id)?.cancel();
      deps.volumeSyncs?.delete(s.spec.id);
      // The machine gave up on this rollback (its phase timed out): nothing destructive may follow.
      const stillOn = () => {
        if (signal?.aborted) throw new PreconditionError('rollback abandoned: its phase ended');
      };
      const steps: string[] = [];
      // Once restored, the destination has served: its state is the pod's state now, so it moves back.
      // Only a restore can have made a destination copy that served; if one began and the destination does
      // not answer, nobody can say whether resuming the source would make two copies: fail instead (I2).
      const restored = s.conditions.some((x) => x.type === 'Restore') &&
        (await askRetry(s.spec.destinationNode, 'mig.restored', c.step, c.done, step(s), s, 'RollingBack')).done;
      const warnings: string[] = [];
      if (restored && lazilyRestored(s)) {
        // A restored PostCopy copy can move back only if all its memory arrived. If not, its missing pages
        // are gone with the page channel and the source copy is stale (the destination served since): the
        // pod is lost, and resuming either copy would serve wrong state. Both are removed; nothing resumes.
        const finished = await askRetry(s.spec.destinationNode, 'mig.postcopy.finish', c.step, c.postcopy, step(s), s, 'RollingBack')
          .then(() => undefined, (e: Error) => e.message);
        if (finished !== undefined) {
          await askRetry(s.spec.destinationNode, 'mig.rollback', c.role, c.done, { ...step(s), role: 'destination' }, s, 'RollingBack').catch((e: Error) => warnings.push(`destination: ${e.message}`));
          await askRetry(s.spec.sourceNode, 'mig.cutover', c.role, c.done, { ...step(s), role: 'source' }, s, 'RollingBack').catch((e: Error) => warnings.push(`source: ${e.message}`));
          deps.secrets.delete(s.spec.id);
          deps.sockets.delete(s.spec.id);
          throw new NodeOperationError(`${postCopied(s) ? 'post-copy' : 'filling in memory from the pre-copied pages'} failed after pod ${s.spec.pod} resumed on ${s.spec.destinationNode} (${finished}); the pod is lost: its restored copy lacked memory and was killed, and the stale source copy on ${s.spec.sourceNode} was removed${warnings.length ? `; ${warnings.join('; ')}` : ''}`);
        }
      }
      if (restored) {
        const inv = s.results['SocketInventory'] as InventoryReply;
        /**
         * The move back failed for sure (the node said so): the destination copy holds the pod's newest state, so
         * it resumes where it is and is served from there; the stale source copy goes. Unanswered to the end,
         * a step may have worked: resuming the destination could make two copies, so the rollback fails instead.
         */
        const stayOnDestination = async (e: unknown): Promise<never> => {
          if (!(e instanceof PodMotionError) || e.code === 'TIMEOUT' || (e.code === 'NOT_FOUND' && e.retryable)) throw e;
          stillOn();
          await routeEverywhere(s, inv.ip, s.spec.destinationNode, 'RollingBack', [s.spec.destinationNode]);
          const note = (await askRetry(s.spec.destinationNode, 'mig.reclaim.abort', c.step, c.done, step(s), s, 'RollingBack')).note;
          await askRetry(s.spec.sourceNode, 'mig.cutover', c.role, c.done, { ...step(s), role: 'source' }, s, 'RollingBack').catch(() => {});
          throw servedFrom(new NodeOperationError(`moving the pod back failed (${(e as Error).message}); it serves from ${s.spec.destinationNode} (${note ?? 'resumed'})`), s.spec.destinationNode);
        };
        const target = await askRetry(s.spec.sourceNode, 'mig.reclaim.prepare', c.step, c.prepareReply, step(s), s, 'RollingBack');
        const froze = await askRetry(s.spec.destinationNode, 'mig.reclaim.freeze', c.reclaimFreeze, c.freezeReply, { ...step(s), target }, s, 'RollingBack')
          .catch(stayOnDestination);
        steps.push(`destination checkpointed (${froze.dumpMs} ms)`);
        // The source's entries of the pod's flows are as old as the freeze: the destination's go back with the pod.
        // Best effort: a flow without its entry is picked up again; the pod must not be stranded for it.
        if (froze.conntrack?.length) {
          await askRetry(s.spec.sourceNode, 'relay.conntrack', c.conntrack, c.conntrackReply, { ...step(s), podIp: inv.ip, entries: froze.conntrack }, s, 'RollingBack')
            .catch((e: Error) => steps.push(`conntrack entries not carried back: ${e.message}`));
        }
        await routeEverywhere(s, inv.ip, s.spec.sourceNode, 'RollingBack', [s.spec.sourceNode, s.spec.destinationNode]);
        steps.push('routes returned');
        // If the source's restore fails, the source copy is gone and the stopped destination copy is the pod.
        const back = await askRetry(s.spec.sourceNode, 'mig.reclaim.restore', c.reclaimRestore, c.restoreReply,
          { ...step(s), destinationNode: s.spec.destinationNode, networkContinuity: s.spec.networkContinuity }, s, 'RollingBack')
          .catch(stayOnDestination);
        steps.push(`restored on the source (freeze ${Math.round(back.resumedAtMs - froze.frozenAtMs)} ms)`);
        await askRetry(s.spec.destinationNode, 'mig.rollback', c.role, c.done, { ...step(s), role: 'destination' }, s, 'RollingBack');
        steps.push('destination discarded');
        deps.secrets.delete(s.spec.id);
        deps.sockets.delete(s.spec.id);
        return { steps, reclaimed: true, connections: back.sockets.length };
      }
      // No copy ran on the destination: the source resumes first, whatever happens there (a dead destination
      // agent must not leave the pod frozen); then the destination is cleaned up, as soon as it answers.
      const inv = s.results['SocketInventory'] as InventoryReply | undefined;
      if (inv && s.conditions.some((x) => x.type === 'OverlayHandoff')) {
        const r = await routeEverywhere(s, inv.ip, s.spec.sourceNode, 'RollingBack', [s.spec.sourceNode]);
        warnings.push(...r.failed.map((f) => `route not returned on ${f}`));
        steps.push('routes returned');
        // The source handed its flows' conntrack entries over at the handoff: they come back before it resumes.
        const entries = deps.sockets.get(s.spec.id)?.conntrack ?? [];
        if (entries.length) {
          await askRetry(s.spec.sourceNode, 'relay.conntrack', c.conntrack, c.conntrackReply, { ...step(s), podIp: inv.ip, entries }, s, 'RollingBack')
            .then(() => steps.push('conntrack entries returned'), (e: Error) => warnings.push(`conntrack entries not returned to the source: ${e.message}`));
        }
      }
      stillOn();
      await askRetry(s.spec.sourceNode, 'mig.rollback', c.role, c.done, { ...step(s), role: 'source' }, s, 'RollingBack');
      steps.push('source resumed');
      try {
        await askRetry(s.spec.destinationNode, 'mig.rollback', c.role, c.done, { ...step(s), role: 'destination' }, s, 'RollingBack');
        steps.push('destination discarded');
      } catch (e) {
        warnings.push(`destination ${s.spec.destinationNode} not cleaned up: ${(e as Error).message}`);
      }
      deps.secrets.delete(s.spec.id);
      deps.sockets.delete(s.spec.id);
      return { steps, warnings };
    }),
  };
}
