/** What commands share: the cluster they address and a bus connection to it. */
import type { NatsConnection } from '@nats-io/nats-core';
import { connectBus, type BusAddress } from '../bus/connection.js';
import { Subjects } from '../bus/subjects.js';
import { request } from '../bus/rpc.js';
import { NotFoundError } from '../bus/errors.js';
import type { PodInfo } from '../bus/messages.js';
import { codecs } from '../node-runtime/agent.js';
import { adminBus, requireCluster } from '../node-runtime/local-cluster.js';
import type { ClusterRecord } from '../node-runtime/records.js';
import { clusterName, type Parsed } from './args.js';

export interface Ctx {
  cluster: ClusterRecord;
  nc: NatsConnection;
}

/** Bus address: --nats/NATS_URL (with --nkey/PODMOTION_NKEY) when given, else the cluster's own bus. */
export function busAddress(p: Parsed, rec: ClusterRecord): BusAddress {
  const url = (p.values['nats'] as string | undefined) ?? process.env['NATS_URL'];
  if (!url) return adminBus(rec);
  const seedFile = (p.values['nkey'] as string | undefined) ?? process.env['PODMOTION_NKEY'];
  return seedFile ? { url, seedFile } : { url };
}

/** Runs fn with the cluster's record and a bus connection, closing the connection afterwards. */
export async function withCluster<T>(p: Parsed, fn: (ctx: Ctx) => Promise<T>): Promise<T> {
  const cluster = await requireCluster(clusterName(p));
  const nc = await connectBus(busAddress(p, cluster), 'podmotion-cli');
  try {
    return await fn({ cluster, nc });
  } finally {
    await nc.close();
  }
}

export { readRegistrations as registrations } from '../bus/registry.js';

/** Every pod of the cluster, asked of each node agent; nodes that do not answer are listed apart. */
export async function allPods(ctx: Ctx): Promise<{ pods: PodInfo[]; unreachable: string[] }> {
  const answers = await Promise.allSettled(
    ctx.cluster.plan.nodes.map((n) =>
      request(ctx.nc, Subjects.node(n.name, 'pod.list'), codecs.empty, codecs.podList, {}, { timeoutMs: 5000 })),
  );
  const pods: PodInfo[] = [];
  const unreachable: string[] = [];
  answers.forEach((a, i) => {
    if (a.status === 'fulfilled') pods.push(...a.value.pods);
    else unreachable.push(ctx.cluster.plan.nodes[i]!.name);
  });
  return { pods: pods.sort((a, b) => a.name.localeCompare(b.name)), unreachable };
}

/** The node a pod runs on, or NotFoundError. */
export async function nodeOfPod(ctx: Ctx, pod: string): Promise<string> {
  const { pods } = await allPods(ctx);
  const found = pods.find((p) => p.name === pod);
  if (!found) throw new NotFoundError(`pod ${pod} not found in cluster ${ctx.cluster.plan.cluster} (see: podmotion pod list)`);
  return found.node;
}

export function requireNode(ctx: Ctx, node: string): void {
  if (!ctx.cluster.plan.nodes.some((n) => n.name === node)) {
    const names = ctx.cluster.plan.nodes.map((n) => n.name).join(', ');
    throw new NotFoundError(`node ${node} not found in cluster ${ctx.cluster.plan.cluster} (nodes: ${names})`);
  }
}
