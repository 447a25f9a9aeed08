/**
 * A simulated node agent: the migration verbs of actors/node/ (source, destination, relay) over a model of
 * what a node holds. Requests and replies go through the real codecs, so the coordinator's effects cannot
 * tell it from a real agent. Each operation may fail (before or after doing its work), hang or be slow, as
 * the run's fault rates say.
 *
 * What survives an agent crash is what a real node keeps on disk or in the kernel: pod copies (processes and
 * namespaces), images, holds, routes. Open receivers, cached replies and reclaim targets are the agent's
 * memory and are lost, as in actors/node/state.ts.
 */
import { NodeOperationError, NotFoundError, InvalidRequestError, PreconditionError } from '../bus/errors.js';
import type { Codec } from '../bus/codec.js';
import { Subjects } from '../bus/subjects.js';
import { MIG_VERBS, type FreezeReply, type MigVerb, type PrepareReply, type RestoreReply, type SocketSeq } from '../bus/node-migration.js';
import { migCodecs as c } from '../actors/coordinator/codecs.js';
import type { Rng } from './rng.js';
import type { Scheduler } from './scheduler.js';
import type { SimBus } from './bus.js';

/** Steps that move a migration forward: none may act once it was rolled back or cut over on the node. */
const FORWARD_VERBS: ReadonlySet<string> = new Set(['mig.prepare', 'mig.precopy.prepare', 'mig.precopy.round', 'mig.arm', 'mig.freeze', 'mig.restore', 'mig.disengage']);

/** One copy of a pod on a node. `seq` stands for its TCP connections' sequence state. */
export interface Copy {
  state: 'running' | 'stopped' | 'empty';
  seq: number;
  /** Restored (or being prepared) here by this migration and not yet taken over at cutover. */
  incoming?: string;
  /** Moved back here by this migration's rollback (durable, as the pod record's field). */
  reclaimedBy?: string;
}

export interface OpFaults {
  /** Chance an operation fails (half of them after doing their work). */
  fail: number;
  /** Chance an operation hangs (for up to two minutes, then fails). */
  hang: number;
  /** Operation time, uniform in [1, maxOpMs]. */
  maxOpMs: number;
}

/** What the world is told about, for the invariant checkers. */
export interface NodeEvents {
  /** A copy of `pod` was removed from `node` by `migration` in `role`. */
  removed(node: string, pod: string, migration: string, why: string): void;
  /** An operation may have changed the copies of `pod` (the checkers look at it again). */
  changed(pod: string): void;
  trace(line: string): void;
}

export const podIp = (i: number) => `10.244.${1 + (i >> 8)}.${i & 255}`;
const POD_MAC = (ip: string) => `0a:58:${ip.split('.').map((x) => Number(x).toString(16).padStart(2, '0')).join(':')}`;

export class SimNode {
  /** Durable: copies by pod name, images by `${id}/${role}`, holds by pod, routes by pod IP. */
  readonly copies = new Map<string, Copy>();
  readonly images = new Map<string, { seq: number }>();
  readonly holds = new Map<string, 'none' | 'drop'>();
  readonly routes = new Map<string, string>();
  /** Pod name -> IP (the pod's identity, the same on every node). */
  readonly ips = new Map<string, string>();
  /** Volatile: lost when the agent restarts. */
  private receivers = new Set<string>();
  private reclaimReceivers = new Set<string>();
  private froze = new Map<string, FreezeReply>();
  private restored = new Map<string, RestoreReply>();
  /** Migrations a rollback was told had no restored copy here (in memory, as on a real agent). */
  private fenced = new Set<string>();
  /** Migrations rolled back or cut over here: a late forward step of theirs is refused (actors/node/state.ts). */
  private ended = new Set<string>();
  private tails = new Map<string, Promise<unknown>>();
  private routeVersions = new Map<string, number>();
  private incarnation = 0;
  up = true;
  /** When the agent last started: a new registration, as a restarted agent's. */
  startedAtMs = 0;
  faults: OpFaults = { fail: 0, hang: 0, maxOpMs: 5 };

  constructor(
    readonly name: string,
    private readonly index: number,
    private readonly world: { node(name: string): SimNode | undefined },
    private readonly bus: SimBus,
    private readonly clock: Scheduler,
    private readonly rng: Rng,
    private readonly events: NodeEvents,
  ) {}

  get podCidr(): string {
    return `10.250.${this.index}.0/24`;
  }

