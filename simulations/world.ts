/**
 * One simulated run: a cluster of simulated nodes, the real coordinator machine and effects, a workload of
 * migrations, and faults, all drawn from one seed. A safety phase runs with faults on; a liveness phase heals
 * them and must converge. Invariant checkers watch the ground truth (which copies of each pod exist, where,
 * in what state) apart from the system: architecture.md's I1–I5, and nothing left behind.
 */
import type { NodeRegistration } from '../bus/messages.js';
import { DEFAULT_TIMEOUTS_MS, isTerminal, type MigrationStatus, type Strategy } from '../machines/index.js';
import { ROUTE_RECONCILE_INTERVAL_MS } from '../actors/coordinator/routes.js';
import type { AdmissionLimits } from '../actors/coordinator/admission.js';
import { SimBus, type BusFaults } from './bus.js';
import { SimCoordinator } from './coordinator.js';
import { SimNode, podIp, type OpFaults } from './node.js';
import { Rng } from './rng.js';
import { Scheduler } from './scheduler.js';

export interface Knobs {
  seed: number;
  nodes: number;
  pods: number;
  migrations: number;
  /** Migrations are submitted over this much virtual time. */
  submitWindowMs: number;
  bus: BusFaults;
  ops: OpFaults;
  /** Expected agent crashes and coordinator crashes over the safety phase. */
  agentCrashes: number;
  coordinatorCrashes: number;
  partitions: number;
  safetyMs: number;
  /** The coordinator's admission limits. */
  limits: AdmissionLimits;
  /** Users cancelling a migration (waiting or running) during the safety phase. */
  cancels: number;
}

export interface RunResult {
  seed: number;
  knobs: Knobs;
  violations: string[];
  outcomes: Record<string, number>;
  /** Most migrations admitted at once. */
  maxRunning: number;
  migrations: number;
  virtualMs: number;
  steps: number;
  trace: string[];
}

/** Knobs for a seed: fault rates drawn per seed (swarm testing), sizes as given. */
export function knobsFor(seed: number, size: { nodes?: number; pods?: number; migrations?: number; perNode?: number; perCluster?: number } = {}): Knobs {
  const r = new Rng(seed);
  const faulty = r.chance(0.85);
  return {
    seed,
    nodes: size.nodes ?? r.int(2, 5),
    pods: size.pods ?? r.int(1, 4),
    migrations: size.migrations ?? r.int(1, 6),
    submitWindowMs: r.int(1_000, 60_000),
    bus: { loss: faulty ? r.pick([0, 0, 0.001, 0.01, 0.05]) : 0, duplicate: faulty ? r.pick([0, 0.01, 0.1]) : 0, maxDelayMs: r.pick([1, 5, 50, 500]) },
    ops: { fail: faulty ? r.pick([0, 0.01, 0.05, 0.2]) : 0, hang: faulty ? r.pick([0, 0, 0.001, 0.01]) : 0, maxOpMs: r.pick([5, 50, 2_000]) },
    agentCrashes: faulty ? r.pick([0, 0, 1, 3]) : 0,
    coordinatorCrashes: faulty ? r.pick([0, 0, 1, 2]) : 0,
    partitions: faulty ? r.pick([0, 0, 1, 2]) : 0,
    safetyMs: r.int(30_000, 300_000),
    limits: { perNode: size.perNode ?? r.pick([1, 2, 2, 3]), perCluster: size.perCluster ?? r.pick([1, 2, 5, 5, 100]) },
    cancels: r.pick([0, 0, 1, 3]),
  };
}

/** Longest a migration may take with its timeouts (every phase to its limit, then a full rollback). */
const ALL_TIMEOUTS_MS = Object.values(DEFAULT_TIMEOUTS_MS).reduce((a, b) => a + b, 0);
const START_MS = 1_800_000_000_000;
const TRACE_LINES = 400;
const TICK_MS = 100;
/**
 * After the last migration ended: an operation hung before the faults healed ends (at most 120 s, node.ts),
 * then three route reconcile rounds, each request bounded by its timeout.
 */
const CONVERGE_MS = 120_000 + 3 * ROUTE_RECONCILE_INTERVAL_MS + 30_000;

