/**
 * The local pod runtime: a pod is a process tree in its own network, pid, ipc and uts namespaces,
 * attached to its node by a veth pair and routed like Calico (a /32 per pod, a link-local gateway
 * that is the same on every node), so its IP and MAC can be recreated unchanged on any node.
 */
import { spawn } from 'node:child_process';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { ConflictError, InvalidRequestError, NodeOperationError, NotFoundError } from '../bus/errors.js';
import { addNetns } from './fabric.js';
import { inNetns, ip, ipBatch } from './exec.js';
import {
  NAME_PATTERN,
  OVERLAY_MTU,
  POD_GATEWAY,
  POD_GATEWAY_MAC,
  POD_IFACE,
  NATIVE_DIR,
  podLogFile,
  podNetns,
} from './constants.js';
import { createVolume, removePodVolumes, userIds, volumeEnvName, VOLUME_TIERS, type PodVolume, type VolumeTier } from './volumes.js';
import { allocateHost, podHostIface, podIp, podMac, type OverlayMember } from './plan.js';
import { childrenOf, refOf, signalRef, stopRef, waitGone, type ProcessRef } from './procs.js';
import { listPodRecords, readPodRecord, removePodRecord, writePodRecord, type PodRecord } from './records.js';

/** How long a new pod may take to show its init process; unshare forks at once, so seconds mean trouble. */
const POD_INIT_TIMEOUT_MS = 5_000;
/** How long a pod with --port may take to listen; covers slow interpreters starting up. */
export const POD_READY_TIMEOUT_MS = 15_000;
/** Lines `pod logs` returns at most: a bound on what one bus reply carries. */
export const MAX_LOG_LINES = 2_000;

export interface RunPodSpec {
  name: string;
  /** The pod's one command; empty when it has containers. */
  command: string[];
  /** Several containers instead of one command: each its own process tree under the pod's init (pm-init). */
  containers?: Array<{ name: string; command: string[] }>;
  port?: number;
  /** Run the command as this user (its uid, gid and groups), not as root. */
  user?: string;
  /** Directories the pod keeps; each appears at a fixed path, named in PODMOTION_VOLUME_<NAME>. */
  volumes?: Array<{ name: string; tier: string }>;
}

export function validatePodSpec(spec: RunPodSpec): void {
  if (!NAME_PATTERN.test(spec.name)) {
    throw new InvalidRequestError(`pod name "${spec.name}" must be lowercase letters, digits and '-', at most 40 characters`);
  }
  const containers = spec.containers ?? [];
  if (containers.length > 0 && spec.command.length > 0) throw new InvalidRequestError('pod run takes a command after -- or containers, not both');
  if (containers.length === 0 && spec.command.length === 0) throw new InvalidRequestError('pod run needs a command after -- (or --container NAME=CMD)');
  const names = new Set<string>();
  for (const c of containers) {
    if (!NAME_PATTERN.test(c.name)) throw new InvalidRequestError(`container name "${c.name}" must be lowercase letters, digits and '-'`);
    if (names.has(c.name)) throw new InvalidRequestError(`container ${c.name} is named twice`);
    if (c.command.length === 0) throw new InvalidRequestError(`container ${c.name} has no command`);
    if (c.command.includes('---')) throw new InvalidRequestError(`container ${c.name}: "---" cannot be an argument (it separates containers)`);
    names.add(c.name);
  }
  if (spec.port !== undefined && (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535)) {
    throw new InvalidRequestError(`--port must be 1-65535 (got ${spec.port})`);
  }
  const seen = new Set<string>();
  for (const v of spec.volumes ?? []) {
    if (!VOLUME_TIERS.includes(v.tier as VolumeTier)) throw new InvalidRequestError(`volume ${v.name}: unknown tier ${JSON.stringify(v.tier)} (tiers: ${VOLUME_TIERS.join(', ')})`);
    if (seen.has(v.name)) throw new InvalidRequestError(`volume ${v.name} is named twice`);
    seen.add(v.name);
  }
}

/** Creates (or takes over data kept for) a new pod's volumes; returns what its record keeps. */
async function setUpVolumes(cluster: string, node: string, spec: RunPodSpec, owner: { uid: number; gid: number } | undefined, adopted: { any: boolean }): Promise<PodVolume[]> {
  const out: PodVolume[] = [];
  for (const v of spec.volumes ?? []) {
    const { adopted: kept, ...vol } = await createVolume(cluster, node, spec.name, v, owner);
    if (kept) adopted.any = true;
    out.push(vol);
  }
  return out;
}

