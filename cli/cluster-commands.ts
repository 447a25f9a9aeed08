/** `podmotion cluster up|down|status` and `podmotion node list|ping`. */
import { clusterDown, clusterUp } from '../node-runtime/local-cluster.js';
import { listClusters } from '../node-runtime/records.js';
import { clustersWithNamespaces } from '../node-runtime/fabric.js';
import { DEFAULT_NODES, MAX_NODES } from '../node-runtime/constants.js';
import { HEARTBEAT_INTERVAL_MS, NODE_REGISTRATION_TTL_MS, Subjects } from '../bus/subjects.js';
import { request } from '../bus/rpc.js';
import { codecs } from '../node-runtime/agent.js';
import { clusterName, intOption, parse, requirePositional } from './args.js';
import { allPods, registrations, requireNode, withCluster, type Ctx } from './context.js';
import { printJson, printTable, UsageError } from './output.js';

export async function clusterCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  switch (verb) {
    case 'up': return clusterUpCmd(rest);
    case 'down': return clusterDownCmd(rest);
    case 'status': return clusterStatusCmd(rest);
    default: throw new UsageError(`unknown cluster command "${verb ?? ''}" (use: up, down, status)`);
  }
}

async function clusterUpCmd(argv: string[]): Promise<void> {
  const p = parse(argv, { nodes: { type: 'string' } });
  const json = p.values['json'] === true;
  const nodes = intOption(p, 'nodes', DEFAULT_NODES, 1, MAX_NODES);
  const url = (p.values['nats'] as string | undefined) ?? process.env['NATS_URL'];
  const seedFile = (p.values['nkey'] as string | undefined) ?? process.env['PODMOTION_NKEY'];
  const started = Date.now();
  const rec = await clusterUp({
    cluster: clusterName(p), nodes,
    ...(url ? { bus: seedFile ? { url, seedFile } : { url } } : {}),
    onProgress: json ? undefined : (l) => process.stdout.write(`  ${l}\n`),
  });
  if (json) {
    printJson({ cluster: rec.plan.cluster, nodes: rec.plan.nodes.map((n) => n.name), natsUrl: rec.natsUrl, tookMs: Date.now() - started });
  } else {
    process.stdout.write(`cluster ${rec.plan.cluster} is up (${nodes} nodes) in ${Date.now() - started} ms\n`);
  }
}

async function clusterDownCmd(argv: string[]): Promise<void> {
  const p = parse(argv, { all: { type: 'boolean', default: false }, prefix: { type: 'string' } });
  const prefix = (p.values['prefix'] as string | undefined) ?? '';
  // --all also sweeps namespaces of clusters whose record was lost (an interrupted run).
  const names = p.values['all']
    ? [...new Set([...(await listClusters()), ...(await clustersWithNamespaces())])].filter((c) => c.startsWith(prefix)).sort()
    : [clusterName(p)];
  const results = [];
  for (const n of names) results.push(await clusterDown(n));
  if (p.values['json']) return printJson({ clusters: results });
  for (const r of results) {
    process.stdout.write(`cluster ${r.cluster} is down: ${r.namespacesRemoved.length} namespaces removed, ${r.processesStopped} processes stopped${r.hadRecord ? '' : ' (no record: swept leftovers)'}\n`);
  }
  if (results.length === 0) process.stdout.write('no clusters recorded\n');
}

async function nodeRows(ctx: Ctx, nowMs: number) {
  const regs = await registrations(ctx.nc);
  const { pods } = await allPods(ctx);
  return ctx.cluster.plan.nodes.map((n) => {
    const r = regs.get(n.name);
    const ageMs = r ? nowMs - r.heartbeatAtMs : undefined;
    const ready = r !== undefined && ageMs !== undefined && ageMs < NODE_REGISTRATION_TTL_MS;
    return {
      node: n.name, status: ready ? 'Ready' : 'NotReady', podCidr: n.podCidr, underlayIp: n.underlayIp,
      criu: r ? (r.capabilities.criuOk ? r.capabilities.criuVersion ?? '?' : 'broken') : undefined,
      kernel: r?.capabilities.kernel, heartbeatAgeMs: ageMs, agentPid: r?.agentPid,
      pods: pods.filter((p) => p.node === n.name).length,
    };
  });
}

async function clusterStatusCmd(argv: string[]): Promise<void> {
  const p = parse(argv, {});
  await withCluster(p, async (ctx) => {
    const now = Date.now();
    const nodes = await nodeRows(ctx, now);
    const { pods, unreachable } = await allPods(ctx);
    if (p.values['json']) {
      return printJson({ cluster: ctx.cluster.plan.cluster, natsUrl: ctx.cluster.natsUrl, embeddedBus: ctx.cluster.nats !== undefined, nodes, pods, unreachable });
    }
    const bus = ctx.cluster.nats ? 'embedded' : 'external';
    process.stdout.write(`cluster ${ctx.cluster.plan.cluster}: ${nodes.length} nodes, bus ${ctx.cluster.natsUrl} (${bus}), client netns ${ctx.cluster.plan.client.netns}\n\n`);
    printTable(['NODE', 'STATUS', 'POD-CIDR', 'UNDERLAY', 'CRIU', 'HEARTBEAT', 'PODS'],
      nodes.map((n) => [n.node, n.status, n.podCidr, n.underlayIp, n.criu, n.heartbeatAgeMs === undefined ? undefined : `${Math.round(n.heartbeatAgeMs / 100) / 10}s ago`, n.pods]));
    process.stdout.write('\n');
    if (pods.length === 0) process.stdout.write('no pods\n');
    else printTable(['POD', 'NODE', 'IP', 'PORT', 'PID', 'STATUS'], pods.map((x) => [x.name, x.node, x.ip, x.port, x.initPid, x.running ? 'Running' : 'Exited']));
    if (unreachable.length > 0) process.stdout.write(`\nnot answering: ${unreachable.join(', ')} (heartbeat every ${HEARTBEAT_INTERVAL_MS} ms)\n`);
  });
}

export async function nodeCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const p = parse(rest, { count: { type: 'string' } });
  await withCluster(p, async (ctx) => {
    if (verb === 'list') {
      const rows = await nodeRows(ctx, Date.now());
      if (p.values['json']) return printJson({ nodes: rows });
      printTable(['NODE', 'STATUS', 'KERNEL', 'CRIU', 'AGENT-PID'], rows.map((r) => [r.node, r.status, r.kernel, r.criu, r.agentPid]));
    } else if (verb === 'ping') {
      const node = requirePositional(p, 0, 'node name (podmotion node ping NODE)');
      requireNode(ctx, node);
      const count = intOption(p, 'count', 1, 1, 100);
      const rtts: number[] = [];
      for (let i = 0; i < count; i++) {
        const t0 = process.hrtime.bigint();
        await request(ctx.nc, Subjects.node(node, 'ping'), codecs.ping, codecs.pong, { from: 'cli', sentAtMs: Date.now() }, { timeoutMs: 3000 });
        rtts.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      if (p.values['json']) return printJson({ node, rttMs: rtts });
      process.stdout.write(`${node}: ${rtts.map((r) => `${r.toFixed(2)} ms`).join(', ')}\n`);
    } else {
      throw new UsageError(`unknown node command "${verb ?? ''}" (use: list, ping)`);
    }
  });
}

