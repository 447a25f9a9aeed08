/**
 * A three-namespace lab for the traffic hold, shared by test/integration/hold.test.ts and bench/hold/run.ts:
 *
 *   client (10.98.0.2/24, eth0) ── cl0 10.98.0.1/24  node  pmhold0 169.254.1.1/32 ── eth0 10.98.1.10/32  pod
 *
 * The pod side is wired like docs/local-cluster.md (IP/32, default route via the link-local gateway on the
 * node side of its veth, gateway MAC ee:ee:ee:ee:ee:ee); the client reaches it through the node's routes.
 * Namespaces are pm-<name>-{node,pod,client}: destroyFabric(<name>) and `cluster down --all` sweep them.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { detachHold } from '../../bpf/index.js';
import { inNetns, ipBatch } from '../../node-runtime/exec.js';
import { addNetns, destroyFabric, netnsSysctls } from '../../node-runtime/fabric.js';
import { startPingPong, type PingPongClient } from './pingpong.js';

export const PYTHON = '/usr/bin/python3';
/** Root of the checkout: this file runs from <root>/dist/bench/hold/lab.js. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const COUNTER_SERVER = path.join(ROOT, 'workloads', 'counter_server.py');
/** A listening socket shows up within tens of milliseconds; 5 s means the server failed to start. */
const SERVER_START_TIMEOUT_MS = 5_000;
const SERVER_POLL_MS = 50;

export interface HoldLab {
  /** Cluster-like name: namespaces are pm-<name>-node, -pod, -client. */
  name: string;
  nodeNetns: string;
  podNetns: string;
  clientNetns: string;
  /** Node-side pod veth, where the hold attaches. */
  dev: string;
  podIp: string;
  clientIp: string;
  port: number;
  /** bpffs directory for the hold's maps. */
  pin: string;
}

/** Names only; nothing is created. */
export function labNamed(name: string): HoldLab {
  return {
    name,
    nodeNetns: `pm-${name}-node`,
    podNetns: `pm-${name}-pod`,
    clientNetns: `pm-${name}-client`,
    dev: 'pmhold0',
    podIp: '10.98.1.10',
    clientIp: '10.98.0.2',
    port: 7000,
    pin: `/sys/fs/bpf/podmotion-${name}`,
  };
}

/** Removes everything a lab may have left: the hold's pins, processes inside its namespaces, the namespaces. */
export async function destroyLab(lab: HoldLab): Promise<void> {
  await detachHold({ netns: lab.nodeNetns, dev: lab.dev, pin: lab.pin }).catch(() => undefined);
  await destroyFabric(lab.name);
}

/** Creates the namespaces and wires them (after removing leftovers of an earlier run). */
export async function createLab(lab: HoldLab): Promise<void> {
  await destroyLab(lab);
  for (const ns of [lab.nodeNetns, lab.podNetns, lab.clientNetns]) await addNetns(ns);
  const podMac = '0a:58:' + lab.podIp.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join(':');
  await ipBatch(
    [
      `link add ${lab.dev} type veth peer name eth0 netns ${lab.podNetns}`,
      `link set ${lab.dev} address ee:ee:ee:ee:ee:ee up`,
      `addr add 169.254.1.1/32 dev ${lab.dev} scope link`,
      `route add ${lab.podIp}/32 dev ${lab.dev}`,
      `link add cl0 type veth peer name eth0 netns ${lab.clientNetns}`,
      'addr add 10.98.0.1/24 dev cl0',
      'link set cl0 up',
    ],
    lab.nodeNetns,
  );
  await ipBatch(
    [
      `link set eth0 address ${podMac} up`,
      `addr add ${lab.podIp}/32 dev eth0`,
      'route add 169.254.1.1 dev eth0 scope link',
      'route add default via 169.254.1.1 dev eth0',
    ],
    lab.podNetns,
  );
  await ipBatch([`addr add ${lab.clientIp}/24 dev eth0`, 'link set eth0 up', 'route add default via 10.98.0.1'], lab.clientNetns);
  await netnsSysctls(lab.nodeNetns, { 'net.ipv4.ip_forward': '1' });
}

/** Starts workloads/counter_server.py in the pod and waits until it listens. It dies with the namespace. */
export async function startServer(lab: HoldLab): Promise<void> {
  const child = spawn('nsenter', [`--net=/run/netns/${lab.podNetns}`, '--', PYTHON, COUNTER_SERVER, String(lab.port)], {
    stdio: 'ignore',
    detached: true,
  });
  child.unref();
  const polls = SERVER_START_TIMEOUT_MS / SERVER_POLL_MS;
  for (let i = 0; i < polls; i++) {
    const ss = await inNetns(lab.podNetns, 'ss', ['-Hltn', `sport = :${lab.port}`]);
    if (ss.stdout.trim() !== '') return;
    await new Promise((r) => setTimeout(r, SERVER_POLL_MS));
  }
  throw new Error(`counter server in ${lab.podNetns} did not listen on :${lab.port} within ${SERVER_START_TIMEOUT_MS} ms`);
}

/** A paced request/response client in the client namespace, talking to the pod through the node. */
export function startClient(lab: HoldLab): Promise<PingPongClient> {
  return startPingPong(lab.clientNetns, lab.podIp, lab.port);
}

/** `ss -tino` in the client namespace for its connection to the pod, parsed into the fields tests read. */
export async function clientSocketInfo(lab: HoldLab, local: string): Promise<ClientSocketInfo | undefined> {
  const r = await inNetns(lab.clientNetns, 'ss', ['-Htino', 'state', 'established', 'src', local]);
  const text = r.stdout.replace(/\s+/g, ' ');
  if (text.trim() === '') return undefined;
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    text: text.trim(),
    timer: /timer:\((\w+)/.exec(text)?.[1],
    backoff: num(/backoff:(\d+)/),
    bytesReceived: num(/bytes_received:(\d+)/),
    bytesAcked: num(/bytes_acked:(\d+)/),
    notsent: num(/notsent:(\d+)/),
  };
}

export interface ClientSocketInfo {
  text: string;
  /** The pending TCP timer: "persist" while the peer waits out a zero window. */
  timer: string | undefined;
  backoff: number;
  bytesReceived: number;
  /** Includes the SYN: bytes_acked = ack - ISN. */
  bytesAcked: number;
  notsent: number;
}
