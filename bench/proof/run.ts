/**
 * bench/proof: PostgreSQL 15 under pgbench -c 8 -j 2, migrated N times across the local cluster's nodes
 * while the benchmark runs, then a stop-and-copy baseline (Cold) in the same run. Per migration: freeze
 * window, client-visible stall, failed transactions, RSTs, seq_delta, tps before / during / after; and a
 * drain (stop, copy the data, start on the destination) under a fresh pgbench. Writes
 * bench/results/proof.md, proof.json and proof.svg (throughput over time, migrations marked).
 *
 *   node dist/bench/proof/run.js [--migrations 10] [--baseline 2] [--scale 4]
 *
 * The stall is measured from pgbench's own per-transaction log (-l): for each migration, the longest
 * transaction that ended within two seconds of the freeze. tps windows: 5 s before the migration began,
 * while it ran, 5 s after it ended.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { clusterDown, clusterUp, adminBus } from '../../node-runtime/local-cluster.js';
import { connectBus } from '../../bus/connection.js';
import { request } from '../../bus/rpc.js';
import { Subjects } from '../../bus/subjects.js';
import { codecs } from '../../node-runtime/agent.js';
import { runMigration } from '../../cli/migrate-commands.js';
import { PROJECT_ROOT } from '../../node-runtime/constants.js';
import { PG_POD_SCRIPT, PG_PORT, pgbench, pgbenchConsistent, pgbenchInit } from '../../cli/postgres.js';
import { sendRound, startVolumeReceiver } from '../../actors/storage/sync.js';
import { newTransferKey } from '../../criu-shim/transfer/index.js';
import { nodeVolumeDir, podVolumePath } from '../../node-runtime/constants.js';
import type { MigrationStatus, Strategy } from '../../machines/index.js';

const { values } = parseArgs({ options: { migrations: { type: 'string', default: '10' }, baseline: { type: 'string', default: '2' }, scale: { type: 'string', default: '4' },
  'redis-migrations': { type: 'string', default: '10' } } });
const REDIS_MIGRATIONS = Number(values['redis-migrations']);
const MIGRATIONS = Number(values.migrations);
const BASELINE = Number(values.baseline);
const SCALE = Number(values.scale);
const CLUSTER = 'bproof';
const GAP_MS = 4000;
/** What one migration may take, for sizing pgbench's run. */
const RUN_BUDGET_MS = 13_000;
const WINDOW_MS = 5000;

interface Run {
  kind: 'PodMotion' | 'Cold (stop-and-copy)';
  id: string;
  from: string;
  to: string;
  strategy: Strategy;
  phase: string;
  error?: string;
  startedAtMs: number;
  endedAtMs: number;
  frozenAtMs?: number;
  resumedAtMs?: number;
  freezeMs?: number;
  stallMs?: number;
  connections?: number;
  preserved?: number;
  seqDeltaMax?: number;
  rst?: number;
  tpsBefore?: number;
  tpsDuring?: number;
  tpsAfter?: number;
  volumeBytesInFreeze?: number;
  /** Where the freeze went (FinalFreeze and Restore results): source dump, image stream, destination rebuild and restore. */
  parts?: { dumpMs?: number; encodeAfterDumpMs?: number; transferMs?: number; wireBytes?: number; decodeMs?: number; decodeAfterImagesMs?: number; restoreMs?: number; lazy: boolean };
}

type FreezeParts = NonNullable<Run['parts']>;

/** Where one migration's freeze went, from its FinalFreeze and Restore results. */
function freezeParts(s: MigrationStatus): FreezeParts | undefined {
  const freeze = s.results['FinalFreeze'] as { dumpMs?: number; encodeAfterDumpMs?: number; transferMs?: number; wireBytes?: number; lazyFromRounds?: boolean } | undefined;
  const restore = s.results['Restore'] as { decodeMs?: number; decodeAfterImagesMs?: number; restoreMs?: number } | undefined;
  if (!freeze || !restore) return undefined;
  return {
    dumpMs: freeze.dumpMs, encodeAfterDumpMs: freeze.encodeAfterDumpMs, transferMs: freeze.transferMs, wireBytes: freeze.wireBytes,
    decodeMs: restore.decodeMs, decodeAfterImagesMs: restore.decodeAfterImagesMs, restoreMs: restore.restoreMs, lazy: freeze.lazyFromRounds === true,
  };
}

