/**
 * bench/freeze: freeze window, total time and bytes on the wire per strategy, for working sets of 64 MiB,
 * 256 MiB and 1 GiB, idle and with a writer dirtying ~50 MB/s; and, in the same run, a naive baseline on the
 * same workload (CRIU dump to a directory, copy over the same image stream, restore, timed end to end).
 * Prints a table, writes bench/results/freeze.json.
 *
 *   node dist/bench/freeze/run.js [--runs 5] [--sizes 64,256,1024] [--rate 48] [--strategies Cold,PreCopy,PostCopy]
 *
 * A run of only some strategies or sizes writes bench/results/freeze-partial.json instead.
 */
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { newTransferKey, sendDirectory, startReceiver } from '../../criu-shim/transfer/index.js';
import path from 'node:path';
import { release } from 'node:os';
import { parseArgs } from 'node:util';
import { clusterDown, clusterUp, adminBus } from '../../node-runtime/local-cluster.js';
import { connectBus } from '../../bus/connection.js';
import { request } from '../../bus/rpc.js';
import { Subjects } from '../../bus/subjects.js';
import { codecs } from '../../node-runtime/agent.js';
import { runMigration } from '../../cli/migrate-commands.js';
import { PYTHON, WORKLOADS } from '../../cli/load.js';
import { PROJECT_ROOT, criuBinary, IMAGES_ROOT } from '../../node-runtime/constants.js';
import { criuDump, criuRestore } from '../../criu-shim/rpc/index.js';
import { addNetns } from '../../node-runtime/fabric.js';
import { ip } from '../../node-runtime/exec.js';
import { childrenOf } from '../../node-runtime/procs.js';
import { spawn } from 'node:child_process';
import type { MigrationStatus, Strategy } from '../../machines/index.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, sizes: { type: 'string', default: '64,256,1024' }, rate: { type: 'string', default: '48' },
  strategies: { type: 'string', default: 'Cold,PreCopy,PostCopy' } } });
const RUNS = Number(values.runs);
const SIZES = String(values.sizes).split(',').map(Number);
const RATE = Number(values.rate);
const STRATEGIES = String(values.strategies).split(',') as Strategy[];
const FULL = STRATEGIES.length === 3 && String(values.sizes) === '64,256,1024';
const CLUSTER = 'bfreeze';
const PORT = 7099;

interface Cell { sizeMiB: number; load: string; strategy: string; freezeMs: number[]; totalMs: number[]; wireBytes: number[] }

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! : NaN;
};

function wire(s: MigrationStatus): number {
  const pre = (s.results['PreCopyMemory'] as { bytesSent?: number } | undefined)?.bytesSent ?? 0;
  const post = (s.results['ServiceVerifying'] as { postCopyBytes?: number } | undefined)?.postCopyBytes ?? 0;
  return pre + post + ((s.results['FinalFreeze'] as { wireBytes?: number } | undefined)?.wireBytes ?? 0);
}

async function measureStrategies(cells: Cell[]): Promise<void> {
  const rec = await clusterUp({ cluster: CLUSTER, nodes: 2 });
  const nc = await connectBus(adminBus(rec), 'bench-freeze');
  try {
    for (const size of SIZES) {
      for (const [load, rate] of [['idle', 0], [`writer ${RATE} MiB/s`, RATE]] as const) {
        const pod = `w${size}${rate ? 'd' : 'i'}`;
        await request(nc, Subjects.node('node-1', 'pod.run'), codecs.podRun, codecs.podInfo,
          { name: pod, port: PORT, command: [PYTHON, path.join(WORKLOADS, 'mem_writer.py'), String(PORT), String(size), String(rate)] }, { timeoutMs: 120_000 });
        let at = 'node-1';
        for (const strategy of STRATEGIES) {
          const cell: Cell = { sizeMiB: size, load, strategy, freezeMs: [], totalMs: [], wireBytes: [] };
          for (let i = 0; i < RUNS; i++) {
            const to = at === 'node-1' ? 'node-2' : 'node-1';
            const s = await runMigration(nc, { pod, toNode: to, strategy }, 600_000, () => {}, () => {});
            if (s.phase !== 'Complete') throw new Error(`${pod} ${strategy}: ${s.phase} ${s.error?.message ?? ''}`);
            cell.freezeMs.push((s.results['Restore'] as { freezeMs: number }).freezeMs);
            cell.totalMs.push((s.endedAtMs ?? 0) - s.startedAtMs);
            cell.wireBytes.push(wire(s));
            at = to;
            process.stdout.write(`${size} MiB ${load} ${strategy} run ${i + 1}: freeze ${cell.freezeMs.at(-1)} ms, total ${cell.totalMs.at(-1)} ms, wire ${(cell.wireBytes.at(-1)! / 2 ** 20).toFixed(1)} MiB\n`);
          }
          cells.push(cell);
        }
        await request(nc, Subjects.node(at, 'pod.delete'), codecs.podRef, codecs.podInfo, { name: pod }, { timeoutMs: 30_000 });
      }
    }
  } finally {
    await nc.close();
    await clusterDown(CLUSTER);
  }
}