  start(): void {
    this.up = true;
    this.startedAtMs = this.clock.nowMs();
    for (const verb of MIG_VERBS) this.bus.serve(Subjects.node(this.name, verb), (d) => this.handle(verb, d));
  }

  /** The agent dies: it stops answering and forgets everything not on disk. */
  crash(): void {
    this.up = false;
    this.incarnation++;
    this.bus.unserve(`podmotion.v1.node.${this.name}.`);
    this.receivers.clear();
    this.reclaimReceivers.clear();
    this.froze.clear();
    this.restored.clear();
    this.fenced.clear();
    this.ended.clear();
    this.tails.clear();
    this.routeVersions.clear();
  }

  private op<T>(verb: string, id: string, pod: string | undefined, work: () => T | Promise<T>): Promise<T> {
    // Operations of one migration run one after another on a node, as actors/node/state.ts serializes them.
    const prev = this.tails.get(id) ?? Promise.resolve();
    const incarnation = this.incarnation;
    // An agent that died takes its operations with it: nothing of an earlier incarnation runs on, or answers.
    const alive = async () => {
      if (incarnation !== this.incarnation) await new Promise<never>(() => {});
    };
    const run = prev.then(async () => {
      await alive();
      await this.sleep(this.rng.int(1, Math.max(1, this.faults.maxOpMs)));
      await alive();
      if (this.rng.chance(this.faults.hang)) {
        // Stuck, as a CRIU call that cannot seize a task is: past any phase timeout, until the agent's own
        // bound on the operation (CRIU_DUMP_TIMEOUT_MS) gives up.
        this.events.trace(`${this.name}: ${verb} ${id} hangs`);
        await this.sleep(this.rng.int(60_000, 120_000));
        await alive();
        throw new NodeOperationError(`${verb} timed out (simulated hang)`);
      }
      const failBefore = this.rng.chance(this.faults.fail / 2);
      const failAfter = !failBefore && this.rng.chance(this.faults.fail / 2);
      if (failBefore) throw new NodeOperationError(`${verb} failed (simulated, before its work)`, { retryable: true });
      if (verb !== 'relay.route' && verb !== 'mig.holdStats') this.events.trace(`${this.name}: ${verb} ${id}`);
      if (FORWARD_VERBS.has(verb) && this.ended.has(id)) throw new PreconditionError(`migration ${id} already ended on ${this.name}: ${verb} refused`);
      const out = await work();
      if (pod !== undefined) this.events.changed(pod);
      await alive();
      if (failAfter) throw new NodeOperationError(`${verb} failed (simulated, after its work)`, { retryable: true });
      return out;
    });
    this.tails.set(id, run.catch(() => {}));
    return run;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => this.clock.setTimer(r, ms));
  }

  private async handle(verb: MigVerb, data: Uint8Array): Promise<Uint8Array> {
    const enc = <T>(codec: Codec<T>, v: T) => codec.encode(v);
    switch (verb) {
      case 'mig.inventory': {
        const r = c.step.decode(data);
        return enc(c.inventory, await this.op(verb, r.id, r.pod, () => this.inventory(r.pod)));
      }
      case 'mig.prepare': {
        const r = c.prepare.decode(data);
        return enc(c.prepareReply, await this.op(verb, r.id, r.pod, () => this.prepare(r.id, r.pod, r.ip)));
      }
      case 'mig.precopy.prepare': {
        const r = c.roundRef.decode(data);
        return enc(c.prepareReply, await this.op(verb, r.id, r.pod, () => this.target(r.id)));
      }
      case 'mig.precopy.round': {
        const r = c.round.decode(data);
        return enc(c.roundReply, await this.op(verb, r.id, r.pod, () => {
          this.sourceCopy(r.pod, true);
          const bytes = r.round === 1 ? 64 << 20 : (8 << 20) >> r.round;
          return { pages: 16384, newPages: bytes / 4096, bytes, scanMs: 5, transferMs: 10 };
        }));
      }
      case 'mig.precopy.commit': {
        const r = c.roundRef.decode(data);
        return enc(c.done, await this.op(verb, r.id, r.pod, () => ({ done: true })));
      }
      case 'mig.arm': {
        const r = c.step.decode(data);
        return enc(c.arm, await this.op(verb, r.id, r.pod, () => {
          this.sourceCopy(r.pod, true);
          return { armedAtMs: this.clock.nowMs(), waitedMs: 0 };
        }));
      }
      case 'mig.freeze': {
        const r = c.freeze.decode(data);
        return enc(c.freezeReply, await this.op(verb, r.id, r.pod, () => this.freeze(r.id, r.pod, r.target, 'destination')));
      }
      case 'relay.route': {
        const r = c.route.decode(data);
        return enc(c.done, await this.op(verb, `route-${r.podIp}`, undefined, () => {
          // As actors/node/relay.ts: the newest version wins; versions are agent memory.
          const known = this.routeVersions.get(r.podIp);
          if (r.version !== undefined && known !== undefined && r.version < known) {
            this.events.trace(`${this.name}: route ${r.podIp} -> ${r.node} (version ${r.version}) ignored, ${known} is newer`);
            return { done: true };
          }
          this.events.trace(`${this.name}: route ${r.podIp} -> ${r.node} (version ${r.version ?? "none"})`);
          if (r.version !== undefined) this.routeVersions.set(r.podIp, r.version);
          this.routes.set(r.podIp, r.node);
          return { done: true };
        }));
      }
      case 'relay.conntrack': {
        const r = c.conntrack.decode(data);
        return enc(c.conntrackReply, await this.op(verb, r.id, r.pod, () => {
          this.events.trace(`${this.name}: ${r.entries.length} conntrack entries of ${r.podIp} taken over`);
          return { inserted: r.entries.length, ms: 1 };
        }));
      }
      case 'mig.restore': {
        const r = c.restore.decode(data);
        return enc(c.restoreReply, await this.op(verb, r.id, r.pod, () => this.restore(r.id, r.pod)));
      }
      case 'mig.disengage': {
        const r = c.disengageReq.decode(data);
        return enc(c.disengage, await this.op(verb, r.id, r.pod, () => {
          this.holds.set(r.pod, 'none');
          return { reopened: 1, releasedAtMs: this.clock.nowMs() };
        }));
      }
      case 'mig.holdStats': {
        const r = c.step.decode(data);
        return enc(c.holdStats, await this.op(verb, r.id, r.pod, () => ({
          attached: this.holds.has(r.pod), rstToPod: 0, rstFromPod: 0, droppedToPod: 0, droppedFromPod: 0,
        })));
      }
      case 'mig.probe': {
        const r = c.probe.decode(data);
        return enc(c.probeReply, await this.op(verb, r.id, r.pod, () => ({ ok: this.copies.get(r.pod)?.state === 'running', ms: 1 })));
      }
      case 'mig.cutover': {
        const r = c.role.decode(data);
        return enc(c.done, await this.op(verb, r.id, r.pod, () => {
          this.cutover(r.id, r.pod, r.role);
          return { done: true };
        }));
      }
      case 'mig.rollback': {
        const r = c.role.decode(data);
        return enc(c.done, await this.op(verb, r.id, r.pod, () => ({ done: true, note: this.rollback(r.id, r.pod, r.role) })));
      }
      case 'mig.restored': {
        const r = c.step.decode(data);
        return enc(c.done, await this.op(verb, r.id, r.pod, () => {
          const done = this.copies.get(r.pod)?.incoming === r.id && this.copies.get(r.pod)?.state !== 'empty';
          if (!done) this.fenced.add(r.id);
          return { done };
        }));
      }
      case 'mig.reclaim.prepare': {
        const r = c.step.decode(data);
        return enc(c.prepareReply, await this.op(verb, r.id, r.pod, () => {
          this.reclaimReceivers.add(r.id);
          return this.target(r.id);
        }));
      }
      case 'mig.reclaim.freeze': {
        const r = c.reclaimFreeze.decode(data);
        return enc(c.freezeReply, await this.op(verb, r.id, r.pod, () => this.freeze(r.id, r.pod, r.target, 'reclaim')));
      }
      case 'vol.sync': {
        // Simulated pods have no volumes (storage is not modelled): nothing to copy.
        const r = c.volSync.decode(data);
        return enc(c.volSyncReply, await this.op(verb, r.id, r.pod, () => Promise.resolve({ volumes: 0, files: 0, bytes: 0, deleted: 0, ms: 0 })));
      }
      case 'mig.where': {
        const r = c.step.decode(data);
        const copy = this.copies.get(r.pod);
        return enc(c.where, copy && copy.state !== 'empty' ? {
          present: true, running: copy.state === 'running',
          ...(copy.incoming !== undefined ? { incoming: copy.incoming } : {}), ...(copy.reclaimedBy !== undefined ? { reclaimedBy: copy.reclaimedBy } : {}),
        } : { present: false, running: false });
      }
      case 'mig.reclaim.restore': {
        const r = c.reclaimRestore.decode(data);
        return enc(c.restoreReply, await this.op(verb, r.id, r.pod, () => this.reclaimRestore(r.id, r.pod)));
      }
      case 'mig.reclaim.abort': {
        const r = c.step.decode(data);
        return enc(c.done, await this.op(verb, r.id, r.pod, () => {
          const copy = this.copies.get(r.pod);
          if (copy && copy.incoming === r.id) {
            copy.state = 'running';
            delete copy.incoming;
            this.holds.set(r.pod, 'none');
          }
          this.images.delete(`${r.id}/destination`);
          return { done: true, note: 'resumed here' };
        }));
      }
      case 'mig.postcopy.finish':
        throw new InvalidRequestError('PostCopy is not simulated');
      case 'mig.estimate':
        throw new InvalidRequestError('estimate is not simulated');
    }
  }

  private sourceCopy(pod: string, running: boolean): Copy {
    const copy = this.copies.get(pod);
    if (!copy || copy.incoming !== undefined || copy.state === 'empty') throw new NotFoundError(`pod ${pod} is not on ${this.name}`);
    if (running && copy.state !== 'running') throw new NodeOperationError(`pod ${pod} is not running on ${this.name}`);
    return copy;
  }

  private inventory(pod: string) {
    const copy = this.sourceCopy(pod, true);
    const ip = this.ips.get(pod)!;
    return { ip, mac: POD_MAC(ip), port: 80, initPid: 100, sockets: [{ local: `${ip}:80`, remote: '10.244.0.2:40000', state: 'ESTAB' }], ...(copy ? {} : {}) };
  }

  private target(id: string): PrepareReply {
    return { host: `10.250.${this.index}.1`, port: 10_000 + (id.length % 1000), key: new Uint8Array(32) };
  }

  private prepare(id: string, pod: string, ip: string): PrepareReply {
    const copy = this.copies.get(pod);
    if (copy && copy.incoming === undefined && copy.state !== 'empty') throw new InvalidRequestError(`pod ${pod} already runs on ${this.name}`);
    if (!copy || copy.incoming !== id) {
      // A leftover of an earlier attempt (no process in it) is replaced, as preparePod removes the namespace.
      if (copy && copy.state !== 'empty') throw new NodeOperationError(`pod ${pod} has a copy of migration ${copy.incoming} here`);
      this.copies.set(pod, { state: 'empty', seq: 0, incoming: id });
    }
    this.ips.set(pod, ip);
    this.holds.set(pod, 'drop');
    this.receivers.add(id);
    return this.target(id);
  }

  /** Checkpoint the pod here and stream the images to the receiver of `target` (any node with one open). */
  private freeze(id: string, pod: string, target: PrepareReply, kind: 'destination' | 'reclaim'): FreezeReply {
    const cached = this.froze.get(`${kind}/${id}`);
    if (cached) return cached;
    const copy = kind === 'destination' ? this.sourceCopy(pod, false) : this.copies.get(pod);
    if (!copy || copy.state === 'empty') throw new NotFoundError(`pod ${pod} is not on ${this.name}`);
    copy.state = 'stopped';
    const to = this.world.node(`node-${target.host.split('.')[2]}`);
    const open = kind === 'destination' ? to?.receivers.has(id) : to?.reclaimReceivers.has(id);
    if (!to || !to.up || !open) throw new NodeOperationError(`image stream to ${target.host}:${target.port} refused`);
    to.images.set(`${id}/${kind}`, { seq: copy.seq });
    const sockets: SocketSeq[] = [{ local: `${this.ips.get(pod)}:80`, remote: '10.244.0.2:40000', sndSeq: copy.seq, rcvSeq: copy.seq }];
    const ip = this.ips.get(pod) ?? '10.244.1.10';
    // The client's flow as the source node tracks it: the destination takes it over at the handoff.
    const conntrack = [{ proto: 'tcp' as const, state: 'ESTABLISHED', timeoutS: 432_000, assured: true, seenReply: true, mark: 0,
      orig: { src: '10.244.0.2', dst: ip, sport: 40000, dport: 80 }, reply: { src: ip, dst: '10.244.0.2', sport: 80, dport: 40000 } }];
    const reply: FreezeReply = { frozenAtMs: this.clock.nowMs(), dumpMs: 5, transferMs: 5, bytes: 1 << 20, files: 10, sockets, ...(kind === 'destination' ? { conntrack } : {}) };
    this.froze.set(`${kind}/${id}`, reply);
    return reply;
  }

  private restore(id: string, pod: string): RestoreReply {
    const cached = this.restored.get(id);
    if (cached) return cached;
    if (this.fenced.has(id)) throw new PreconditionError(`migration ${id} is rolling back: restore of ${pod} refused`);
    const img = this.images.get(`${id}/destination`);
    if (!this.receivers.has(id) || !img) throw new NodeOperationError(`migration ${id}: no images were expected here (agent restarted?)`);
    const copy = this.copies.get(pod);
    if (!copy || copy.incoming !== id) throw new NodeOperationError(`migration ${id}: no namespace prepared for ${pod}`);
    if (copy.state === 'empty') {
      copy.state = 'running';
      copy.seq = img.seq;
    }
    const ip = this.ips.get(pod)!;
    const reply: RestoreReply = {
      resumedAtMs: this.clock.nowMs(), restoreMs: 5, initPid: 200, reopened: 1,
      sockets: [{ local: `${ip}:80`, remote: '10.244.0.2:40000', sndSeq: img.seq, rcvSeq: img.seq }],
    };
    this.restored.set(id, reply);
    return reply;
  }

  private reclaimRestore(id: string, pod: string): RestoreReply {
    const done = this.copies.get(pod);
    // As actors/node/reclaim.ts: asked again, the copy that came back is running; never kill it.
    if (done && done.state === 'running' && done.reclaimedBy === id) {
      this.images.delete(`${id}/reclaim`);
      this.reclaimReceivers.delete(id);
      return { resumedAtMs: this.clock.nowMs(), restoreMs: 0, initPid: 300, sockets: [] };
    }
    const img = this.images.get(`${id}/reclaim`);
    if (!img) throw new NodeOperationError(`migration ${id}: no images came back`);
    const copy = this.copies.get(pod);
    // The stale source copy goes; the copy that served comes back in its place.
    if (copy && copy.state === 'running') throw new NodeOperationError(`pod ${pod} runs on ${this.name}: refusing to restore over it`);
    if (copy) this.events.removed(this.name, pod, id, 'reclaim replaces the stale source copy');
    this.copies.set(pod, { state: 'running', seq: img.seq, reclaimedBy: id });
    this.images.delete(`${id}/reclaim`);
    this.images.delete(`${id}/source`);
    this.holds.set(pod, 'none');
    this.reclaimReceivers.delete(id);
    const ip = this.ips.get(pod)!;
    return { resumedAtMs: this.clock.nowMs(), restoreMs: 5, initPid: 300, sockets: [{ local: `${ip}:80`, remote: '10.244.0.2:40000', sndSeq: img.seq, rcvSeq: img.seq }] };
  }

  private cutover(id: string, pod: string, role: 'source' | 'destination'): void {
    this.ended.add(id);
    const copy = this.copies.get(pod);
    if (role === 'destination') {
      if (copy && copy.incoming === id) delete copy.incoming;
      this.holds.set(pod, 'none');
      this.receivers.delete(id);
      this.images.delete(`${id}/destination`);
      return;
    }
    if (copy && copy.incoming === undefined) {
      this.copies.delete(pod);
      this.holds.delete(pod);
      this.events.removed(this.name, pod, id, 'cutover');
    }
    this.images.delete(`${id}/source`);
    this.images.delete(`${id}/reclaim`);
    this.reclaimReceivers.delete(id);
  }

  private rollback(id: string, pod: string, role: 'source' | 'destination'): string {
    this.ended.add(id);
    const copy = this.copies.get(pod);
    if (role === 'destination') {
      this.receivers.delete(id);
      this.images.delete(`${id}/destination`);
      if (copy && copy.incoming === undefined && copy.state !== 'empty') throw new NodeOperationError(`pod ${pod} is already served from ${this.name}; refusing to remove it`);
      if (copy) {
        if (copy.state !== 'empty') this.events.removed(this.name, pod, id, 'rollback discards the destination copy');
        this.copies.delete(pod);
        this.holds.delete(pod);
      }
      return 'destination discarded';
    }
    this.images.delete(`${id}/source`);
    if (!copy || copy.incoming !== undefined) return 'no source copy on this node';
    if (copy.state === 'stopped') {
      copy.state = 'running';
      this.holds.set(pod, 'none');
      return 'resumed';
    }
    return 'copy was running';
  }
}
