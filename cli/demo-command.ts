/**
 * `podmotion demo`: the main job on the embedded default. Brings up a 3-node local cluster whose
 * agents register on the bus, starts a stateful TCP pod, proves the overlay carries traffic from
 * the client namespace and from a pod on another node, shows the cluster, and tears it all down.
 */
import path from 'node:path';
import { clusterDown, clusterUp } from '../node-runtime/local-cluster.js';
import { PROJECT_ROOT, clusterDir, podNetns } from '../node-runtime/constants.js';
import { inNetns } from '../node-runtime/exec.js';
import { clusterNamespaces } from '../node-runtime/fabric.js';
import { Subjects } from '../bus/subjects.js';
import { request } from '../bus/rpc.js';
import { codecs } from '../node-runtime/agent.js';
import { connectBus } from '../bus/connection.js';
import { adminBus } from '../node-runtime/local-cluster.js';
import { registrations } from './context.js';
import { parse } from './args.js';
import { printJson } from './output.js';

const DEMO_CLUSTER = 'demo';
const COUNTER_PORT = 7000;
export const WORKLOADS = path.join(PROJECT_ROOT, 'workloads');

interface Step {
  step: string;
  ok: boolean;
  ms: number;
  detail: string;
}

export async function demoCommand(argv: string[]): Promise<number> {
  const p = parse(argv, { keep: { type: 'boolean', default: false } });
  const json = p.values['json'] === true;
  const cluster = (p.values['cluster'] as string | undefined) ?? DEMO_CLUSTER;
  const steps: Step[] = [];
  const step = async (name: string, fn: () => Promise<string>): Promise<void> => {
    const t0 = performance.now();
    if (!json) process.stdout.write(`• ${name} ... `);
    try {
      const detail = await fn();
      steps.push({ step: name, ok: true, ms: Math.round(performance.now() - t0), detail });
      if (!json) process.stdout.write(`ok (${Math.round(performance.now() - t0)} ms)\n  ${detail.replace(/\n/g, '\n  ')}\n`);
    } catch (e) {
      steps.push({ step: name, ok: false, ms: Math.round(performance.now() - t0), detail: (e as Error).message });
      if (!json) process.stdout.write(`FAILED\n  ${(e as Error).message}\n`);
      throw e;
    }
  };
  let failed = false;
  try {
    await runDemo(cluster, step);
  } catch {
    failed = true;
  } finally {
    await step('cluster down', async () => {
      const d = await clusterDown(cluster);
      const left = await clusterNamespaces(cluster);
      if (left.length > 0) throw new Error(`namespaces left behind: ${left.join(', ')}`);
      return `${d.namespacesRemoved.length} namespaces removed, ${d.processesStopped} processes stopped, state dir ${clusterDir(cluster)} removed`;
    }).catch(() => { failed = true; });
  }
  if (json) printJson({ cluster, ok: !failed, steps });
  else process.stdout.write(failed ? '\ndemo FAILED\n' : '\ndemo complete: every step passed\n');
  return failed ? 1 : 0;
}

type StepFn = (name: string, fn: () => Promise<string>) => Promise<void>;

async function runDemo(cluster: string, step: StepFn): Promise<void> {
  let rec!: Awaited<ReturnType<typeof clusterUp>>;
  await step('cluster up: 3 nodes, VXLAN overlay, embedded NATS with JetStream', async () => {
    await clusterDown(cluster);
    rec = await clusterUp({ cluster, nodes: 3 });
    return rec.plan.nodes.map((n) => `${n.name}: netns ${n.netns}, pod CIDR ${n.podCidr}, underlay ${n.underlayIp}`).join('\n');
  });
  const nc = await connectBus(adminBus(rec), 'podmotion-demo');
  try {
    await step('node agents registered on the bus', async () => {
      const regs = await registrations(nc);
      const lines = [...regs.values()].map((r) => `${r.node}: kernel ${r.capabilities.kernel}, CRIU ${r.capabilities.criuVersion ?? 'missing'} (check ${r.capabilities.criuOk ? 'passed' : 'FAILED'}), agent pid ${r.agentPid}`);
      if (regs.size !== 3) throw new Error(`expected 3 registrations, found ${regs.size}`);
      return lines.join('\n');
    });
    await step('ping every node agent over NATS', async () => {
      const out: string[] = [];
      for (const n of rec.plan.nodes) {
        const t0 = performance.now();
        const pong = await request(nc, Subjects.node(n.name, 'ping'), codecs.ping, codecs.pong, { from: 'demo', sentAtMs: Date.now() });
        out.push(`${pong.node}: ${(performance.now() - t0).toFixed(2)} ms`);
      }
      return out.join(', ');
    });
    let counterIp = '';
    await step(`pod run counter --node node-1 --port ${COUNTER_PORT}`, async () => {
      const info = await request(nc, Subjects.node('node-1', 'pod.run'), codecs.podRun, codecs.podInfo,
        { name: 'counter', port: COUNTER_PORT, command: ['/usr/bin/python3', path.join(WORKLOADS, 'counter_server.py'), String(COUNTER_PORT)] },
        { timeoutMs: 30_000 });
      counterIp = info.ip;
      return `ip ${info.ip}, mac ${info.mac}, pid ${info.initPid}`;
    });
    await step('pod run peer --node node-2', async () => {
      const info = await request(nc, Subjects.node('node-2', 'pod.run'), codecs.podRun, codecs.podInfo,
        { name: 'peer', command: ['sleep', 'infinity'] }, { timeoutMs: 30_000 });
      return `ip ${info.ip}, mac ${info.mac}, pid ${info.initPid}`;
    });
    const check = async (netns: string) => {
      const r = await inNetns(netns, '/usr/bin/python3', [path.join(WORKLOADS, 'counter_check.py'), counterIp, String(COUNTER_PORT), '20']);
      return JSON.parse(r.stdout) as { ok: boolean; ms: number };
    };
    await step('client namespace → counter pod (over the overlay)', async () => {
      const r = await check(rec.plan.client.netns);
      return `20 request/replies in order: ${r.ok}, ${r.ms} ms`;
    });
    await step('pod on node-2 → counter pod on node-1 (VXLAN)', async () => {
      const peerNs = podNetns(cluster, 'node-2', 'peer');
      const r = await check(peerNs);
      return `20 request/replies in order: ${r.ok}, ${r.ms} ms`;
    });
    await step('cluster status', async () => {
      const r = await import('node:child_process').then(({ execFileSync }) =>
        execFileSync(process.execPath, [path.join(PROJECT_ROOT, 'dist', 'cli', 'podmotion.js'), 'cluster', 'status', '--cluster', cluster], { encoding: 'utf8' }));
      return r.trimEnd();
    });
  } finally {
    await nc.close();
  }
}