/** Creates the pod's namespace and veth, addressed and routed, but starts nothing in it. */
export async function preparePodNetwork(cluster: string, node: OverlayMember, pod: string, ipAddr: string): Promise<{ netns: string; hostIface: string; mac: string }> {
  const netns = podNetns(cluster, node.name, pod);
  const hostIface = podHostIface(pod);
  const mac = podMac(ipAddr);
  await addNetns(netns);
  await ipBatch(
    [
      `link add ${hostIface} type veth peer name ${POD_IFACE} netns ${netns}`,
      `link set ${hostIface} address ${POD_GATEWAY_MAC} mtu ${OVERLAY_MTU} up`,
      // The gateway address sits on every pod's node-side veth: the node answers the pod's ARP for
      // it as a local address, with no proxy ARP and no route toward a gateway that does not exist.
      `addr add ${POD_GATEWAY}/32 dev ${hostIface} scope link`,
      // replace: the relay may already route this IP over the overlay (the pod lived elsewhere before).
      `route replace ${ipAddr}/32 dev ${hostIface}`,
    ],
    node.netns,
  );
  await ipBatch(
    [
      `link set ${POD_IFACE} address ${mac} mtu ${OVERLAY_MTU} up`,
      `addr add ${ipAddr}/32 dev ${POD_IFACE}`,
      `route add ${POD_GATEWAY} dev ${POD_IFACE} scope link`,
      `route add default via ${POD_GATEWAY} dev ${POD_IFACE}`,
    ],
    netns,
  );
  return { netns, hostIface, mac };
}

/** Removes a pod's namespace (its veth pair and /32 route go with it). Missing is fine. */
export async function removePodNetwork(netns: string): Promise<void> {
  try {
    await ip(['netns', 'del', netns]);
  } catch {
    await rm(`/run/netns/${netns}`, { force: true });
  }
}

/**
 * What the pod's first process runs: the command itself; or, as another user or with several containers,
 * pm-init (a root init) with each container's command, under setpriv when it runs as that user.
 */
function initArgs(spec: RunPodSpec): string[] {
  const asUser = spec.user !== undefined ? ['setpriv', `--reuid=${spec.user}`, `--regid=${spec.user}`, '--init-groups', '--'] : [];
  const commands = spec.containers?.length ? spec.containers.map((c) => c.command) : [spec.command];
  if (commands.length === 1 && spec.user === undefined) return commands[0]!;
  return [path.join(NATIVE_DIR, 'pm-init'), ...commands.flatMap((c, i) => [...(i > 0 ? ['---'] : []), ...asUser, ...c])];
}

async function startInit(netns: string, spec: RunPodSpec, logFile: string, volumes: readonly PodVolume[]): Promise<{ init: ProcessRef; holder: ProcessRef }> {
  await mkdir(path.dirname(logFile), { recursive: true, mode: 0o700 });
  const log = await open(logFile, 'a', 0o600);
  try {
    // nsenter joins the pod netns without a new mount namespace (CRIU refuses to dump one made by
    // `ip netns exec`); unshare --fork makes the command pid 1 of fresh pid/ipc/uts namespaces; setsid
    // makes it its own session leader, since CRIU refuses a session led from outside the pid namespace.
    const child = spawn(
      'nsenter',
      [`--net=/run/netns/${netns}`, '--', 'unshare', '--pid', '--ipc', '--uts', '--fork', '--',
        '/bin/sh', '-c', 'hostname "$0" && exec setsid "$@"', spec.name,
        ...initArgs(spec)],
      { detached: true, stdio: ['ignore', log.fd, log.fd], env: { ...process.env, ...Object.fromEntries(volumes.map((v) => [volumeEnvName(v.name), v.path])) } },
    );
    child.on('error', () => {});
    child.unref();
    const holderPid = child.pid;
    if (holderPid === undefined) throw new NodeOperationError(`cannot start pod ${spec.name}: spawn failed`);
    const deadline = Date.now() + POD_INIT_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const kids = await childrenOf(holderPid);
      const holder = await refOf(holderPid);
      if (kids.length > 0 && holder) {
        const init = await refOf(kids[0]!);
        if (init) return { init, holder };
      }
      if (!holder) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    // Whatever did start must not outlive the failure: the holder and anything it forked.
    for (const kid of await childrenOf(holderPid)) {
      try { process.kill(kid, 'SIGKILL'); } catch { /* gone */ }
    }
    try { process.kill(holderPid, 'SIGKILL'); } catch { /* gone */ }
    const tail = await readTail(logFile, 5);
    throw new NodeOperationError(`pod ${spec.name} did not start: ${tail.join(' | ') || 'no output'}`);
  } finally {
    await log.close();
  }
}

/** True once something in the pod's namespace listens on the TCP port. */
export async function isListening(netns: string, port: number): Promise<boolean> {
  const r = await inNetns(netns, 'ss', ['-Hltn', `sport = :${port}`]);
  return r.stdout.trim().length > 0;
}

async function waitListening(rec: PodRecord, port: number): Promise<void> {
  const deadline = Date.now() + POD_READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await isListening(rec.netns, port)) return;
    if ((await refOf(rec.init.pid))?.startTicks !== rec.init.startTicks) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const tail = await readTail(rec.logFile, 5);
  throw new NodeOperationError(`pod ${rec.name} is not listening on port ${port}: ${tail.join(' | ') || 'no output'}`);
}

