/**
 * The addressing plan of a local cluster: a pure function of its name and node count, so `cluster up`,
 * the agents and `cluster down` all derive the same addresses without asking each other.
 */
import { createHash } from 'node:crypto';
import {
  CLUSTER_NAME_PATTERN,
  MAX_NODES,
  POD_HOST_MAX,
  POD_HOST_MIN,
  POD_NET_PREFIX,
  UNDERLAY_CLIENT_HOST,
  UNDERLAY_NODE_HOST_BASE,
  UNDERLAY_PREFIX,
  clientNetns,
  nodeNetns,
  underlayNetns,
} from './constants.js';
import { InvalidRequestError } from '../bus/errors.js';

/** One member of the overlay: a node, or the client namespace (index 0). */
export interface OverlayMember {
  name: string;
  index: number;
  netns: string;
  /** Address on the underlay bridge. */
  underlayIp: string;
  /** Port name on the underlay bridge side. */
  underlayPort: string;
  /** MAC of the member's VXLAN device (stable, derived from cluster and index). */
  vtepMac: string;
  /** This member's /24 in the pod network. */
  podCidr: string;
  /** Address of the VXLAN device: the .0 of the member's /24, as flannel does it. */
  vtepIp: string;
}

export interface ClusterPlan {
  cluster: string;
  underlayNetns: string;
  nodes: OverlayMember[];
  client: OverlayMember;
}

export function nodeName(index: number): string {
  return `node-${index}`;
}

/** Locally administered unicast MAC derived from a string: stable across runs. */
export function stableMac(seed: string): string {
  const h = createHash('sha256').update(seed).digest();
  const bytes = [0x0a, 0x58, h[0]!, h[1]!, h[2]!, h[3]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

function member(cluster: string, name: string, index: number, netns: string, underlayHost: number): OverlayMember {
  return {
    name,
    index,
    netns,
    underlayIp: `${UNDERLAY_PREFIX}${underlayHost}`,
    underlayPort: `u-${name}`.slice(0, 15),
    vtepMac: stableMac(`${cluster}/vtep/${index}`),
    podCidr: `${POD_NET_PREFIX}${index}.0/24`,
    vtepIp: `${POD_NET_PREFIX}${index}.0`,
  };
}

/** Plans a cluster of `nodeCount` nodes plus the client namespace. */
export function planCluster(cluster: string, nodeCount: number): ClusterPlan {
  if (!CLUSTER_NAME_PATTERN.test(cluster)) {
    throw new InvalidRequestError(`cluster name "${cluster}" must be 1-12 lowercase letters or digits, starting with a letter`);
  }
  if (!Number.isInteger(nodeCount) || nodeCount < 1 || nodeCount > MAX_NODES) {
    throw new InvalidRequestError(`--nodes must be a whole number from 1 to ${MAX_NODES} (got ${nodeCount})`);
  }
  const nodes: OverlayMember[] = [];
  for (let i = 1; i <= nodeCount; i++) {
    nodes.push(member(cluster, nodeName(i), i, nodeNetns(cluster, nodeName(i)), UNDERLAY_NODE_HOST_BASE + i));
  }
  const client = member(cluster, 'client', 0, clientNetns(cluster), UNDERLAY_CLIENT_HOST);
  return { cluster, underlayNetns: underlayNetns(cluster), nodes, client };
}

/** The pod address for host number `host` in a node's /24. */
export function podIp(nodeIndex: number, host: number): string {
  return `${POD_NET_PREFIX}${nodeIndex}.${host}`;
}

/** A pod's MAC is derived from its IP, so it is the same wherever the pod runs. */
export function podMac(ipAddr: string): string {
  const parts = ipAddr.split('.').map((p) => Number(p));
  return ['0a', '58', ...parts.map((p) => p.toString(16).padStart(2, '0'))].join(':');
}

/** Lowest free host number in a node's pod range, or undefined when the range is full. */
export function allocateHost(used: ReadonlySet<number>): number | undefined {
  for (let h = POD_HOST_MIN; h <= POD_HOST_MAX; h++) if (!used.has(h)) return h;
  return undefined;
}

/** Name of the node-side veth of a pod: short hash, since interface names are limited to 15 bytes. */
export function podHostIface(pod: string): string {
  return `pm${createHash('sha256').update(pod).digest('hex').slice(0, 10)}`;
}
