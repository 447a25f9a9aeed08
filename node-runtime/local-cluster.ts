/**
 * The embedded default: a local multi-node cluster on this machine. `up` builds the fabric, starts
 * the bus (unless an external one is given) and one agent process per node; `down` removes all of
 * it, also after a crash, from the record on disk and the namespace names alone.
 */
import { spawn } from 'node:child_process';
import { mkdir, open, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { connectBus, type BusAddress } from '../bus/connection.js';
import { removeStore, startEmbedded } from '../bus/embedded.js';
import { ConflictError, NodeOperationError, NotFoundError } from '../bus/errors.js';
import { ensureIdentities, inboxPrefixOf, type IdentitySpec, type Permissions } from '../bus/identity.js';
import { ensureBusResources } from '../bus/jetstream.js';
import { API_ROOT, Buckets, Subjects } from '../bus/subjects.js';
import type { NodeRegistration } from '../bus/messages.js';
import { readRegistrations } from '../bus/registry.js';
import { BPF_PIN_ROOT, CLI_ENTRY, IMAGES_ROOT, agentLogFile, clusterDir, coordinatorLogFile, credsDir } from './constants.js';
import { createFabric, destroyFabric } from './fabric.js';
import { planCluster, type ClusterPlan } from './plan.js';
import { isAlive, refOf, stopRef, type ProcessRef } from './procs.js';
import { killPodProcesses } from './pods.js';
import { listPodRecords, readClusterRecord, removeClusterDir, writeClusterRecord, type ClusterRecord } from './records.js';

/** Agents measure capabilities (criu check) before registering; allow for a slow first CRIU start. */
export const AGENTS_READY_TIMEOUT_MS = 30_000;


/** The Kubernetes operator (CR bridge, webhook): the coordinator's API and migration events, nothing else. */
export const OPERATOR_PERMISSIONS: Permissions = {
  publish: [`${API_ROOT}.api.>`],
  subscribe: [`${API_ROOT}.events.migration.>`, `${inboxPrefixOf('operator')}.>`],
};

/** The identities of a cluster's bus: an admin (CLI, coordinator) and one restricted identity per node. */
export function identitySpecs(plan: ClusterPlan): IdentitySpec[] {
  const agents: IdentitySpec[] = plan.nodes.map((n) => ({
    name: `agent-${n.name}`,
    permissions: {
      publish: [
        Subjects.nodeAll(n.name),
        Subjects.nodeEvents(n.name),
        `$KV.${Buckets.nodes}.${n.name}`,
        `$JS.API.STREAM.INFO.KV_${Buckets.nodes}`,
      ],
      // Replies to the requests it serves, and its own inbox only: no agent can read another's replies.
      subscribe: [Subjects.nodeAll(n.name), `${inboxPrefixOf(`agent-${n.name}`)}.>`],
      allowResponses: true,
    },
  }));
  const operator: IdentitySpec = { name: 'operator', permissions: OPERATOR_PERMISSIONS };
  // The inspector reads statuses and events; cancel is refused by the inspector itself unless enabled.
  const inspector: IdentitySpec = {
    name: 'inspector',
    permissions: {
      publish: [Subjects.api('list'), Subjects.api('status'), Subjects.api('cancel')],
      subscribe: [`${API_ROOT}.events.migration.>`, `${inboxPrefixOf('inspector')}.>`],
    },
  };
  return [{ name: 'admin' }, operator, inspector, ...agents];
}

/** The bus address of a local cluster's inspector identity (read statuses and events, cancel). */
export function inspectorBus(rec: ClusterRecord): BusAddress {
  return { url: rec.natsUrl, seedFile: seedFileFor(rec.plan.cluster, 'inspector'), inboxPrefix: inboxPrefixOf('inspector') };
}

/** The bus address of the Kubernetes operator identity of a local cluster (restricted, own inbox). */
export function operatorBus(rec: ClusterRecord): BusAddress {
  return { url: rec.natsUrl, seedFile: seedFileFor(rec.plan.cluster, 'operator'), inboxPrefix: inboxPrefixOf('operator') };
}

export function seedFileFor(cluster: string, identity: string): string {
  return path.join(credsDir(cluster), `${identity}.nk`);
}

/** The bus address the CLI uses for a cluster: its recorded URL with the admin identity. */
export function adminBus(rec: ClusterRecord): BusAddress {
  return { url: rec.natsUrl, seedFile: seedFileFor(rec.plan.cluster, 'admin') };
}

export interface UpOptions {
  cluster: string;
  nodes: number;
  /** External bus; the embedded server is started when absent. */
  bus?: BusAddress;
  onProgress?: (line: string) => void;
}

/** Starts a control-plane process (`podmotion agent|coordinator ...`) detached, logging to its own file. */
async function spawnDaemon(args: string[], logFile: string, bus: BusAddress): Promise<ProcessRef> {
  await mkdir(path.dirname(logFile), { recursive: true, mode: 0o700 });
  const log = await open(logFile, 'a', 0o600);
  const env = { ...process.env, NATS_URL: bus.url, PODMOTION_NKEY: bus.seedFile ?? '', PODMOTION_INBOX_PREFIX: bus.inboxPrefix ?? '' };
  const child = spawn(process.execPath, [CLI_ENTRY, ...args], { detached: true, stdio: ['ignore', log.fd, log.fd], env });
  await log.close();
  child.unref();
  const ref = child.pid !== undefined ? await refOf(child.pid) : undefined;
  if (!ref) throw new NodeOperationError(`podmotion ${args[0]} did not start (see ${logFile})`);
  return ref;
}

function spawnAgent(rec: ClusterRecord, node: string, bus: BusAddress): Promise<ProcessRef> {
  return spawnDaemon(['agent', '--cluster', rec.plan.cluster, '--node', node], agentLogFile(rec.plan.cluster, node), bus);
}

/** Starts the cluster's coordinator and records it; used by `cluster up` and to restart a crashed one. */
export async function startCoordinatorProcess(rec: ClusterRecord, bus: BusAddress): Promise<ProcessRef> {
  rec.coordinator = await spawnDaemon(['coordinator', '--cluster', rec.plan.cluster], coordinatorLogFile(rec.plan.cluster), bus);
  await writeClusterRecord(rec);
  return rec.coordinator;
}

/** Waits until every node of the plan has a registration in the nodes bucket. */
export async function waitForAgents(nc: NatsConnection, plan: ClusterPlan, timeoutMs: number): Promise<NodeRegistration[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const live = await readRegistrations(nc);
    const regs = plan.nodes.flatMap((n) => live.get(n.name) ?? []);
    if (regs.length === plan.nodes.length) return regs;
    if (Date.now() > deadline) {
      const missing = plan.nodes.filter((n) => !regs.some((r) => r.node === n.name)).map((n) => n.name);
      throw new NodeOperationError(`node agents did not register within ${timeoutMs} ms: ${missing.join(', ')} (see ${path.join(clusterDir(plan.cluster), 'logs')})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The coordinator answers the micro-service PING once it serves the API. */
export const COORDINATOR_READY_TIMEOUT_MS = 15_000;

export async function waitForCoordinator(nc: NatsConnection, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await nc.request('$SRV.PING.podmotion', new Uint8Array(), { timeout: 500 });
      return;
    } catch {
      if (Date.now() > deadline) throw new NodeOperationError(`the coordinator did not start within ${timeoutMs} ms (see coordinator.log in the cluster's logs)`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Brings a cluster up. Anything left by an earlier crashed cluster of the same name is removed first. */
export async function clusterUp(opts: UpOptions): Promise<ClusterRecord> {
  const say = opts.onProgress ?? (() => {});
  const plan = planCluster(opts.cluster, opts.nodes);
  const existing = await readClusterRecord(plan.cluster);
  if (existing) throw new ConflictError(`cluster ${plan.cluster} is already up; run: podmotion cluster down --cluster ${plan.cluster}`);
  await clusterDown(plan.cluster);
  await mkdir(clusterDir(plan.cluster), { recursive: true, mode: 0o700 });
  const rec: ClusterRecord = { plan, createdAtMs: Date.now(), natsUrl: opts.bus?.url ?? '', agents: {} };
  try {
    await writeClusterRecord(rec);
    say(`network: underlay bridge, VXLAN overlay, ${plan.nodes.length} nodes + client`);
    await createFabric(plan);
    const ids = await ensureIdentities(credsDir(plan.cluster), identitySpecs(plan));
    let admin: BusAddress;
    if (opts.bus) {
      admin = opts.bus;
    } else {
      const srv = await startEmbedded(ids, { detached: true });
      const proc = await refOf(srv.pid);
      if (!proc) throw new NodeOperationError(`nats-server exited at start (see ${srv.logFile})`);
      rec.nats = { proc, storeDir: srv.storeDir, logFile: srv.logFile };
      rec.natsUrl = srv.url;
      admin = adminBus(rec);
      say(`bus: embedded nats-server with JetStream at ${srv.url}`);
    }
    await writeClusterRecord(rec);
    const nc = await connectBus(admin, 'podmotion-cluster-up');
    try {
      await ensureBusResources(nc);
      for (const n of plan.nodes) {
        const bus = opts.bus ?? { url: rec.natsUrl, seedFile: seedFileFor(plan.cluster, `agent-${n.name}`), inboxPrefix: inboxPrefixOf(`agent-${n.name}`) };
        rec.agents[n.name] = await spawnAgent(rec, n.name, bus);
        await writeClusterRecord(rec);
      }
      await waitForAgents(nc, plan, AGENTS_READY_TIMEOUT_MS);
      say(`agents: ${plan.nodes.length} registered`);
      await startCoordinatorProcess(rec, opts.bus ?? adminBus(rec));
      await waitForCoordinator(nc, COORDINATOR_READY_TIMEOUT_MS);
      say('coordinator: serving podmotion.v1');
    } finally {
      await nc.close();
    }
    return rec;
  } catch (e) {
    await clusterDown(plan.cluster);
    throw e;
  }
}

export interface DownSummary {
  cluster: string;
  hadRecord: boolean;
  processesStopped: number;
  namespacesRemoved: string[];
}

/** Removes every entry of `dir` whose name starts with `prefix` (images and traffic-hold pins a crash left). */
async function sweepPrefixed(dir: string, prefix: string): Promise<void> {
  for (const e of await readdir(dir).catch(() => [] as string[])) {
    if (e.startsWith(prefix)) await rm(path.join(dir, e), { recursive: true, force: true });
  }
}

/** Tears a cluster down. Idempotent; works from whatever is left on disk. */
export async function clusterDown(cluster: string): Promise<DownSummary> {
  const rec = await readClusterRecord(cluster);
  let stopped = 0;
  const procs: ProcessRef[] = [];
  if (rec) {
    procs.push(...Object.values(rec.agents));
    if (rec.coordinator) procs.push(rec.coordinator);
  }
  for (const pod of await listPodRecords(cluster)) {
    if (await isAlive(pod.init)) stopped++;
    await killPodProcesses(pod.init, pod.holder);
  }
  for (const p of procs) {
    const before = await refOf(p.pid);
    await stopRef(p, 2000);
    if (before?.startTicks === p.startTicks) stopped++;
  }
  const fabric = await destroyFabric(cluster);
  stopped += fabric.killed.length;
  if (rec?.nats) {
    const before = await refOf(rec.nats.proc.pid);
    await stopRef(rec.nats.proc, 5000);
    if (before?.startTicks === rec.nats.proc.startTicks) stopped++;
    await removeStore(rec.nats.storeDir);
  }
  await removeClusterDir(cluster);
  await sweepPrefixed(IMAGES_ROOT, `${cluster}-`);
  await sweepPrefixed(BPF_PIN_ROOT, `${cluster}-`);
  return { cluster, hadRecord: rec !== undefined, processesStopped: stopped, namespacesRemoved: fabric.namespaces };
}

/** The record of a running cluster, or a NotFoundError telling the user how to start one. */
export async function requireCluster(cluster: string): Promise<ClusterRecord> {
  const rec = await readClusterRecord(cluster);
  if (!rec) throw new NotFoundError(`cluster ${cluster} is not up; run: podmotion cluster up --cluster ${cluster}`);
  return rec;
}