/**
 * "dump / stream / rebuild / restore" in ms, "(lazy)" for a lazy freeze. The stream and the rebuild count
 * what followed the dump and the last image's arrival; "(a of b)" when part of the rebuild came earlier.
 */
function partsCell(p: FreezeParts | undefined): string {
  const ms = (v: number | undefined) => (v === undefined ? '–' : String(Math.round(v)));
  const rebuild = p?.decodeAfterImagesMs !== undefined && p.decodeMs !== undefined && p.decodeMs - p.decodeAfterImagesMs >= 1
    ? `${ms(p.decodeAfterImagesMs)} (of ${ms(p.decodeMs)})` : ms(p?.decodeAfterImagesMs ?? p?.decodeMs);
  return p ? `${ms(p.dumpMs)} / ${ms(p.transferMs)} / ${rebuild} / ${ms(p.restoreMs)}${p.lazy ? ' (lazy)' : ''}` : '–';
}

interface Tx { endMs: number; latencyMs: number }

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! : NaN;
};

/** pgbench -l lines: client tx latency_us script epoch_s epoch_us (PostgreSQL 15). */
async function readTxLog(dir: string): Promise<Tx[]> {
  const out: Tx[] = [];
  for (const f of (await readdir(dir)).filter((n) => n.startsWith('pgbench_log'))) {
    for (const line of (await readFile(path.join(dir, f), 'utf8')).split('\n')) {
      const c = line.trim().split(/\s+/);
      if (c.length < 6) continue;
      out.push({ endMs: Number(c[4]) * 1000 + Number(c[5]) / 1000, latencyMs: Number(c[2]) / 1000 });
    }
  }
  return out.sort((a, b) => a.endMs - b.endMs);
}

function tpsIn(txs: Tx[], from: number, to: number): number {
  if (to <= from) return NaN;
  return Math.round((txs.filter((t) => t.endMs >= from && t.endMs < to).length * 1000) / (to - from));
}

