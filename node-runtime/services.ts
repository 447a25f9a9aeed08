/**
 * Services of the local cluster, implemented the way kube-proxy's iptables mode does it on every node: a
 * ClusterIP DNATed to an endpoint in PREROUTING (traffic from pods) and OUTPUT (processes of the node), a
 * NodePort on every node's own addresses, masqueraded so replies return through the node that took the
 * connection, and `ctstate INVALID` dropped in FORWARD. Rules are written to every overlay member (the nodes
 * and the client namespace), whole, with iptables-restore: the cluster's namespaces hold no other rules.
 * Endpoints are pod IPs, which migration keeps, so moving a pod changes no rule: what it must carry is the
 * nodes' connection-tracking state (node-runtime/conntrack.ts).
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { ConflictError, InvalidRequestError, NotFoundError } from '../bus/errors.js';
import { NODE_PORT_MAX, NODE_PORT_MIN, POD_NETWORK, SERVICE_CIDR, SERVICE_IP_PREFIX, servicesDir } from './constants.js';
import { inNetns, ip } from './exec.js';
import type { ClusterPlan, OverlayMember } from './plan.js';
import { writeJson } from './records.js';

const NAME = /^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$/;
/** kube-proxy's masquerade mark bit. */
const MASQ_MARK = '0x4000';
const SERVICE_HOST_MIN = 10;
const SERVICE_HOST_MAX = 250;

export interface ServiceEndpoint {
  pod: string;
  ip: string;
}

export interface ServiceRecord {
  name: string;
  clusterIp: string;
  port: number;
  targetPort: number;
  nodePort?: number;
  endpoints: ServiceEndpoint[];
  createdAtMs: number;
}

export interface ServiceSpec {
  name: string;
  port: number;
  targetPort: number;
  nodePort?: number;
  endpoints: ServiceEndpoint[];
}

/** kube-proxy names its chains after a hash of the service (and endpoint): the same here. */
function chain(kind: string, ...parts: string[]): string {
  return `KUBE-${kind}-${createHash('sha256').update(parts.join('/')).digest('hex').slice(0, 16).toUpperCase()}`;
}

