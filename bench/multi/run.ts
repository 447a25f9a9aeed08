/**
 * bench/multi: a pod of three containers (app on loopback, sidecar proxy, log shipper on a shared volume)
 * migrated N times across two nodes under 8 clients through the proxy. Per run: freeze window, the clients'
 * longest stall, connections kept, seq_delta, RSTs; at the end each container's longest heartbeat gap.
 * Prints a table and writes bench/results/multi.json.
 *
 *   node dist/bench/multi/run.js [--migrations 10]
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { PYTHON, WORKLOADS, startLoad } from '../../cli/load.js';
import { run } from '../../node-runtime/exec.js';
import { CLI_ENTRY, PROJECT_ROOT, podVolumePath } from '../../node-runtime/constants.js';
import { readClusterRecord } from '../../node-runtime/records.js';

const { values } = parseArgs({ options: { migrations: { type: 'string', default: '10' } } });
const N = Number(values.migrations);
const CLUSTER = 'bmulti';
const W = path.join(WORKLOADS, 'pod_containers.py');

const cli = async (args: string[]) => JSON.parse((await run(process.execPath, [CLI_ENTRY, ...args, '--cluster', CLUSTER, '--json'], { timeoutMs: 300_000 })).stdout);

async function main(): Promise<void> {
  await run(process.execPath, [CLI_ENTRY, 'cluster', 'down', '--cluster', CLUSTER], { timeoutMs: 120_000 }).catch(() => {});
  await cli(['cluster', 'up', '--nodes', '2']);
  const runs: Array<Record<string, unknown>> = [];
  let load;
  try {
    const pod = await cli(['pod', 'run', 'web', '--node', 'node-1', '--port', '7000', '--volume', 'logs',
      '--container', `app=${PYTHON} ${W} app 7001`, '--container', `proxy=${PYTHON} ${W} proxy 7000 7001`, '--container', `shipper=${PYTHON} ${W} shipper`]);
    load = await startLoad((await readClusterRecord(CLUSTER))!.plan.client.netns, pod.ip, 7000, 8);
    await load.mark();
    for (let i = 0; i < N; i++) {
      const to = i % 2 === 0 ? 'node-2' : 'node-1';
      const s = await cli(['migrate', 'web', '--to-node', to, '--wait']).catch((e: Error) => ({ phase: 'Failed', error: { message: e.message }, results: {} }));
      const client = await load.mark();
      const tcp = s.results?.TCPVerifying ?? {};
      runs.push({ run: i + 1, to, phase: s.phase, freezeMs: s.results?.Restore?.freezeMs, stallMs: client.maxStallMs, connections: tcp.connections,
        preserved: tcp.preserved, seqDeltaMax: tcp.seqDeltaMax, rst: tcp.rst, clientErrors: client.errors.length, ...(s.error ? { error: s.error.message } : {}) });
      await new Promise((r) => setTimeout(r, 500));
    }
    const heartbeats: Record<string, unknown> = {};
    for (const role of ['app', 'proxy', 'shipper']) {
      const hb = JSON.parse(await readFile(path.join(podVolumePath(CLUSTER, 'web', 'logs'), `${role}.hb`), 'utf8'));
      heartbeats[role] = { beats: hb.beats, maxGapMs: hb.maxGapMs, extra: hb.extra };
    }
    const freezes = runs.map((r) => r.freezeMs as number).filter((x) => x !== undefined);
    const summary = {
      migrations: N, complete: runs.filter((r) => r.phase === 'Complete').length,
      freezeMaxMs: Math.max(...freezes), stallMaxMs: Math.max(...runs.map((r) => r.stallMs as number)),
      rst: runs.reduce((a, r) => a + ((r.rst as number) ?? 0), 0), clientErrors: runs.reduce((a, r) => a + (r.clientErrors as number), 0), heartbeats,
    };
    console.log('run  to      phase     freeze ms  stall ms  conns  kept  seq_delta  RST  client errors');
    for (const r of runs) {
      console.log(`${String(r.run).padEnd(5)}${String(r.to).padEnd(8)}${String(r.phase).padEnd(10)}${String(r.freezeMs ?? '-').padEnd(11)}${String(r.stallMs).padEnd(10)}` +
        `${String(r.connections ?? '-').padEnd(7)}${String(r.preserved ?? '-').padEnd(6)}${String(r.seqDeltaMax ?? '-').padEnd(11)}${String(r.rst ?? '-').padEnd(5)}${r.clientErrors}`);
    }
    console.log(`complete ${summary.complete}/${N} · freeze max ${summary.freezeMaxMs} ms · client stall max ${summary.stallMaxMs} ms · ${summary.rst} RST · ${summary.clientErrors} client errors`);
    for (const [role, hb] of Object.entries(heartbeats)) console.log(`heartbeat ${role}: longest gap ${(hb as { maxGapMs: number }).maxGapMs} ms`);
    await mkdir(path.join(PROJECT_ROOT, 'bench/results'), { recursive: true });
    await writeFile(path.join(PROJECT_ROOT, 'bench/results/multi.json'), JSON.stringify({ summary, runs }, null, 2) + '\n');
  } finally {
    load?.kill();
    await run(process.execPath, [CLI_ENTRY, 'cluster', 'down', '--cluster', CLUSTER], { timeoutMs: 120_000 }).catch(() => {});
  }
}

await main();
