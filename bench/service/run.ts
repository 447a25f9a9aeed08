/**
 * bench/service: Service-routed flows across migrations. 100 clients through a ClusterIP and 20 through a
 * NodePort on node-3 reach the pod `web`, whose sidecar forwards each connection to another Service (two
 * endpoints), while `web` moves node-1 ↔ node-2 N times (see scenario.ts). Per run: freeze window, each
 * path's longest client stall, connections kept, seq_delta, RSTs, conntrack entries carried, packets dropped
 * as ctstate INVALID on any node. Prints a table and writes bench/results/service.json.
 *
 *   node dist/bench/service/run.js [--migrations 10] [--cluster-ip-flows 100] [--node-port-flows 20]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CLI_ENTRY, PROJECT_ROOT } from '../../node-runtime/constants.js';
import { run } from '../../node-runtime/exec.js';
import { cliJson, startServiceScenario, type MigrationRun, type ServiceScenario } from './scenario.js';

const { values } = parseArgs({ options: {
  migrations: { type: 'string', default: '10' }, 'cluster-ip-flows': { type: 'string', default: '100' }, 'node-port-flows': { type: 'string', default: '20' },
} });
const N = Number(values.migrations);
const FLOWS = { clusterIp: Number(values['cluster-ip-flows']), nodePort: Number(values['node-port-flows']) };
const CLUSTER = 'bsvc';

const down = () => run(process.execPath, [CLI_ENTRY, 'cluster', 'down', '--cluster', CLUSTER], { timeoutMs: 120_000 }).catch(() => {});

function row(i: number, r: MigrationRun): string {
  const cells = [i, r.to, r.phase, r.freezeMs ?? '-', r.clusterIp.maxStallMs, r.nodePort.maxStallMs, r.connections ?? '-', r.preserved ?? '-',
    r.seqDeltaMax ?? '-', r.rst ?? '-', r.conntrackCarried ?? '-', r.invalidDropped, r.clusterIp.errors.length + r.nodePort.errors.length];
  const widths = [4, 8, 10, 10, 15, 14, 7, 6, 10, 5, 10, 9, 0];
  return cells.map((c, k) => String(c).padEnd(widths[k]!)).join('');
}

async function main(): Promise<void> {
  await down();
  await cliJson(CLUSTER, ['cluster', 'up', '--nodes', '3']);
  let sc: ServiceScenario | undefined;
  try {
    sc = await startServiceScenario(CLUSTER, FLOWS);
    console.log(`${FLOWS.clusterIp} clients via ClusterIP ${sc.clusterIp}:80, ${FLOWS.nodePort} via NodePort ${sc.nodePortAddress}:30080 (node-3); ` +
      `each proxied by web (${sc.webIp}) to Service backend (2 endpoints on node-3)`);
    console.log('run to      phase     freeze ms stall ClusterIP stall NodePort conns  kept  seq_delta RST  ct carried INVALID  client errors');
    const runs: MigrationRun[] = [];
    for (let i = 0; i < N; i++) {
      const r = await sc.migrate(i % 2 === 0 ? 'node-2' : 'node-1');
      runs.push(r);
      console.log(row(i + 1, r));
      await new Promise((res) => setTimeout(res, 500));
    }
    const freezes = runs.map((r) => r.freezeMs).filter((x): x is number => x !== undefined).sort((a, b) => a - b);
    const stalls = runs.map((r) => Math.max(r.clusterIp.maxStallMs, r.nodePort.maxStallMs));
    const summary = {
      migrations: N, flows: FLOWS, complete: runs.filter((r) => r.phase === 'Complete').length,
      freezeMsMedian: freezes[Math.floor(freezes.length / 2)] ?? null, freezeMsMax: freezes.at(-1) ?? null, stallMsMax: Math.max(...stalls),
      connectionsKept: runs.every((r) => r.preserved !== undefined && r.preserved === r.connections),
      rst: runs.reduce((a, r) => a + (r.rst ?? 0), 0), seqDeltaMax: Math.max(...runs.map((r) => r.seqDeltaMax ?? 0)),
      invalidDropped: runs.reduce((a, r) => a + r.invalidDropped, 0),
      clientErrors: runs.reduce((a, r) => a + r.clusterIp.errors.length + r.nodePort.errors.length, 0),
      flowsAnsweringAfterEachMigration: runs.every((r) => r.clusterIpRequestsAfter > 0 && r.nodePortRequestsAfter > 0),
      invalidDroppedPerNode: await sc.invalidDropped(),
    };
    console.log(`complete ${summary.complete}/${N} · freeze median ${summary.freezeMsMedian} ms, max ${summary.freezeMsMax} ms · client stall max ${summary.stallMsMax} ms · ` +
      `${summary.rst} RST · seq_delta max ${summary.seqDeltaMax} · ${summary.invalidDropped} packets dropped as INVALID · ${summary.clientErrors} client errors`);
    await mkdir(path.join(PROJECT_ROOT, 'bench/results'), { recursive: true });
    await writeFile(path.join(PROJECT_ROOT, 'bench/results/service.json'), JSON.stringify({ summary, runs: runs.map((r) => ({
      ...r, clusterIp: { alive: r.clusterIp.alive, errors: r.clusterIp.errors, maxStallMs: r.clusterIp.maxStallMs },
      nodePort: { alive: r.nodePort.alive, errors: r.nodePort.errors, maxStallMs: r.nodePort.maxStallMs },
    })) }, null, 2) + '\n');
  } finally {
    sc?.stop();
    await down();
  }
}

await main();
