/**
 * Client-visible stall against hold duration, for each way of holding a pod's traffic (see episode.ts).
 * Builds pm-hold if needed, runs every variant × hold duration `--reps` times in a private lab, prints a table
 * and writes bench/results/hold.json.
 *
 * Usage (as root): npx tsc -p tsconfig.json && node dist/bench/hold/run.js [--reps N] [--holds 100,300,500]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, release } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { attachHold } from '../../bpf/index.js';
import { run } from '../../node-runtime/exec.js';
import { HOLD_VARIANTS, runEpisode, type EpisodeResult, type HoldVariant } from './episode.js';
import { createLab, destroyLab, labNamed, ROOT, startClient, startServer } from './lab.js';

const DEFAULT_HOLDS_MS = [100, 300, 500];
const DEFAULT_REPS = 5;
/** Normal traffic between episodes, so RTO and persist backoff from the last one are gone. */
const SETTLE_MS = 400;
/** Compiling the BPF object and the controller takes a few seconds at most. */
const BUILD_TIMEOUT_MS = 120_000;

interface Cell {
  variant: HoldVariant;
  holdMs: number;
  stallMs: { median: number; min: number; max: number };
  resumeAfterReleaseMs: { median: number; min: number; max: number };
  quiesceMs: { median: number; max: number };
  droppedToPod: number;
  droppedFromPod: number;
  rsts: number;
}

function argValue(flag: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i < 0 ? undefined : process.argv[i + 1];
}

function stats(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const round = (x: number) => Math.round(x * 10) / 10;
  return { median: round(s[Math.floor(s.length / 2)] ?? NaN), min: round(s[0] ?? NaN), max: round(s[s.length - 1] ?? NaN) };
}

function summarize(variant: HoldVariant, holdMs: number, eps: EpisodeResult[]): Cell {
  const q = stats(eps.map((e) => e.quiesceMs));
  const sum = (f: (e: EpisodeResult) => number) => eps.reduce((a, e) => a + f(e), 0);
  return {
    variant,
    holdMs,
    stallMs: stats(eps.map((e) => e.stallMs)),
    resumeAfterReleaseMs: stats(eps.map((e) => e.resumeAfterReleaseMs)),
    quiesceMs: { median: q.median, max: q.max },
    droppedToPod: sum((e) => e.droppedToPod),
    droppedFromPod: sum((e) => e.droppedFromPod),
    rsts: sum((e) => e.rsts),
  };
}

function printTable(cells: Cell[]): void {
  const rows = cells.map((c) => [
    c.variant,
    String(c.holdMs),
    `${c.stallMs.median} (${c.stallMs.min}–${c.stallMs.max})`,
    `${c.resumeAfterReleaseMs.median} (${c.resumeAfterReleaseMs.min}–${c.resumeAfterReleaseMs.max})`,
    String(c.quiesceMs.max),
    String(c.rsts),
  ]);
  const head = ['variant', 'hold ms', 'stall ms median (min–max)', 'release→reply ms median (min–max)', 'quiesce ms max', 'RST'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((x, i) => x.padEnd(widths[i]!)).join(' | ');
  console.log(line(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
  for (const r of rows) console.log(line(r));
}

async function main(): Promise<void> {
  const reps = Number(argValue('--reps') ?? DEFAULT_REPS);
  const holds = (argValue('--holds') ?? DEFAULT_HOLDS_MS.join(',')).split(',').map(Number);
  await run('bash', [path.join(ROOT, 'bpf', 'build.sh'), path.join(ROOT, 'dist', 'native')], { timeoutMs: BUILD_TIMEOUT_MS });
  const lab = labNamed('bnhold');
  const episodes: EpisodeResult[] = [];
  const cells: Cell[] = [];
  try {
    await createLab(lab);
    await startServer(lab);
    await attachHold({ netns: lab.nodeNetns, dev: lab.dev, podIp: lab.podIp, pin: lab.pin });
    for (const variant of HOLD_VARIANTS) {
      const client = await startClient(lab); // one connection per variant: a broken one cannot spoil the next
      await sleep(SETTLE_MS);
      for (const holdMs of holds) {
        const eps: EpisodeResult[] = [];
        for (let r = 0; r < reps; r++) {
          eps.push(await runEpisode(lab, client, variant, holdMs));
          await sleep(SETTLE_MS);
        }
        episodes.push(...eps);
        cells.push(summarize(variant, holdMs, eps));
        console.error(`${variant} ${holdMs} ms: stall ${eps.map((e) => e.stallMs.toFixed(0)).join(', ')} ms`);
      }
      const summary = await client.stop();
      if (!summary.ok) throw new Error(`${variant}: the connection broke: ${summary.error}`);
    }
  } finally {
    await destroyLab(lab);
  }
  printTable(cells);
  const out = path.join(ROOT, 'bench', 'results', 'hold.json');
  await mkdir(path.dirname(out), { recursive: true });
  const machine = { kernel: release(), cpus: cpus().length };
  await writeFile(out, JSON.stringify({ date: new Date().toISOString(), machine, reps, holdsMs: holds, cells, episodes }, null, 2) + '\n');
  console.log(`wrote ${path.relative(ROOT, out)}`);
}

main().catch((err: unknown) => {
  console.error(`bench hold: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