/** The naive way: stop-and-copy with plain CRIU — dump to a directory, copy it, restore — timed end to end. */
async function naiveBaseline(cells: Cell[]): Promise<void> {
  const base = await mkdtemp(path.join(IMAGES_ROOT, 'bench-naive-'));
  const ns = ['pm-bnaive-a', 'pm-bnaive-b'];
  try {
    for (const size of SIZES) {
      for (const [load, rate] of [['idle', 0], [`writer ${RATE} MiB/s`, RATE]] as const) {
        for (const n of ns) await ip(['netns', 'del', n]).catch(() => {});
        for (const n of ns) {
          await addNetns(n);
          await ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p'], n);
          await ip(['addr', 'add', '10.97.0.10/24', 'dev', 'eth0'], n);
          await ip(['link', 'set', 'eth0', 'up'], n);
        }
        const holder = spawn('nsenter', [`--net=/run/netns/${ns[0]}`, '--', 'unshare', '--pid', '--ipc', '--uts', '--fork', '--', 'setsid',
          PYTHON, path.join(WORKLOADS, 'mem_writer.py'), String(PORT), String(size), String(rate)], { stdio: 'ignore', detached: true });
        holder.unref();
        let pid: number | undefined;
        for (let i = 0; i < 600 && pid === undefined; i++) {
          await new Promise((r) => setTimeout(r, 50));
          pid = (await childrenOf(holder.pid!))[0];
        }
        await new Promise((r) => setTimeout(r, 1000 + size * 8));
        const cell: Cell = { sizeMiB: size, load, strategy: 'naive CRIU', freezeMs: [], totalMs: [], wireBytes: [] };
        let from = 0;
        for (let i = 0; i < RUNS; i++) {
          const a = path.join(base, `dump-${i}`);
          const b = path.join(base, `copy-${i}`);
          await mkdir(a, { mode: 0o700 });
          const ino = (await stat(`/run/netns/${ns[from]}`)).ino;
          const t0 = performance.now();
          await criuDump({ criuPath: criuBinary(), pid: pid!, imagesDir: a, tcpEstablished: true, shellJob: true, external: [`net[${ino}]:extnet`], logLevel: 2 });
          // The copy crosses the same link PodMotion uses (its TLS image stream over loopback): only the
          // method differs between the baseline and the strategies, not the transport.
          const key = newTransferKey();
          const rx = await startReceiver({ host: '127.0.0.1', dir: b, key, maxBytes: 64 * 1024 ** 3 });
          await sendDirectory({ host: rx.host, port: rx.port, key, dir: a });
          await rx.done;
          const r = await criuRestore({ criuPath: criuBinary(), imagesDir: b, tcpEstablished: true, shellJob: true, logLevel: 2,
            inherit: [{ key: 'extnet', path: `/run/netns/${ns[1 - from]}` }] });
          const ms = performance.now() - t0;
          cell.freezeMs.push(Math.round(ms));
          cell.totalMs.push(Math.round(ms));
          let bytes = 0;
          for (const f of await import('node:fs/promises').then((m) => m.readdir(b))) bytes += (await stat(path.join(b, f))).size;
          cell.wireBytes.push(bytes);
          pid = r.pid;
          from = 1 - from;
          await rm(a, { recursive: true, force: true });
          await rm(b, { recursive: true, force: true });
          process.stdout.write(`${size} MiB ${load} naive run ${i + 1}: freeze ${Math.round(ms)} ms\n`);
        }
        cells.push(cell);
        try { process.kill(pid!, 'SIGKILL'); } catch { /* gone */ }
        for (const n of ns) await ip(['netns', 'del', n]).catch(() => {});
      }
    }
  } finally {
    for (const n of ns) await ip(['netns', 'del', n]).catch(() => {});
    await rm(base, { recursive: true, force: true });
  }
}

const cells: Cell[] = [];
await clusterDown(CLUSTER);
await measureStrategies(cells);
await naiveBaseline(cells);
const naiveP99 = (c: Cell) => pct(cells.find((n) => n.strategy === 'naive CRIU' && n.sizeMiB === c.sizeMiB && n.load === c.load)?.freezeMs ?? [], 99);
const rows = cells.map((c) => ({
  sizeMiB: c.sizeMiB, load: c.load, strategy: c.strategy, runs: c.freezeMs.length,
  freezeMsMedian: pct(c.freezeMs, 50), freezeMsP99: pct(c.freezeMs, 99), totalMsMedian: pct(c.totalMs, 50),
  wireMiBMedian: Math.round(pct(c.wireBytes, 50) / 2 ** 20 * 10) / 10,
  /** Freeze p99 over the naive baseline's, same working set and load (the target is at most 0.25). */
  p99VsNaive: Math.round((pct(c.freezeMs, 99) / naiveP99(c)) * 100) / 100,
  /** Bytes on the wire over the working set (PreCopy's target is at most 1.5). */
  wireVsWorkingSet: Math.round((pct(c.wireBytes, 50) / (c.sizeMiB * 2 ** 20)) * 100) / 100,
  samples: c,
}));
process.stdout.write('\nsize     | load              | strategy   | freeze p50 | freeze p99 | p99/naive | total p50 | wire p50   | wire/set\n');
for (const r of rows) {
  process.stdout.write(`${String(r.sizeMiB + ' MiB').padEnd(8)} | ${r.load.padEnd(17)} | ${r.strategy.padEnd(10)} | ${String(r.freezeMsMedian + ' ms').padStart(10)} | ${String(r.freezeMsP99 + ' ms').padStart(10)} | ${String(r.p99VsNaive).padStart(9)} | ${String(r.totalMsMedian + ' ms').padStart(9)} | ${String(r.wireMiBMedian + ' MiB').padStart(10)} | ${r.wireVsWorkingSet}\n`);
}
const out = path.join(PROJECT_ROOT, 'bench', 'results', FULL ? 'freeze.json' : 'freeze-partial.json');
await mkdir(path.dirname(out), { recursive: true });
await writeFile(out, JSON.stringify({ date: new Date().toISOString(), kernel: release(), runs: RUNS, rateMiBps: RATE, rows }, null, 2) + '\n');
process.stdout.write(`wrote ${path.relative(PROJECT_ROOT, out)}\n`);