/** Starts a pod on a node: namespace, address, process, record. Cleans up whatever it made on failure. */
export async function runPod(cluster: string, node: OverlayMember, spec: RunPodSpec): Promise<PodRecord> {
  validatePodSpec(spec);
  const all = await listPodRecords(cluster);
  if (all.some((p) => p.name === spec.name)) throw new ConflictError(`pod ${spec.name} already exists`);
  const used = new Set<number>();
  const prefix = podIp(node.index, 0).replace(/0$/, '');
  for (const p of all) if (p.ip.startsWith(prefix)) used.add(Number(p.ip.slice(prefix.length)));
  const host = allocateHost(used);
  if (host === undefined) throw new ConflictError(`node ${node.name} has no free pod address`);
  const ipAddr = podIp(node.index, host);
  const logFile = podLogFile(cluster, spec.name);
  let netns: string | undefined;
  let started: { init: ProcessRef; holder: ProcessRef } | undefined;
  let volumes: PodVolume[] = [];
  // Data a volume already held is not the failed start's to delete.
  const adopted = { any: false };
  try {
    const owner = spec.user !== undefined ? await userIds(spec.user) : undefined;
    const net = await preparePodNetwork(cluster, node, spec.name, ipAddr);
    netns = net.netns;
    volumes = await setUpVolumes(cluster, node.name, spec, owner, adopted);
    started = await startInit(net.netns, spec, logFile, volumes);
    const rec: PodRecord = {
      name: spec.name, node: node.name, ip: ipAddr, mac: net.mac, netns: net.netns, hostIface: net.hostIface,
      command: spec.command, ...(spec.containers?.length ? { containers: spec.containers } : {}), init: started.init, holder: started.holder, logFile, startedAtMs: Date.now(),
      ...(spec.port !== undefined ? { port: spec.port } : {}),
      ...(spec.user !== undefined ? { user: spec.user } : {}),
      ...(volumes.length ? { volumes } : {}),
    };
    if (spec.port !== undefined) await waitListening(rec, spec.port);
    await writePodRecord(cluster, rec);
    return rec;
  } catch (e) {
    if (started) await killPodProcesses(started.init, started.holder);
    if (netns) await removePodNetwork(netns);
    if (spec.volumes?.length && !adopted.any) await removePodVolumes(cluster, spec.name);
    throw e;
  }
}

/** Kills a pod's processes at once: a pod's init ignores SIGTERM, as pid 1 of a namespace does. */
export async function killPodProcesses(init: ProcessRef, holder?: ProcessRef): Promise<void> {
  // SIGKILL to a pid namespace's init kills every process in that namespace.
  await stopRef(init, 0);
  await waitGone(init, 2000);
  if (holder) await stopRef(holder, 500);
}

/** How long a pod stopped with its volumes kept may take to shut down before it is killed. */
const GRACEFUL_STOP_MS = 10_000;

/**
 * Deletes a pod: its processes, namespace, record and log, and its volumes unless `keepVolumes` (then the
 * pod is first asked to stop, with SIGINT — PostgreSQL's fast shutdown — and killed only after a grace).
 */
export async function deletePod(cluster: string, node: string, pod: string, o: { keepVolumes?: boolean } = {}): Promise<PodRecord> {
  const rec = await readPodRecord(cluster, node, pod);
  if (!rec) throw new NotFoundError(`pod ${pod} not found on ${node}`);
  if (o.keepVolumes && (await signalRef(rec.init, 'SIGINT'))) await waitGone(rec.init, GRACEFUL_STOP_MS);
  await killPodProcesses(rec.init, rec.holder);
  await removePodNetwork(rec.netns);
  if (rec.volumes?.length && !o.keepVolumes) await removePodVolumes(cluster, pod);
  await removePodRecord(cluster, node, pod);
  await rm(rec.logFile, { force: true });
  return rec;
}

/** The last `lines` lines of a log file (empty when there is none). */
export async function readTail(file: string, lines: number): Promise<string[]> {
  try {
    const st = await stat(file);
    // Read at most the last 1 MiB: logs can grow without bound, replies cannot.
    const start = Math.max(0, st.size - (1 << 20));
    const fh = await open(file, 'r');
    try {
      const buf = Buffer.alloc(st.size - start);
      await fh.read(buf, 0, buf.length, start);
      const all = buf.toString('utf8').split('\n');
      if (all[all.length - 1] === '') all.pop();
      return all.slice(-Math.min(lines, MAX_LOG_LINES));
    } finally {
      await fh.close();
    }
  } catch {
    return [];
  }
}

export async function podLogs(cluster: string, node: string, pod: string, lines: number): Promise<string[]> {
  const rec = await readPodRecord(cluster, node, pod);
  if (!rec) throw new NotFoundError(`pod ${pod} not found`);
  return readTail(rec.logFile, lines);
}

