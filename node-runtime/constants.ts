/**
 * Every path, name prefix and address range the node runtime uses, in one place. Nothing else in
 * node-runtime/ spells a path or a namespace name: cleanup after a crash relies on these prefixes.
 */
import path from 'node:path';

/** Root of run state: cluster records, pod records, credentials, logs. Overridable for tests. */
export const STATE_ROOT = process.env['PODMOTION_STATE_DIR'] ?? '/run/podmotion';

/** Every network namespace PodMotion creates starts with this, so leftovers can be found and removed. */
export const NETNS_PREFIX = 'pm-';
export const NETNS_DIR = '/run/netns';

export const DEFAULT_CLUSTER = 'local';

/** Cluster names end up inside namespace names and must stay short and shell-safe. */
export const CLUSTER_NAME_PATTERN = /^[a-z][a-z0-9]{0,11}$/;
/** Pod and node names: DNS-label-like, short enough for derived interface names. */
export const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/;

/** Nodes of a local cluster, and the maximum the addressing plan supports. */
export const DEFAULT_NODES = 3;
export const MAX_NODES = 50;

/** Underlay: the "physical" network between nodes, a bridge inside the cluster's own namespace. */
export const UNDERLAY_BRIDGE = 'br0';
export const UNDERLAY_PREFIX = '172.30.0.';
export const UNDERLAY_CLIENT_HOST = 2;
export const UNDERLAY_NODE_HOST_BASE = 10;

/** Service virtual IPs (ClusterIPs), as a cluster's --service-cluster-ip-range; node ports as the API server's default range. */
export const SERVICE_CIDR = '10.96.0.0/16';
export const SERVICE_IP_PREFIX = '10.96.0.';
export const NODE_PORT_MIN = 30000;
export const NODE_PORT_MAX = 32767;

/** Overlay (flannel-like): node N owns 10.244.N.0/24; the client namespace is overlay member 0. */
export const POD_NET_PREFIX = '10.244.';
export const POD_NETWORK = '10.244.0.0/16';
export const VXLAN_DEV = 'vx0';
export const VXLAN_VNI = 1;
export const VXLAN_PORT = 4789;
/** 1500 on the underlay minus 50 bytes of VXLAN encapsulation. */
export const OVERLAY_MTU = 1450;
/** Node-side interface facing the underlay, and the pod-side interface name. */
export const NODE_UPLINK = 'eth0';
export const POD_IFACE = 'eth0';
/** Pods route via a link-local gateway held by the node side of their veth, the same on every node,
 * so a pod keeps working routes when it moves to another node. */
export const POD_GATEWAY = '169.254.1.1';
/** Fixed MAC of every node-side pod veth: the pod's neighbour entry for its gateway stays valid across nodes. */
export const POD_GATEWAY_MAC = 'ee:ee:ee:ee:ee:ee';
/** First host number handed to pods in a node's /24. */
export const POD_HOST_MIN = 10;
export const POD_HOST_MAX = 250;

/** A cluster's state directory; refuses any name that is not a plain cluster name (it is removed with rm -rf). */
export function clusterDir(cluster: string): string {
  if (!CLUSTER_NAME_PATTERN.test(cluster)) throw new Error(`refusing cluster name ${JSON.stringify(cluster)}`);
  return path.join(STATE_ROOT, 'clusters', cluster);
}
export function clusterFile(cluster: string): string {
  return path.join(clusterDir(cluster), 'cluster.json');
}
export function podsDir(cluster: string): string {
  return path.join(clusterDir(cluster), 'pods');
}
/** Pod records are per node: during a migration the source and destination each keep their own. */
/** Services of the local cluster (its kube-proxy emulation), one JSON record each. */
export function servicesDir(cluster: string): string {
  return path.join(clusterDir(cluster), 'services');
}
export function podRecordFile(cluster: string, node: string, pod: string): string {
  return path.join(podsDir(cluster), node, `${pod}.json`);
}
export function podLogFile(cluster: string, pod: string): string {
  return path.join(clusterDir(cluster), 'logs', `${pod}.log`);
}
export function credsDir(cluster: string): string {
  return path.join(clusterDir(cluster), 'creds');
}
export function coordinatorLogFile(cluster: string): string {
  return path.join(clusterDir(cluster), 'logs', 'coordinator.log');
}
export function agentLogFile(cluster: string, node: string): string {
  return path.join(clusterDir(cluster), 'logs', `agent-${node}.log`);
}