/** The iptables-restore input (nat and filter tables) for a set of services: pure, for tests. */
export function kubeProxyRules(services: readonly ServiceRecord[]): string {
  const nat: string[] = ['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]',
    ':KUBE-SERVICES - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-POSTROUTING - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
  const rules: string[] = [
    '-A PREROUTING -j KUBE-SERVICES', '-A OUTPUT -j KUBE-SERVICES', '-A POSTROUTING -j KUBE-POSTROUTING',
    `-A KUBE-MARK-MASQ -j MARK --or-mark ${MASQ_MARK}`,
    `-A KUBE-POSTROUTING -m mark ! --mark ${MASQ_MARK}/${MASQ_MARK} -j RETURN`,
    `-A KUBE-POSTROUTING -j MARK --xor-mark ${MASQ_MARK}`,
    '-A KUBE-POSTROUTING -j MASQUERADE --random-fully',
  ];
  for (const s of [...services].sort((a, b) => a.name.localeCompare(b.name))) {
    const svc = chain('SVC', s.name);
    nat.push(`:${svc} - [0:0]`);
    rules.push(`-A KUBE-SERVICES -d ${s.clusterIp}/32 -p tcp --dport ${s.port} -j ${svc}`);
    // Traffic to the ClusterIP from outside the pod network is masqueraded, as kube-proxy does by default.
    rules.push(`-A ${svc} ! -s ${POD_NETWORK} -d ${s.clusterIp}/32 -p tcp --dport ${s.port} -j KUBE-MARK-MASQ`);
    if (s.nodePort !== undefined) {
      const ext = chain('EXT', s.name);
      nat.push(`:${ext} - [0:0]`);
      rules.push(`-A KUBE-NODEPORTS -p tcp --dport ${s.nodePort} -j ${ext}`, `-A ${ext} -j KUBE-MARK-MASQ`, `-A ${ext} -j ${svc}`);
    }
    s.endpoints.forEach((e, i) => {
      const sep = chain('SEP', s.name, e.ip);
      nat.push(`:${sep} - [0:0]`);
      const left = s.endpoints.length - i;
      // Each endpoint takes 1/left of what the ones before it left: uniform over all of them.
      rules.push(left > 1 ? `-A ${svc} -m statistic --mode random --probability ${(1 / left).toFixed(10)} -j ${sep}` : `-A ${svc} -j ${sep}`);
      rules.push(`-A ${sep} -s ${e.ip}/32 -j KUBE-MARK-MASQ`, `-A ${sep} -p tcp -j DNAT --to-destination ${e.ip}:${s.targetPort}`);
    });
  }
  rules.push('-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
  const filter = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':KUBE-FORWARD - [0:0]',
    '-A FORWARD -j KUBE-FORWARD',
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    `-A KUBE-FORWARD -m mark --mark ${MASQ_MARK}/${MASQ_MARK} -j ACCEPT`,
    '-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', 'COMMIT'];
  return [...nat, ...rules, 'COMMIT', ...filter].join('\n') + '\n';
}

/** Checks a service spec against itself and the services already there; throws one line on the first fault. */
export function validateService(spec: ServiceSpec, existing: readonly ServiceRecord[]): void {
  if (!NAME.test(spec.name)) throw new InvalidRequestError(`service name "${spec.name}" must be a DNS label of at most 32 characters`);
  if (existing.some((s) => s.name === spec.name)) throw new ConflictError(`service ${spec.name} already exists`);
  for (const [k, v] of [['port', spec.port], ['target port', spec.targetPort]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 65535) throw new InvalidRequestError(`service ${spec.name}: ${k} must be 1-65535 (got ${v})`);
  }
  if (spec.nodePort !== undefined) {
    if (!Number.isInteger(spec.nodePort) || spec.nodePort < NODE_PORT_MIN || spec.nodePort > NODE_PORT_MAX) {
      throw new InvalidRequestError(`service ${spec.name}: node port must be ${NODE_PORT_MIN}-${NODE_PORT_MAX} (got ${spec.nodePort})`);
    }
    const taken = existing.find((s) => s.nodePort === spec.nodePort);
    if (taken) throw new ConflictError(`node port ${spec.nodePort} is already used by service ${taken.name}`);
  }
  if (spec.endpoints.length === 0) throw new InvalidRequestError(`service ${spec.name} needs at least one endpoint pod (--pod NAME)`);
}

function serviceFile(cluster: string, name: string): string {
  if (!NAME.test(name)) throw new InvalidRequestError(`service name "${name}" must be a DNS label of at most 32 characters`);
  return path.join(servicesDir(cluster), `${name}.json`);
}

export async function listServices(cluster: string): Promise<ServiceRecord[]> {
  const dir = servicesDir(cluster);
  const names = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.json')).sort();
  const out: ServiceRecord[] = [];
  for (const f of names) out.push(JSON.parse(await readFile(path.join(dir, f), 'utf8')) as ServiceRecord);
  return out;
}

/** Lowest free ClusterIP. */
function allocateClusterIp(existing: readonly ServiceRecord[]): string {
  const used = new Set(existing.map((s) => s.clusterIp));
  for (let h = SERVICE_HOST_MIN; h <= SERVICE_HOST_MAX; h++) if (!used.has(`${SERVICE_IP_PREFIX}${h}`)) return `${SERVICE_IP_PREFIX}${h}`;
  throw new ConflictError(`no free ClusterIP left in ${SERVICE_CIDR}`);
}

/** Writes every member's rules from the service records (all of them, so a half-applied change heals). */
export async function applyServices(plan: ClusterPlan): Promise<void> {
  const rules = kubeProxyRules(await listServices(plan.cluster));
  await Promise.all([plan.client, ...plan.nodes].map(async (m) => {
    await inNetns(m.netns, 'iptables-restore', ['-w', '5'], { input: rules });
    // A node here has no default route; a real one does, and a packet its own processes send to a ClusterIP
    // (the traffic hold's segments on behalf of a pod, a client on the node) needs some route before OUTPUT's
    // DNAT picks the real one. The underlay serves: the packet never leaves with that address.
    await ip(['route', 'replace', SERVICE_CIDR, 'dev', 'eth0'], m.netns);
  }));
}

export async function createService(plan: ClusterPlan, spec: ServiceSpec, nowMs: number): Promise<ServiceRecord> {
  const existing = await listServices(plan.cluster);
  validateService(spec, existing);
  const rec: ServiceRecord = { ...spec, clusterIp: allocateClusterIp(existing), createdAtMs: nowMs };
  await mkdir(servicesDir(plan.cluster), { recursive: true, mode: 0o700 });
  await writeJson(serviceFile(plan.cluster, spec.name), rec);
  await applyServices(plan);
  return rec;
}

export async function deleteService(plan: ClusterPlan, name: string): Promise<ServiceRecord> {
  const rec = (await listServices(plan.cluster)).find((s) => s.name === name);
  if (!rec) throw new NotFoundError(`service ${name} not found in cluster ${plan.cluster} (see: podmotion service list)`);
  await rm(serviceFile(plan.cluster, name), { force: true });
  await applyServices(plan);
  return rec;
}

/** Packets a member's `ctstate INVALID` rule dropped since its rules were written. */
export async function invalidDrops(m: OverlayMember): Promise<number> {
  const r = await inNetns(m.netns, 'iptables-save', ['-c', '-t', 'filter']);
  const line = r.stdout.split('\n').find((l) => l.includes('-A KUBE-FORWARD') && l.includes('INVALID') && l.includes('DROP'));
  const m2 = line ? /^\[(\d+):\d+\]/.exec(line) : null;
  return m2 ? Number(m2[1]) : 0;
}