function svg(txs: Tx[], runs: Run[]): string {
  if (txs.length === 0) return '<svg xmlns="http://www.w3.org/2000/svg"/>';
  const t0 = txs[0]!.endMs;
  const t1 = txs.at(-1)!.endMs;
  const bins = new Map<number, number>();
  for (const t of txs) {
    const b = Math.floor((t.endMs - t0) / 250);
    bins.set(b, (bins.get(b) ?? 0) + 4);
  }
  const W = 900, H = 300, L = 50, B = 30;
  const maxT = Math.max(1, (t1 - t0) / 1000);
  const maxY = Math.max(...bins.values(), 1);
  const x = (s: number) => L + (s / maxT) * (W - L - 10);
  const y = (v: number) => H - B - (v / maxY) * (H - B - 20);
  const pts = [...Array(Math.ceil((t1 - t0) / 250) + 1).keys()].map((b) => `${x(b / 4).toFixed(1)},${y(bins.get(b) ?? 0).toFixed(1)}`);
  const marks = runs.map((r) => {
    const a = x(((r.frozenAtMs ?? r.startedAtMs) - t0) / 1000);
    const w = Math.max(1.5, x(((r.resumedAtMs ?? r.endedAtMs) - t0) / 1000) - a);
    const color = r.kind === 'PodMotion' ? '#d62728' : '#7f7f7f';
    return `<rect x="${a.toFixed(1)}" y="20" width="${w.toFixed(1)}" height="${H - B - 20}" fill="${color}" opacity="0.35"><title>${r.kind} ${r.from}→${r.to}: freeze ${r.freezeMs ?? '?'} ms</title></rect>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="${L}" y="14">pgbench tps (250 ms bins) while PostgreSQL migrates; red: PodMotion freeze windows, grey: Cold baseline</text>
${marks.join('\n')}
<polyline fill="none" stroke="#1f77b4" stroke-width="1" points="${pts.join(' ')}"/>
<line x1="${L}" y1="${H - B}" x2="${W - 10}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="20" x2="${L}" y2="${H - B}" stroke="black"/>
<text x="${L - 5}" y="${y(maxY) + 4}" text-anchor="end">${Math.round(maxY)}</text><text x="${L - 5}" y="${H - B}" text-anchor="end">0</text>
<text x="${W - 10}" y="${H - 8}" text-anchor="end">${maxT.toFixed(0)} s</text><text x="${L}" y="${H - 8}">0 s</text>
</svg>
`;
}

async function main(): Promise<void> {
  const started = new Date();
  const rec = await clusterUp({ cluster: CLUSTER, nodes: 3 });
  const nc = await connectBus(adminBus(rec), 'bench-proof');
  const logDir = await mkdtemp(path.join(os.tmpdir(), 'podmotion-proof-'));
  const runs: Run[] = [];
  let bench: Awaited<ReturnType<typeof pgbench>> | undefined;
  let consistent: { ok: boolean; totals: string } | undefined;
  let drain: Drain | undefined;
  let redis: RedisProof | undefined;
  try {
    const pod = await request(nc, Subjects.node('node-1', 'pod.run'), codecs.podRun, codecs.podInfo,
      { name: 'db', port: PG_PORT, user: 'postgres', volumes: [{ name: 'data', tier: 'local' }], command: [PG_POD_SCRIPT, String(PG_PORT)] }, { timeoutMs: 120_000 });
    const netns = rec.plan.client.netns;
    await pgbenchInit(netns, pod.ip, SCALE);
    const total = MIGRATIONS + BASELINE;
    // Each run takes 8-11 s here (pre-copy rounds and the volume's bulk copy while the database serves) plus
    // the pause after it; pgbench must outlast the last one, Cold included, with room for its "after" window
    // (what is left after that is plain load).
    const seconds = Math.ceil((6000 + total * (GAP_MS + RUN_BUDGET_MS) + WINDOW_MS) / 1000);
    process.stdout.write(`pgbench -c 8 -j 2 for ${seconds} s; ${MIGRATIONS} PodMotion migrations, then ${BASELINE} Cold ones\n`);
    const running = pgbench(netns, pod.ip, { clients: 8, threads: 2, seconds, logDir });
    await new Promise((r) => setTimeout(r, 6000));
    const nodes = ['node-1', 'node-2', 'node-3'];
    let at = 0;
    for (let i = 0; i < total; i++) {
      const kind = i < MIGRATIONS ? 'PodMotion' : 'Cold (stop-and-copy)';
      const strategy: Strategy = i < MIGRATIONS ? 'PreCopy' : 'Cold';
      const to = nodes[(at + 1) % nodes.length]!;
      const s: MigrationStatus = await runMigration(nc, { pod: 'db', toNode: to, strategy }, 300_000, () => {}, () => {});
      const restore = s.results['Restore'] as { freezeMs?: number; resumedAtMs?: number } | undefined;
      const freeze = s.results['FinalFreeze'] as { frozenAtMs?: number; volumeBytes?: number } | undefined;
      const parts = freezeParts(s);
      const tcp = s.results['TCPVerifying'] as { connections?: number; preserved?: number; seqDeltaMax?: number; rst?: number } | undefined;
      const r: Run = {
        kind, id: s.spec.id, from: s.spec.sourceNode, to: s.spec.destinationNode, strategy, phase: s.phase,
        ...(s.error ? { error: s.error.message } : {}), startedAtMs: s.startedAtMs, endedAtMs: s.endedAtMs ?? Date.now(),
        ...(freeze?.frozenAtMs !== undefined ? { frozenAtMs: freeze.frozenAtMs } : {}),
        ...(restore?.resumedAtMs !== undefined ? { resumedAtMs: restore.resumedAtMs } : {}),
        ...(restore?.freezeMs !== undefined ? { freezeMs: restore.freezeMs } : {}),
        ...(tcp ? { connections: tcp.connections, preserved: tcp.preserved, seqDeltaMax: tcp.seqDeltaMax, rst: tcp.rst } : {}),
        ...(freeze?.volumeBytes !== undefined ? { volumeBytesInFreeze: freeze.volumeBytes } : {}),
        ...(parts ? { parts } : {}),
      };
      runs.push(r);
      if (s.phase === 'Complete') at = nodes.indexOf(to);
      process.stdout.write(`${kind} ${i + 1}: ${r.from} → ${r.to} ${s.phase}${r.error ? ` (${r.error})` : ''}, freeze ${r.freezeMs ?? '?'} ms, ${r.preserved ?? '?'}/${r.connections ?? '?'} connections, seq_delta ${r.seqDeltaMax ?? '?'}, ${r.rst ?? '?'} RST\n`);
      await new Promise((res) => setTimeout(res, GAP_MS));
    }
    const left = runs.filter((r) => r.phase === 'Complete').length;
    process.stdout.write(`${left}/${total} complete; waiting for pgbench to finish\n`);
    bench = await running;
    consistent = await pgbenchConsistent(netns, pod.ip);
    const txs = await readTxLog(logDir);
    drain = await drainBaseline(nc, netns, nodes[at]!, nodes[(at + 1) % nodes.length]!, pod);
    redis = await redisProof(nc, netns);
    for (const r of runs) {
      const a = r.frozenAtMs ?? r.startedAtMs;
      const b = r.resumedAtMs ?? r.endedAtMs;
      const near = txs.filter((t) => t.endMs >= a && t.endMs <= b + 2000);
      if (near.length) r.stallMs = Math.round(Math.max(...near.map((t) => t.latencyMs)));
      r.tpsBefore = tpsIn(txs, r.startedAtMs - WINDOW_MS, r.startedAtMs);
      r.tpsDuring = tpsIn(txs, r.startedAtMs, r.endedAtMs);
      r.tpsAfter = tpsIn(txs, r.endedAtMs, r.endedAtMs + WINDOW_MS);
    }
    await writeReport(started, runs, bench, consistent, txs, drain, redis);
  } finally {
    await nc.close();
    await clusterDown(CLUSTER);
    await rm(logDir, { recursive: true, force: true });
  }
}

interface Drain {
  from: string;
  to: string;
  stopMs: number;
  copyMs: number;
  startMs: number;
  downtimeMs: number;
  copiedBytes: number;
  newIp: string;
  pgbench: { processed: number; failed: number; abortedClients: number; exit: number; errors: string[] };
  consistent: boolean;
  totals: string;
}

/**
 * The drain baseline, on the same pod: under a fresh pgbench, stop PostgreSQL (fast shutdown, keeping its
 * data), copy the data directory to the destination over the same secured stream the volumes use, and
 * start it there. It comes back with a new IP, as a rescheduled Kubernetes pod does: the clients' sessions
 * are gone and pgbench counts them as aborted.
 */
async function drainBaseline(nc: Parameters<typeof request>[0], netns: string, from: string, to: string, pod: { name: string; ip: string }): Promise<Drain> {
  const running = pgbench(netns, pod.ip, { clients: 8, threads: 2, seconds: 12, keepHistory: true });
  await new Promise((r) => setTimeout(r, 4000));
  const t0 = Date.now();
  await request(nc, Subjects.node(from, 'pod.delete'), codecs.podRef, codecs.podInfo, { name: pod.name, keepVolumes: true }, { timeoutMs: 30_000 });
  const stopped = Date.now();
  const key = newTransferKey();
  const rx = await startVolumeReceiver({ host: '127.0.0.1', root: nodeVolumeDir(CLUSTER, to, pod.name, 'data'), key });
  let copiedBytes = 0;
  try {
    copiedBytes = (await sendRound({ host: rx.host, port: rx.port, key, root: podVolumePath(CLUSTER, pod.name, 'data') })).bytes;
    await rx.next();
  } finally {
    rx.close();
  }
  const copied = Date.now();
  const again = await request(nc, Subjects.node(to, 'pod.run'), codecs.podRun, codecs.podInfo,
    { name: pod.name, port: PG_PORT, user: 'postgres', volumes: [{ name: 'data', tier: 'local' }], command: [PG_POD_SCRIPT, String(PG_PORT)] }, { timeoutMs: 120_000 });
  const ready = Date.now();
  const b = await running;
  const c = await pgbenchConsistent(netns, again.ip);
  const d: Drain = {
    from, to, stopMs: stopped - t0, copyMs: copied - stopped, startMs: ready - copied, downtimeMs: ready - t0, copiedBytes, newIp: again.ip,
    pgbench: { processed: b.processed, failed: b.failed, abortedClients: new Set([...b.output.matchAll(/client (\d+) (?:script \d+ )?aborted/g)].map((x) => x[1])).size, exit: b.code,
      errors: b.output.split('\n').filter((l) => /error|abort/i.test(l)).slice(0, 10) },
    consistent: c.ok, totals: c.totals,
  };
  process.stdout.write(`drain ${from} → ${to}: down ${d.downtimeMs} ms (stop ${d.stopMs}, copy ${d.copyMs}, start ${d.startMs}), ${d.pgbench.abortedClients} clients aborted, new IP ${d.newIp}\n`);
  return d;
}

interface RedisProof {
  runs: Array<{ from: string; to: string; phase: string; error?: string; freezeMs?: number; parts?: FreezeParts; connections?: number; preserved?: number; seqDeltaMax?: number; rst?: number }>;
  checker: { operations: number; keys: number; missing: number; wrong: number; counter: number; increments: number; errors: number; maxWaitMs: number };
  benchmark: string[];
  benchmarkExit: number;
}

/**
 * Redis with its append-only file on a local volume, run as the redis user: a checker writes key k:N = N and
 * increments a counter over one connection (each acknowledged before the next) while redis-benchmark -c 8
 * loads it, and the pod is migrated REDIS_MIGRATIONS times; then the checker reads every key and the counter.
 */
async function redisProof(nc: Parameters<typeof request>[0], netns: string): Promise<RedisProof> {
  const port = 6379;
  const pod = await request(nc, Subjects.node('node-1', 'pod.run'), codecs.podRun, codecs.podInfo,
    { name: 'cache', port, user: 'redis', volumes: [{ name: 'data', tier: 'local' }], command: [path.join(PROJECT_ROOT, 'workloads', 'redis_pod.sh'), String(port)] }, { timeoutMs: 60_000 });
  const seconds = Math.ceil((4000 + REDIS_MIGRATIONS * (GAP_MS + 4000)) / 1000);
  const inClient = (cmd: string, args: string[]) => spawn('nsenter', [`--net=/run/netns/${netns}`, '--', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const collect = (child: ReturnType<typeof inClient>) => new Promise<{ out: string; code: number }>((resolve) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    child.on('close', (code) => resolve({ out, code: code ?? -1 }));
  });
  const checker = collect(inClient('python3', [path.join(PROJECT_ROOT, 'workloads', 'redis_checker.py'), pod.ip, String(port), String(seconds)]));
  // Loops until killed: load for as long as the migrations run.
  const benchProc = inClient('redis-benchmark', ['-h', pod.ip, '-p', String(port), '-c', '8', '-r', '100000', '-t', 'set,get,incr', '-l', '-q']);
  const benchOut = collect(benchProc);
  await new Promise((r) => setTimeout(r, 3000));
  const runs: RedisProof['runs'] = [];
  const nodes = ['node-1', 'node-2', 'node-3'];
  let at = 0;
  for (let i = 0; i < REDIS_MIGRATIONS; i++) {
    const to = nodes[(at + 1) % nodes.length]!;
    const s = await runMigration(nc, { pod: 'cache', toNode: to, strategy: 'PreCopy' }, 300_000, () => {}, () => {});
    const tcp = s.results['TCPVerifying'] as { connections?: number; preserved?: number; seqDeltaMax?: number; rst?: number } | undefined;
    const freezeMs = (s.results['Restore'] as { freezeMs?: number } | undefined)?.freezeMs;
    const parts = freezeParts(s);
    runs.push({ from: s.spec.sourceNode, to: s.spec.destinationNode, phase: s.phase, ...(s.error ? { error: s.error.message } : {}), ...(freezeMs !== undefined ? { freezeMs } : {}), ...(parts ? { parts } : {}), ...(tcp ?? {}) });
    if (s.phase === 'Complete') at = nodes.indexOf(to);
    process.stdout.write(`Redis ${i + 1}: ${s.spec.sourceNode} → ${s.spec.destinationNode} ${s.phase}, freeze ${freezeMs ?? '?'} ms, ${tcp?.preserved ?? '?'}/${tcp?.connections ?? '?'} connections, seq_delta ${tcp?.seqDeltaMax ?? '?'}, ${tcp?.rst ?? '?'} RST\n`);
    await new Promise((r) => setTimeout(r, GAP_MS));
  }
  const c = await checker;
  benchProc.kill('SIGINT');
  const b = await benchOut;
  const last = c.out.trim().split('\n').at(-1) ?? '{}';
  const parsed = JSON.parse(last.startsWith('{') ? last : '{}') as RedisProof['checker'];
  return {
    runs, checker: parsed,
    benchmark: b.out.split(/[\r\n]+/).filter((l) => /requests per second/.test(l)).map((l) => l.trim()).slice(-3),
    benchmarkExit: b.code,
  };
}

async function writeReport(started: Date, runs: Run[], bench: Awaited<ReturnType<typeof pgbench>>, consistent: { ok: boolean; totals: string }, txs: Tx[], drain: Drain, redis: RedisProof): Promise<void> {
  const pm = runs.filter((r) => r.kind === 'PodMotion');
  const cold = runs.filter((r) => r.kind !== 'PodMotion');
  const summary = (rs: Run[]) => {
    const f = rs.flatMap((r) => (r.freezeMs !== undefined ? [r.freezeMs] : []));
    const st = rs.flatMap((r) => (r.stallMs !== undefined ? [r.stallMs] : []));
    return {
      runs: rs.length, complete: rs.filter((r) => r.phase === 'Complete').length,
      freezeP50: pct(f, 50), freezeP99: pct(f, 99), stallP50: pct(st, 50), stallP99: pct(st, 99),
      rst: rs.reduce((a, r) => a + (r.rst ?? 0), 0), seqDeltaMax: Math.max(0, ...rs.map((r) => r.seqDeltaMax ?? 0)),
      connectionsKept: rs.reduce((a, r) => a + (r.preserved ?? 0), 0), connections: rs.reduce((a, r) => a + (r.connections ?? 0), 0),
    };
  };
  const env = { date: started.toISOString(), kernel: os.release(), cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, postgres: '15', pgbench: '-c 8 -j 2', scale: SCALE };
  const rf = redis.runs.flatMap((r) => (r.freezeMs !== undefined ? [r.freezeMs] : []));
  const redisSummary = { runs: redis.runs.length, complete: redis.runs.filter((r) => r.phase === 'Complete').length, freezeP50: pct(rf, 50), freezeP99: pct(rf, 99),
    connectionsKept: redis.runs.reduce((a, r) => a + (r.preserved ?? 0), 0), connections: redis.runs.reduce((a, r) => a + (r.connections ?? 0), 0),
    seqDeltaMax: Math.max(0, ...redis.runs.map((r) => r.seqDeltaMax ?? 0)), rst: redis.runs.reduce((a, r) => a + (r.rst ?? 0), 0) };
  const data = { env, pgbench: { processed: bench.processed, failed: bench.failed, tps: bench.tps, exit: bench.code }, consistent, podmotion: summary(pm), cold: summary(cold), drain, runs,
    redis: { summary: redisSummary, ...redis } };
  const dir = path.join(PROJECT_ROOT, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'proof.json'), JSON.stringify(data, null, 2) + '\n');
  await writeFile(path.join(dir, 'proof.svg'), svg(txs, runs));
  const row = (r: Run, i: number) => `| ${i + 1} | ${r.kind} | ${r.from} → ${r.to} | ${r.phase} | ${r.freezeMs ?? '–'} | ${partsCell(r.parts)} | ${r.stallMs ?? '–'} | ${r.preserved ?? '–'}/${r.connections ?? '–'} | ${r.seqDeltaMax ?? '–'} | ${r.rst ?? '–'} | ${r.tpsBefore} / ${r.tpsDuring} / ${r.tpsAfter} |`;
  const s = data.podmotion;
  const c = data.cold;
  const md = `# PostgreSQL under pgbench, migrated live

${env.date} · kernel ${env.kernel} · ${env.cpus} CPUs · ${env.memGiB} GiB · Node ${env.node} · PostgreSQL 15, pgbench ${env.pgbench}, scale ${SCALE}

pgbench: ${bench.processed} transactions, **${bench.failed} failed**, ${bench.tps} tps overall (exit ${bench.code}).
TPC-B invariant after the run (accounts = branches = tellers = history): **${consistent.ok ? 'holds' : 'BROKEN'}** (${consistent.totals}).

| | runs | complete | freeze p50 / p99 (ms) | client stall p50 / p99 (ms) | connections kept | seq_delta max | RST |
|---|---|---|---|---|---|---|---|
| PodMotion (PreCopy) | ${s.runs} | ${s.complete} | ${s.freezeP50} / ${s.freezeP99} | ${s.stallP50} / ${s.stallP99} | ${s.connectionsKept}/${s.connections} | ${s.seqDeltaMax} | ${s.rst} |
| Cold (stop-and-copy) | ${c.runs} | ${c.complete} | ${c.freezeP50} / ${c.freezeP99} | ${c.stallP50} / ${c.stallP99} | ${c.connectionsKept}/${c.connections} | ${c.seqDeltaMax} | ${c.rst} |

| # | kind | move | phase | freeze ms | dump / stream / rebuild / restore ms | stall ms | connections | seq_delta | RST | tps before / during / after |
|---|---|---|---|---|---|---|---|---|---|---|
${runs.map(row).join('\n')}

Drain baseline (${drain.from} → ${drain.to}, under a fresh pgbench -c 8): PostgreSQL stopped with a fast shutdown
(${drain.stopMs} ms), its data directory copied (${(drain.copiedBytes / 2 ** 20).toFixed(1)} MiB, ${drain.copyMs} ms), started on the
destination (${drain.startMs} ms): **${drain.downtimeMs} ms without the database**, ${drain.pgbench.abortedClients} of 8 clients aborted
(their sessions are gone; the pod came back as ${drain.newIp}, a new address), ${drain.pgbench.failed} failed transactions
counted by pgbench, TPC-B invariant ${drain.consistent ? 'holds' : 'BROKEN'} (${drain.totals}).

![throughput](proof.svg)

## Redis under redis-benchmark, migrated live

Redis 7 (append-only file on a local volume, run as the redis user), loaded by \`redis-benchmark -c 8 -t set,get,incr\`
while a checker writes key k:N = N and increments a counter over its own connection, each acknowledged before
the next. ${redisSummary.complete}/${redisSummary.runs} migrations complete; freeze p50 / p99 ${redisSummary.freezeP50} / ${redisSummary.freezeP99} ms;
connections kept ${redisSummary.connectionsKept}/${redisSummary.connections}, seq_delta max ${redisSummary.seqDeltaMax}, ${redisSummary.rst} RST.

Checker: ${redis.checker.keys} keys written, **${redis.checker.missing} missing, ${redis.checker.wrong} wrong**; counter ${redis.checker.counter}
for ${redis.checker.increments} acknowledged increments (**${redis.checker.counter === redis.checker.increments ? 'exact' : 'WRONG'}**); ${redis.checker.errors} errors;
longest wait for a reply ${redis.checker.maxWaitMs} ms. redis-benchmark: ${redis.benchmark.join('; ') || 'no summary'}.

| # | move | phase | freeze ms | dump / stream / rebuild / restore ms | connections | seq_delta | RST |
|---|---|---|---|---|---|---|---|
${redis.runs.map((r, i) => `| ${i + 1} | ${r.from} → ${r.to} | ${r.phase}${r.error ? ` (${r.error})` : ''} | ${r.freezeMs ?? '–'} | ${partsCell(r.parts)} | ${r.preserved ?? '–'}/${r.connections ?? '–'} | ${r.seqDeltaMax ?? '–'} | ${r.rst ?? '–'} |`).join('\n')}

Stall: the longest pgbench transaction that ended between the freeze and two seconds after the resume
(pgbench -l). Dump / stream / rebuild / restore: the source's dump (from the tasks frozen until the images were
ready), the image stream after it (deltas of pages go as soon as CRIU closes them), the destination rebuilding
the images from the pre-copy rounds after the last one arrived ("of" what was rebuilt in all, most of it while
CRIU dumped on), and CRIU's restore; they overlap the phase changes, so they need not add up to the freeze. Produced by \`make proof\` (\`node dist/bench/proof/run.js\`).
`;
  await writeFile(path.join(dir, 'proof.md'), md);
  process.stdout.write(`\n${md}\nwrote bench/results/proof.md, proof.json, proof.svg\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`proof: ${e.message}\n`);
  process.exit(1);
});
