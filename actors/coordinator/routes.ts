/**
 * Keeps the routes of migrated pods converged. A handoff reaches only the nodes that answer; one whose agent
 * was down or cut off keeps routing the pod IP to where the pod was. The reconciler knows where each pod is
 * served from the migrations' statuses, and sends every such route to each node that owes them: one that
 * missed a change, one whose agent restarted (a new registration), and, after a coordinator restart, all.
 * Routes carry the time of the change they come from, so a late one never undoes a newer handoff.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { every, type Clock } from '../../common/clock.js';
import type { NodeRegistration } from '../../bus/messages.js';
import type { InventoryReply } from '../../bus/node-migration.js';
import { request } from '../../bus/rpc.js';
import { Subjects } from '../../bus/subjects.js';
import { isTerminal, type MigrationStatus } from '../../machines/index.js';
import { migCodecs as c } from './codecs.js';
import { vtepOf } from './effects.js';

export const ROUTE_RECONCILE_INTERVAL_MS = 10_000;
const ROUTE_TIMEOUT_MS = 10_000;
/** Route requests in flight to one node at once. */
const ROUTES_IN_FLIGHT = 16;

interface Desired {
  id: string;
  pod: string;
  podIp: string;
  node: string;
  version: number;
}

/**
 * Where each pod with a finished migration is served from, by pod IP; pods migrating now are left alone and
 * listed in `busy` (by IP, when known), so a node brought up to date meanwhile still owes them.
 */
export function desiredRoutes(statuses: Iterable<MigrationStatus>, busyIps?: Set<string>): Map<string, Desired> {
  const latest = new Map<string, MigrationStatus>();
  const ips = new Map<string, string>();
  const busy = new Set<string>();
  for (const s of statuses) {
    if (s.spec.dryRun) continue;
    if (!isTerminal(s.phase)) busy.add(s.spec.pod);
    // A pod keeps its IP wherever it goes: any migration that inventoried it knows it.
    const ip = (s.results['SocketInventory'] as InventoryReply | undefined)?.ip;
    if (ip) ips.set(s.spec.pod, ip);
    const prev = latest.get(s.spec.pod);
    if (!prev || s.startedAtMs > prev.startedAtMs) latest.set(s.spec.pod, s);
  }
  const out = new Map<string, Desired>();
  for (const pod of busy) {
    const ip = ips.get(pod);
    if (ip) busyIps?.add(ip);
  }
  for (const s of latest.values()) {
    const podIp = ips.get(s.spec.pod);
    if (busy.has(s.spec.pod) || !podIp) continue;
    // Failed leaves the pod wherever its last step left it: reconciled only when the failure says where.
    const node = s.phase === 'Complete' ? s.spec.destinationNode
      : s.phase === 'RolledBack' || s.phase === 'Cancelled' ? s.spec.sourceNode
      : s.error?.servedFrom;
    if (!node) continue;
    out.set(podIp, { id: s.spec.id, pod: s.spec.pod, podIp, node, version: s.endedAtMs ?? s.updatedAtMs });
  }
  return out;
}

export class RouteReconciler {
  /** Registration start time each node was last brought up to date for. */
  private synced = new Map<string, number>();
  /** Pod IPs each node missed a change of; kept while the pod migrates, sent once it has a known place. */
  private owed = new Map<string, Set<string>>();
  /** Pod IPs every node owes: the pod was found serving elsewhere than the last route change said. */
  private owedByAll = new Set<string>();
  private cancel: (() => void) | undefined;

  constructor(private readonly deps: {
    nc: NatsConnection;
    clock: Clock;
    registrations(): Promise<Map<string, NodeRegistration>>;
    statuses(): Iterable<MigrationStatus>;
    onError?(node: string, err: Error): void;
  }) {}

  owe(node: string, podIp: string): void {
    let s = this.owed.get(node);
    if (!s) this.owed.set(node, (s = new Set()));
    s.add(podIp);
  }

  /** Every node is to be sent this pod IP's route (where the pod serves changed outside a migration's steps). */
  oweEverywhere(podIp: string): void {
    this.owedByAll.add(podIp);
  }

  start(intervalMs = ROUTE_RECONCILE_INTERVAL_MS): void {
    this.cancel = every(this.deps.clock, intervalMs, () => this.tick());
  }

  stop(): void {
    this.cancel?.();
    this.cancel = undefined;
  }

  /** One pass: every node that owes routes gets all of them; it is in sync once each one succeeded. */
  async tick(): Promise<void> {
    const regs = await this.deps.registrations();
    const busyIps = new Set<string>();
    const desired = [...desiredRoutes(this.deps.statuses(), busyIps).values()];
    // A node not registered now gets every route when it registers again.
    for (const ip of this.owedByAll) for (const node of regs.keys()) this.owe(node, ip);
    this.owedByAll.clear();
    // Nodes in parallel; each node's routes a few at a time (hundreds of pods must not take minutes).
    await Promise.all([...regs].map(async ([node, reg]) => {
      const all = this.synced.get(node) !== reg.startedAtMs;
      if (all) for (const ip of busyIps) this.owe(node, ip);
      const owed = this.owed.get(node) ?? new Set<string>();
      const send = desired.filter((d) => all || owed.has(d.podIp));
      if (send.length === 0 && !all) return;
      let ok = true;
      let next = 0;
      const worker = async () => {
        while (ok && next < send.length) {
          const d = send[next++]!;
          const target = regs.get(d.node);
          if (!target) {
            // The node serving the pod is not registered now (its agent restarting): its VTEP is unknown, so
            // this route cannot be sent yet. This node owes it until it has been.
            this.owe(node, d.podIp);
            continue;
          }
          try {
            await request(this.deps.nc, Subjects.node(node, 'relay.route'), c.route, c.done,
              { id: d.id, pod: d.pod, podIp: d.podIp, node: d.node, vtepIp: vtepOf(target.podCidr), version: d.version }, { timeoutMs: ROUTE_TIMEOUT_MS });
            owed.delete(d.podIp);
          } catch (e) {
            ok = false;
            this.deps.onError?.(node, e as Error);
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(ROUTES_IN_FLIGHT, send.length) }, worker));
      if (ok && all) this.synced.set(node, reg.startedAtMs);
    }));
  }
}
