/** On-disk records of clusters and pods: what `cluster down` needs to clean up after a crash. */
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ClusterPlan } from './plan.js';
import type { ProcessRef } from './procs.js';
import { CLUSTER_NAME_PATTERN, STATE_ROOT, clusterDir, clusterFile, clusterVolumesDir, podRecordFile, podsDir } from './constants.js';
import type { PodVolume } from './volumes.js';

/** What `cluster up` recorded: the plan, the processes it started and where the bus is. */
export interface ClusterRecord {
  plan: ClusterPlan;
  createdAtMs: number;
  natsUrl: string;
  /** Present when PodMotion started the server itself (embedded default). */
  nats?: { proc: ProcessRef; storeDir: string; logFile: string };
  agents: Record<string, ProcessRef>;
  coordinator?: ProcessRef;
}

/** One pod on one node, as its node agent recorded it. */
export interface PodRecord {
  name: string;
  node: string;
  ip: string;
  mac: string;
  netns: string;
  hostIface: string;
  port?: number;
  command: string[];
  /** A pod of several containers (each its own process tree under the init). */
  containers?: Array<{ name: string; command: string[] }>;
  /** The pod's init (pid 1 in its pid namespace). */
  init: ProcessRef;
  /** The `unshare` process that waits for the init; absent for restored pods. */
  holder?: ProcessRef;
  logFile: string;
  startedAtMs: number;
  /** Set on a destination's copy until its migration's cutover: the pod is not yet served from here. */
  incoming?: string;
  /** The migration whose rollback moved this copy back here (a repeated move-back request finds it done). */
  reclaimedBy?: string;
  /** The user the pod's command runs as (default root). */
  user?: string;
  volumes?: PodVolume[];
}

/** Writes JSON atomically (temp file + rename): a crash never leaves half a record. */
export async function writeJson(file: string, value: unknown, mode = 0o600): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + '\n', { mode });
  await rename(tmp, file);
}

async function readJson<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export function readClusterRecord(cluster: string): Promise<ClusterRecord | undefined> {
  return readJson<ClusterRecord>(clusterFile(cluster));
}

export function writeClusterRecord(rec: ClusterRecord): Promise<void> {
  return writeJson(clusterFile(rec.plan.cluster), rec);
}

/** Names of every cluster with a record on disk. */
export async function listClusters(): Promise<string[]> {
  // A cluster whose state was lost may still have pod volumes (an interrupted run): it is listed too.
  const names = new Set<string>();
  for (const dir of [path.join(STATE_ROOT, 'clusters'), `${STATE_ROOT}-volumes`]) {
    for (const n of await readdir(dir).catch(() => [] as string[])) if (CLUSTER_NAME_PATTERN.test(n)) names.add(n);
  }
  return [...names].sort();
}

export async function removeClusterDir(cluster: string): Promise<void> {
  await rm(clusterVolumesDir(cluster), { recursive: true, force: true });
  await rm(clusterDir(cluster), { recursive: true, force: true });
}

export function readPodRecord(cluster: string, node: string, pod: string): Promise<PodRecord | undefined> {
  return readJson<PodRecord>(podRecordFile(cluster, node, pod));
}

export function writePodRecord(cluster: string, rec: PodRecord): Promise<void> {
  return writeJson(podRecordFile(cluster, rec.node, rec.name), rec);
}

export async function removePodRecord(cluster: string, node: string, pod: string): Promise<void> {
  await rm(podRecordFile(cluster, node, pod), { force: true });
}

/** Every pod record of the cluster, on every node (a pod being migrated has one on each side). */
export async function listPodRecords(cluster: string): Promise<PodRecord[]> {
  let nodes: string[];
  try {
    nodes = (await readdir(podsDir(cluster))).sort();
  } catch {
    return [];
  }
  const recs: PodRecord[] = [];
  for (const node of nodes) {
    let names: string[];
    try {
      names = await readdir(path.join(podsDir(cluster), node));
    } catch {
      continue;
    }
    for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
      const r = await readJson<PodRecord>(path.join(podsDir(cluster), node, n));
      if (r) recs.push(r);
    }
  }
  return recs;
}