export function underlayNetns(cluster: string): string {
  return `${NETNS_PREFIX}${cluster}-underlay`;
}
export function nodeNetns(cluster: string, node: string): string {
  return `${NETNS_PREFIX}${cluster}-${node}`;
}
export function clientNetns(cluster: string): string {
  return `${NETNS_PREFIX}${cluster}-client`;
}
/** A pod's namespace is per node: during a migration the source and destination copies coexist. */
export function podNetns(cluster: string, node: string, pod: string): string {
  return `${NETNS_PREFIX}${cluster}-${node}-pod-${pod}`;
}

/** Root of the PodMotion checkout or install (dist/node-runtime/constants.js is two levels down). */
export const PROJECT_ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');

/** The CRIU the project built (make deps), unless PODMOTION_CRIU names another binary. */
export function criuBinary(): string {
  return process.env['PODMOTION_CRIU'] ?? path.join(PROJECT_ROOT, '.cache', 'criu', 'current', 'sbin', 'criu');
}

/** CRIU features reported in each node's capabilities (names as `criu check --feature` spells them). */
export const CRIU_FEATURES = ['mem_dirty_track', 'uffd', 'uffd-noncoop', 'tcp_half_closed'] as const;

/** The podmotion CLI entry, used to spawn agents and the coordinator as separate processes. */
export const CLI_ENTRY = path.join(PROJECT_ROOT, 'dist', 'cli', 'podmotion.js');

/** Native helpers built by scripts/build-native.sh. */
export const NATIVE_DIR = path.join(PROJECT_ROOT, 'dist', 'native');

/** Checkpoint images live on tmpfs (they are memory, and a secret): one 0700 directory per migration. */
export const IMAGES_ROOT = process.env['PODMOTION_IMAGES_DIR'] ?? '/dev/shm/podmotion';
export function imagesDir(cluster: string, migrationId: string, role: 'source' | 'destination' | 'reclaim' | 'precopy-source' | 'precopy-destination' | 'lazy'): string {
  return path.join(IMAGES_ROOT, `${cluster}-${migrationId}-${role}`);
}
/** bpffs pins of one pod's traffic hold on one node. */
export const BPF_PIN_ROOT = '/sys/fs/bpf/podmotion';
export function holdPinDir(cluster: string, node: string, pod: string): string {
  return path.join(BPF_PIN_ROOT, `${cluster}-${node}-${pod}`);
}

/**
 * CRIU's kernel-feature cache directory, compiled into the CRIU build (criu-shim/build/build-criu.sh,
 * KDAT_RUNDIR): on tmpfs, so CRIU keeps its probe results instead of redoing them at every start.
 */
export const CRIU_KDAT_DIR = '/dev/shm/podmotion-criu';

/**
 * Pod volumes in the local cluster. A pod sees each volume at one path, the same on every node (as a
 * hostPath is). What is there is the copy of the node the pod runs on (`local` tier; the other nodes'
 * copies wait beside it) or the one directory every node shares (`shared` tier). Outside the state
 * directory, which stays root's alone: a pod running as another user must be able to pass through the
 * folders above its volume (mode 0711).
 */
export function clusterVolumesDir(cluster: string): string {
  return path.join(`${STATE_ROOT}-volumes`, path.basename(clusterDir(cluster)));
}
export function podVolumePath(cluster: string, pod: string, volume: string): string {
  return path.join(clusterVolumesDir(cluster), pod, volume);
}
/** A node's copy of a `local` volume while it is not the one the pod sees: stands for that node's disk. */
export function nodeVolumeDir(cluster: string, node: string, pod: string, volume: string): string {
  return path.join(clusterVolumesDir(cluster), '.disks', node, pod, volume);
}