export async function runSeed(k: Knobs, o: { traceAll?: boolean } = {}): Promise<RunResult> {
  const rng = new Rng(k.seed);
  const clock = new Scheduler(START_MS);
  const trace: string[] = [];
  const say = (line: string) => {
    trace.push(`${String(clock.nowMs() - START_MS).padStart(9)} ms  ${line}`);
    if (!o.traceAll && trace.length > TRACE_LINES) trace.shift();
  };
  const violations: string[] = [];
  const violate = (v: string) => {
    if (violations.length < 20) violations.push(`${clock.nowMs() - START_MS} ms: ${v}`);
    say(`VIOLATION ${v}`);
  };

  const bus = new SimBus(clock, rng.fork(), say);
  const nodes = new Map<string, SimNode>();
  const downSince = new Map<string, number>();
  const nodeRng = rng.fork();
  // The coordinator: its persisted statuses tell the checkers what it had verified.
  const ref: { coordinator?: SimCoordinator } = {};
  /** Pods whose copies an operation may have changed since the last check. */
  const dirty = new Set<string>();
  const events = {
    trace: say,
    changed: (pod: string) => dirty.add(pod),
    removed(node: string, pod: string, migration: string, why: string) {
      say(`${node}: copy of ${pod} removed (${why}, ${migration})`);
      if (why === 'cutover') {
        // I1: the source goes only once the destination was verified serving; in a rollback, only once the
        // pod's newer state runs elsewhere (the move back failed and the destination kept it).
        const st = ref.coordinator?.record(migration)?.status;
        const verified = st?.conditions.some((c) => c.type === 'ServiceVerifying' && c.status === 'True');
        const elsewhere = [...nodes.values()].some((n) => n.name !== node && n.copies.get(pod)?.state === 'running');
        if (!verified && !((st?.phase === 'RollingBack' || st?.phase === 'Failed') && elsewhere)) {
          violate(`I1: ${pod}'s source copy on ${node} removed before migration ${migration} verified the destination`);
        }
      }
    },
  };
  for (let i = 1; i <= k.nodes; i++) {
    const n = new SimNode(`node-${i}`, i, { node: (name) => nodes.get(name) }, bus, clock, nodeRng.fork(), events);
    nodes.set(n.name, n);
    n.start();
  }
  const registrations = () => {
    const out = new Map<string, NodeRegistration>();
    for (const n of nodes.values()) {
      // A dead agent's registration expires 15 s after its last heartbeat (bus/subjects.ts).
      const since = downSince.get(n.name);
      if (!n.up && since !== undefined && clock.nowMs() - since > 15_000) continue;
      out.set(n.name, {
        node: n.name, cluster: 'sim', agentPid: 1, startedAtMs: n.startedAtMs, heartbeatAtMs: clock.nowMs(), podCidr: n.podCidr,
        capabilities: { kernel: 'sim', criuOk: true, features: {} },
      });
    }
    return out;
  };
  // Admission, checked from what the coordinator persisted: no node and no cluster over its limit, and no
  // migration admitted while one submitted before it waits for one of its nodes.
  const persisted = new Map<string, MigrationStatus>();
  let maxRunning = 0;
  const checkAdmission = (s: MigrationStatus) => {
    const prev = persisted.get(s.spec.id);
    persisted.set(s.spec.id, s);
    if (!(prev === undefined || prev.phase === 'Pending') || s.phase === 'Pending' || isTerminal(s.phase)) return;
    const active = [...persisted.values()].filter((x) => x.phase !== 'Pending' && !isTerminal(x.phase) && !x.spec.dryRun);
    maxRunning = Math.max(maxRunning, active.length);
    if (active.length > k.limits.perCluster) violate(`admission: ${active.length} migrations run at once (limit ${k.limits.perCluster})`);
    for (const n of [s.spec.sourceNode, s.spec.destinationNode]) {
      const on = active.filter((x) => x.spec.sourceNode === n || x.spec.destinationNode === n);
      if (on.length > k.limits.perNode) violate(`admission: ${n} takes part in ${on.length} migrations (limit ${k.limits.perNode}): ${on.map((x) => x.spec.id).join(', ')}`);
    }
    const nodesOf = new Set([s.spec.sourceNode, s.spec.destinationNode]);
    for (const w of persisted.values()) {
      if (w.phase === 'Pending' && w.startedAtMs < s.startedAtMs && (nodesOf.has(w.spec.sourceNode) || nodesOf.has(w.spec.destinationNode))) {
        violate(`fairness: ${s.spec.id} admitted while ${w.spec.id}, submitted before it, waits for one of its nodes`);
      }
    }
  };
  const coordinator = new SimCoordinator(bus, clock, registrations, (s) => {
    say(`${s.spec.id}: ${s.phase}${s.error ? ` (${s.error.phase}: ${s.error.message})` : ''}${s.phase === 'Pending' ? ` (${s.conditions.at(-1)?.message ?? ''})` : ''}`);
    checkAdmission(s);
  }, k.limits);
  ref.coordinator = coordinator;
  coordinator.start();

  // Pods, each running on one node; every node routes every pod IP to it.
  const pods = Array.from({ length: k.pods }, (_, i) => `p${i}`);
  /** Highest sequence any serving copy of each pod reached: what its clients have seen. */
  const seen = new Map<string, number>();
  pods.forEach((p, i) => {
    const home = nodes.get(`node-${rng.int(1, k.nodes)}`)!;
    home.copies.set(p, { state: 'running', seq: 1 });
    home.holds.set(p, 'none');
    for (const n of nodes.values()) {
      n.ips.set(p, podIp(i + 10));
      n.routes.set(podIp(i + 10), home.name);
    }
    seen.set(p, 1);
  });

  // Connections carry traffic while a copy runs: its sequence state moves on, and its clients see it.
  const tick = () => {
    for (const n of nodes.values()) {
      for (const [p, copy] of n.copies) {
        if (copy.state !== 'running') continue;
        copy.seq++;
        seen.set(p, Math.max(seen.get(p) ?? 0, copy.seq));
      }
    }
    clock.setTimer(tick, TICK_MS);
  };
  clock.setTimer(tick, TICK_MS);

  // Checked after every step: I2 one serving copy at most, I5 no copy serving stale connection state, and
  // the pod never lost (some copy holds its state).
  const check = () => {
    if (dirty.size === 0) return;
    const now = [...dirty];
    dirty.clear();
    for (const p of now) {
      const copies = [...nodes.values()].map((n) => ({ n: n.name, c: n.copies.get(p) })).filter((x) => x.c && x.c.state !== 'empty');
      const running = copies.filter((x) => x.c!.state === 'running');
      if (running.length > 1) violate(`I2: ${p} runs on ${running.map((x) => x.n).join(' and ')}`);
      for (const r of running) {
        if (r.c!.seq < (seen.get(p) ?? 0)) {
          violate(`I5: ${p} serves on ${r.n} with connection state ${r.c!.seq}, behind what clients saw (${seen.get(p)})`);
          seen.set(p, r.c!.seq); // report once
        }
      }
      if (copies.length === 0) violate(`I1: every copy of ${p} is gone`);
    }
  };

  // Workload: migrations submitted at random times; a pod migrates once at a time (the API refuses more).
  let submitted = 0;
  let nextId = 0;
  const workRng = rng.fork();
  const submit = () => {
    if (submitted >= k.migrations) return;
    if (coordinator.up) {
      const busy = new Set([...coordinator.latest.values()].filter((s) => !isTerminal(s.phase)).map((s) => s.spec.pod));
      const free = pods.filter((p) => !busy.has(p));
      if (free.length > 0) {
        const pod = workRng.pick(free);
        const from = [...nodes.values()].find((n) => n.copies.get(pod)?.state === 'running' && n.copies.get(pod)?.incoming === undefined);
        if (from) {
          const to = workRng.pick([...nodes.keys()].filter((n) => n !== from.name));
          const strategy: Strategy = workRng.pick(['Cold', 'PreCopy'] as const);
          const id = `m${nextId++}-${pod}`;
          say(`submit ${id}: ${pod} ${from.name} -> ${to} (${strategy})`);
          coordinator.migrate({ id, pod, sourceNode: from.name, destinationNode: to, strategy, networkContinuity: true, dryRun: false });
          submitted++;
        }
      }
    }
    clock.setTimer(submit, workRng.int(0, Math.max(1, Math.round((2 * k.submitWindowMs) / Math.max(1, k.migrations)))));
  };
  clock.setTimer(submit, 0);

  // Faults of the safety phase: crashes and restarts of agents and of the coordinator, partitions.
  const faultRng = rng.fork();
  bus.faults = { ...k.bus };
  for (const n of nodes.values()) n.faults = { ...k.ops };
  let coordinatorDownMs = 0;
  for (let i = 0; i < k.agentCrashes; i++) {
    clock.setTimer(() => {
      const n = faultRng.pick([...nodes.values()]);
      if (!n.up) return;
      say(`${n.name}: agent crashes`);
      n.crash();
      downSince.set(n.name, clock.nowMs());
      clock.setTimer(() => {
        if (n.up) return; // the liveness phase restarted it already
        say(`${n.name}: agent restarts`);
        n.start();
        downSince.delete(n.name);
      }, faultRng.int(100, 30_000));
    }, faultRng.int(0, k.safetyMs));
  }
  for (let i = 0; i < k.coordinatorCrashes; i++) {
    clock.setTimer(() => {
      if (!coordinator.up) return;
      say('coordinator crashes');
      coordinator.crash();
      const down = faultRng.int(100, 20_000);
      coordinatorDownMs += down;
      clock.setTimer(() => {
        if (coordinator.up) return; // the liveness phase restarted it already
        say('coordinator restarts');
        coordinator.start();
      }, down);
    }, faultRng.int(0, k.safetyMs));
  }
  for (let i = 0; i < k.partitions; i++) {
    clock.setTimer(() => {
      const n = faultRng.pick([...nodes.keys()]);
      say(`${n}: partitioned`);
      bus.partitioned.add(n);
      clock.setTimer(() => {
        say(`${n}: partition healed`);
        bus.partitioned.delete(n);
      }, faultRng.int(100, 60_000));
    }, faultRng.int(0, k.safetyMs));
  }

  for (let i = 0; i < k.cancels; i++) {
    clock.setTimer(() => {
      const open = [...coordinator.latest.values()].filter((s) => !isTerminal(s.phase)).map((s) => s.spec.id).sort();
      if (open.length === 0) return;
      const id = faultRng.pick(open);
      say(`user cancels ${id}: ${coordinator.cancel(id) ? 'accepted' : 'refused'}`);
    }, faultRng.int(0, k.safetyMs));
  }

  // Safety: faults on, invariants checked after every step.
  await clock.run({ deadlineMs: START_MS + k.safetyMs, afterStep: check });
  // Liveness: faults healed, everything up; every migration must end, within its timeouts.
  say('liveness: faults healed');
  bus.faults = { loss: 0, duplicate: 0, maxDelayMs: k.bus.maxDelayMs };
  bus.partitioned.clear();
  for (const n of nodes.values()) {
    n.faults = { fail: 0, hang: 0, maxOpMs: k.ops.maxOpMs };
    if (!n.up) {
      say(`${n.name}: agent restarts`);
      n.start();
      downSince.delete(n.name);
    }
  }
  if (!coordinator.up) {
    say('coordinator restarts');
    coordinator.start();
  }
  const settled = () => submitted >= k.migrations && coordinator.up && coordinator.unfinished().length === 0;
  // Admission runs migrations in waves; in the worst case one at a time.
  const waves = Math.ceil(k.migrations / Math.max(1, Math.min(k.limits.perCluster, Math.floor(k.nodes / 2) * k.limits.perNode)));
  const end = await clock.run({ until: settled, deadlineMs: clock.nowMs() + 2 * ALL_TIMEOUTS_MS * waves + coordinatorDownMs, afterStep: check });
  if (end !== 'until') {
    for (const id of coordinator.unfinished()) violate(`I3: ${id} did not end (phase ${coordinator.record(id)!.status.phase})`);
    if (submitted < k.migrations) violate(`workload: only ${submitted} of ${k.migrations} migrations could be submitted`);
  }
  // Background convergence (routes a node missed) gets a few reconcile rounds before the end state counts.
  await clock.run({ deadlineMs: clock.nowMs() + CONVERGE_MS, afterStep: check });

  // The end state: every pod served by exactly one copy, routed to it, and nothing of any attempt left.
  const outcomes: Record<string, number> = {};
  for (const id of coordinator.kv.keys()) {
    const s = coordinator.record(id)!.status as MigrationStatus;
    outcomes[s.phase] = (outcomes[s.phase] ?? 0) + 1;
    // Its timeouts run from admission; the wait before it is admission's (checked above for fairness).
    const admitted = s.conditions.find((c) => c.type === 'Pending')?.lastTransitionTimeMs ?? s.startedAtMs;
    const took = (s.endedAtMs ?? clock.nowMs()) - admitted;
    if (took > ALL_TIMEOUTS_MS + coordinatorDownMs + k.safetyMs) violate(`I3: ${id} took ${took} ms`);
  }
  for (const [p, ip] of pods.map((p, i) => [p, podIp(i + 10)] as const)) {
    const copies = [...nodes.values()].filter((n) => n.copies.has(p));
    if (copies.length !== 1) violate(`end: ${p} has ${copies.length} copies (${copies.map((n) => `${n.name}:${n.copies.get(p)!.state}`).join(', ')})`);
    const home = copies.find((n) => n.copies.get(p)!.state === 'running');
    if (!home) violate(`end: ${p} is not running anywhere`);
    else {
      if (home.copies.get(p)!.incoming !== undefined) violate(`end: ${p} on ${home.name} still marked incoming`);
      const wrong = [...nodes.values()].filter((n) => n.routes.get(ip) !== home.name).map((n) => n.name);
      if (wrong.length > 0) violate(`end: ${p} served on ${home.name} but routed elsewhere by ${wrong.join(', ')}`);
    }
    for (const n of nodes.values()) if (n.holds.has(p) && !n.copies.has(p)) violate(`end: ${n.name} keeps a hold for ${p}, which is not there`);
  }
  if (coordinator.kv.size !== submitted) violate(`end: ${submitted} migrations accepted, ${coordinator.kv.size} on record`);
  for (const n of nodes.values()) if (n.images.size > 0) violate(`end: ${n.name} keeps images ${[...n.images.keys()].join(', ')}`);

  return {
    seed: k.seed, knobs: k, violations, outcomes, maxRunning, migrations: coordinator.kv.size, virtualMs: clock.nowMs() - START_MS,
    steps: clock.steps, trace,
  };
}
