/**
 * The local cluster's network fabric: an underlay bridge in its own namespace, one namespace per node
 * and one for clients, joined by a VXLAN overlay with static routes, neighbour and FDB entries
 * (flannel's vxlan backend, without its daemon). Nothing here touches the host's own namespace.
 */
import { readdir, rm } from 'node:fs/promises';
import { ip, ipBatch, inNetns, run } from './exec.js';
import {
  NETNS_DIR,
  NETNS_PREFIX,
  NODE_UPLINK,
  OVERLAY_MTU,
  UNDERLAY_BRIDGE,
  VXLAN_DEV,
  VXLAN_PORT,
  VXLAN_VNI,
} from './constants.js';
import type { ClusterPlan, OverlayMember } from './plan.js';
import { netnsInode, pidsInNetns } from './procs.js';

/** Creates a named network namespace with its loopback up; an existing one of that name is an error. */
export async function addNetns(name: string): Promise<void> {
  await ip(['netns', 'add', name]);
  await ip(['link', 'set', 'lo', 'up'], name);
}

/** Sets net.* sysctls inside a namespace: /proc/sys/net answers for the netns of whoever opens it. */
export async function netnsSysctls(netns: string, values: Record<string, string>): Promise<void> {
  const args = Object.entries(values).map(([k, v]) => `${k}=${v}`);
  await inNetns(netns, 'sysctl', ['-q', '-w', ...args]);
}

async function addMember(plan: ClusterPlan, m: OverlayMember): Promise<void> {
  await addNetns(m.netns);
  await ipBatch(
    [
      `link add ${m.underlayPort} type veth peer name ${NODE_UPLINK} netns ${m.netns}`,
      `link set ${m.underlayPort} master ${UNDERLAY_BRIDGE} up`,
    ],
    plan.underlayNetns,
  );
  await netnsSysctls(m.netns, {
    'net.ipv4.ip_forward': '1',
    'net.ipv4.conf.all.rp_filter': '0',
    'net.ipv4.conf.default.rp_filter': '0',
  });
  await ipBatch(
    [
      `addr add ${m.underlayIp}/24 dev ${NODE_UPLINK}`,
      `link set ${NODE_UPLINK} up`,
      `link add ${VXLAN_DEV} type vxlan id ${VXLAN_VNI} dstport ${VXLAN_PORT} local ${m.underlayIp} dev ${NODE_UPLINK} nolearning`,
      `link set ${VXLAN_DEV} address ${m.vtepMac} mtu ${OVERLAY_MTU} up`,
      `addr add ${m.vtepIp}/32 dev ${VXLAN_DEV}`,
    ],
    m.netns,
  );
}

/** Routes, neighbour and FDB entries that let member `m` reach every peer's pod CIDR over VXLAN. */
async function linkPeers(m: OverlayMember, peers: readonly OverlayMember[]): Promise<void> {
  const ipLines: string[] = [];
  const fdbLines: string[] = [];
  for (const p of peers) {
    if (p.index === m.index) continue;
    ipLines.push(`route add ${p.podCidr} via ${p.vtepIp} dev ${VXLAN_DEV} onlink`);
    ipLines.push(`neigh add ${p.vtepIp} lladdr ${p.vtepMac} dev ${VXLAN_DEV} nud permanent`);
    fdbLines.push(`fdb append ${p.vtepMac} dev ${VXLAN_DEV} dst ${p.underlayIp} self permanent`);
  }
  await ipBatch(ipLines, m.netns);
  if (fdbLines.length > 0) await run('bridge', ['-n', m.netns, '-batch', '-'], { input: fdbLines.join('\n') + '\n' });
}

/** Builds the whole fabric for a plan. On failure the caller tears down with `destroyFabric`. */
export async function createFabric(plan: ClusterPlan): Promise<void> {
  await addNetns(plan.underlayNetns);
  await ipBatch([`link add ${UNDERLAY_BRIDGE} type bridge`, `link set ${UNDERLAY_BRIDGE} up`], plan.underlayNetns);
  const members = [plan.client, ...plan.nodes];
  for (const m of members) await addMember(plan, m);
  await Promise.all(members.map((m) => linkPeers(m, members)));
}

/** Names of existing namespaces that belong to a cluster (all start with `pm-<cluster>-`). */
export async function clusterNamespaces(cluster: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(NETNS_DIR);
  } catch {
    return [];
  }
  const prefix = `${NETNS_PREFIX}${cluster}-`;
  return entries.filter((e) => e.startsWith(prefix)).sort();
}

/** Cluster names that still own namespaces on this machine (also those whose record is gone). */
export async function clustersWithNamespaces(): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(NETNS_DIR);
  } catch {
    return [];
  }
  const names = new Set<string>();
  for (const e of entries) {
    const m = new RegExp(`^${NETNS_PREFIX}([a-z][a-z0-9]*)-`).exec(e);
    if (m) names.add(m[1]!);
  }
  return [...names].sort();
}

/**
 * Removes every namespace of a cluster, killing any process still inside one first (a namespace
 * with a live process would outlive `ip netns del`). Works from nothing but the names on disk.
 */
export async function destroyFabric(cluster: string): Promise<{ namespaces: string[]; killed: number[] }> {
  const names = await clusterNamespaces(cluster);
  const inodes = new Set<number>();
  for (const n of names) {
    const ino = await netnsInode(n);
    if (ino !== undefined) inodes.add(ino);
  }
  const pids = await pidsInNetns(inodes);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  // Deleting pods first, then nodes, then the underlay avoids moving veth peers into the host namespace.
  const order = [...names].sort((a, b) => rank(a) - rank(b));
  for (const n of order) {
    try {
      await ip(['netns', 'del', n]);
    } catch {
      // A half-created entry can be a plain file without a mount: remove it directly.
      await rm(`${NETNS_DIR}/${n}`, { force: true });
    }
  }
  return { namespaces: names, killed: pids };
}

function rank(ns: string): number {
  if (ns.includes('-pod-')) return 0;
  if (ns.endsWith('-underlay')) return 2;
  return 1;
}
