/**
 * The Service scenario shared by bench/service and its e2e test: on a 3-node local cluster, two backend pods on
 * node-3 behind a ClusterIP Service `backend`; a pod `web` on node-1 whose sidecar proxy forwards each
 * connection to `backend`'s ClusterIP (so the pod is a Service client too, DNATed on its own node); a Service
 * `web` with a ClusterIP and a NodePort. Clients in the client namespace reach `web` through its ClusterIP
 * (DNATed on the client's node) and through the NodePort of node-3 (DNATed and masqueraded there), while
 * `web` moves between node-1 and node-2. Every client connection is one flow to `web` and one from it.
 */
import path from 'node:path';
import { PYTHON, WORKLOADS, startLoad, type LoadClient, type LoadReport } from '../../cli/load.js';
import { CLI_ENTRY } from '../../node-runtime/constants.js';
import { run } from '../../node-runtime/exec.js';
import { readClusterRecord } from '../../node-runtime/records.js';

export const WEB_PORT = 7000;
export const NODE_PORT = 30080;
/** A migration of a pod with a few hundred connections under load; generous, to catch hangs only. */
const MIGRATE_TIMEOUT_MS = 300_000;

export interface ServiceScenario {
  webIp: string;
  clusterIp: string;
  nodePortAddress: string;
  viaClusterIp: LoadClient;
  viaNodePort: LoadClient;
  /** Packets each member's ctstate INVALID rule dropped so far. */
  invalidDropped(): Promise<Record<string, number>>;
  /** `failAt`: the coordinator's test hook (PODMOTION_TEST_HOOKS=1 at `cluster up`) fails the migration after that phase. */
  migrate(to: string, failAt?: string): Promise<MigrationRun>;
  stop(): void;
}

export interface MigrationRun {
  to: string;
  phase: string;
  error?: string;
  freezeMs?: number;
  connections?: number;
  preserved?: number;
  seqDeltaMax?: number;
  rst?: number;
  conntrackCarried?: number;
  clusterIp: LoadReport;
  nodePort: LoadReport;
  /** Requests answered in the second after the migration ended, per path: the flows carry on. */
  clusterIpRequestsAfter: number;
  nodePortRequestsAfter: number;
  invalidDropped: number;
}

/** `podmotion ARGS --cluster C --json` (the flags before a pod command's `--`), parsed: the CLI's JSON, not typed here. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function cliJson(cluster: string, args: string[], timeoutMs = 120_000): Promise<any> {
  const dd = args.indexOf('--');
  const [head, tail] = dd < 0 ? [args, []] : [args.slice(0, dd), args.slice(dd)];
  return JSON.parse((await run(process.execPath, [CLI_ENTRY, ...head, '--cluster', cluster, '--json', ...tail], { timeoutMs })).stdout);
}

const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);

export async function startServiceScenario(cluster: string, flows: { clusterIp: number; nodePort: number }): Promise<ServiceScenario> {
  const w = path.join(WORKLOADS, 'pod_containers.py');
  for (const b of ['be1', 'be2']) {
    await cliJson(cluster, ['pod', 'run', b, '--node', 'node-3', '--port', String(WEB_PORT), '--', PYTHON, path.join(WORKLOADS, 'counter_server.py'), String(WEB_PORT)]);
  }
  const backend = await cliJson(cluster, ['service', 'create', 'backend', '--pod', 'be1', '--pod', 'be2', '--port', '80']);
  const web = await cliJson(cluster, ['pod', 'run', 'web', '--node', 'node-1', '--port', String(WEB_PORT), '--volume', 'logs',
    '--container', `proxy=${PYTHON} ${w} proxy ${WEB_PORT} ${backend.clusterIp}:80`]);
  const svc = await cliJson(cluster, ['service', 'create', 'web', '--pod', 'web', '--port', '80', '--node-port', String(NODE_PORT)]);
  const plan = (await readClusterRecord(cluster))!.plan;
  const nodePortAddress = plan.nodes.find((n) => n.name === 'node-3')!.underlayIp;
  const viaClusterIp = await startLoad(plan.client.netns, svc.clusterIp, 80, flows.clusterIp);
  const viaNodePort = await startLoad(plan.client.netns, nodePortAddress, NODE_PORT, flows.nodePort);
  const invalidDropped = async () => (await cliJson(cluster, ['service', 'list'])).invalidDropped as Record<string, number>;
  await viaClusterIp.mark();
  await viaNodePort.mark();
  return {
    webIp: web.ip, clusterIp: svc.clusterIp, nodePortAddress, viaClusterIp, viaNodePort, invalidDropped,
    async migrate(to, failAt) {
      const dropsBefore = sum(await invalidDropped());
      // A migration that did not complete exits non-zero and still prints its status.
      const out = await run(process.execPath, [CLI_ENTRY, 'migrate', 'web', '--to-node', to, '--wait', '--json', '--cluster', cluster,
        ...(failAt ? ['--fail-at', failAt] : [])], { timeoutMs: MIGRATE_TIMEOUT_MS, okCodes: [0, 1, 2, 3, 4, 5] })
        .catch((e: Error) => ({ stdout: JSON.stringify({ phase: 'Failed', error: { message: e.message }, results: {} }) }));
      const s = JSON.parse(out.stdout);
      const [a, b] = [await viaClusterIp.mark(), await viaNodePort.mark()];
      await new Promise((r) => setTimeout(r, 1000));
      const [a2, b2] = [await viaClusterIp.mark(), await viaNodePort.mark()];
      const tcp = s.results?.TCPVerifying ?? {};
      return {
        to, phase: s.phase, ...(s.error ? { error: s.error.message } : {}), freezeMs: s.results?.Restore?.freezeMs,
        connections: tcp.connections, preserved: tcp.preserved, seqDeltaMax: tcp.seqDeltaMax, rst: tcp.rst,
        conntrackCarried: s.results?.OverlayHandoff?.conntrackCarried ?? 0,
        clusterIp: a, nodePort: b, clusterIpRequestsAfter: a2.requests - a.requests, nodePortRequestsAfter: b2.requests - b.requests,
        invalidDropped: sum(await invalidDropped()) - dropsBefore,
      };
    },
    stop() {
      viaClusterIp.kill();
      viaNodePort.kill();
    },
  };
}
