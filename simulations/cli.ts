/**
 * npm run sim -- [--seed N] [--runs K] [--nodes N --pods P --migrations M] [--per-node L --per-cluster L] [--trace] [--json]
 *
 * With --seed and no --runs: replays that one seed exactly, printing its knobs first and, when an invariant
 * breaks, the trace of events that led there. With --runs K: K seeds from --seed on (default: a seed drawn
 * from the time, printed first), fault rates drawn per seed; the first failing seed is printed with the
 * command that replays it. Exit 1 on any violation.
 */
import { parseArgs } from 'node:util';
import { knobsFor, runSeed, type RunResult } from './world.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' }, runs: { type: 'string' }, nodes: { type: 'string' }, pods: { type: 'string' },
    migrations: { type: 'string' }, 'per-node': { type: 'string' }, 'per-cluster': { type: 'string' }, trace: { type: 'boolean', default: false }, json: { type: 'boolean', default: false },
  },
});
const num = (v: string | undefined, what: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) {
    process.stderr.write(`sim: --${what} must be a non-negative integer (got ${v})\n`);
    process.exit(2);
  }
  return n;
};
const size = {
  nodes: num(values.nodes, 'nodes'), pods: num(values.pods, 'pods'), migrations: num(values.migrations, 'migrations'),
  perNode: num(values['per-node'], 'per-node'), perCluster: num(values['per-cluster'], 'per-cluster'),
};
const sized = Object.fromEntries(Object.entries(size).filter(([, v]) => v !== undefined)) as Partial<Record<keyof typeof size, number>>;
const flag = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const runs = num(values.runs, 'runs');
const base = num(values.seed, 'seed') ?? (Date.now() % 1_000_000_007);

function report(r: RunResult): void {
  process.stdout.write(`seed ${r.seed}: ${r.violations.length === 0 ? 'ok' : 'VIOLATION'} · ${r.migrations} migrations ${JSON.stringify(r.outcomes)} · at most ${r.maxRunning} at once · ${r.virtualMs} ms virtual, ${r.steps} steps\n`);
}

if (runs === undefined) {
  const k = knobsFor(base, sized);
  process.stdout.write(`seed ${base}\nknobs ${JSON.stringify(k)}\n`);
  const r = await runSeed(k, { traceAll: values.trace });
  if (values.json) process.stdout.write(JSON.stringify({ ...r, trace: values.trace ? r.trace : undefined }) + '\n');
  else report(r);
  if (!values.json) {
    if (values.trace || r.violations.length > 0) process.stdout.write(`trace (last ${r.trace.length} events):\n${r.trace.join('\n')}\n`);
    for (const v of r.violations) process.stdout.write(`violation: ${v}\n`);
  }
  process.exit(r.violations.length === 0 ? 0 : 1);
}

process.stdout.write(`seeds ${base}..${base + runs - 1}${Object.keys(sized).length ? ` sizes ${JSON.stringify(sized)}` : ''}\n`);
const t0 = performance.now();
let migrations = 0;
const outcomes: Record<string, number> = {};
for (let i = 0; i < runs; i++) {
  const seed = base + i;
  const r = await runSeed(knobsFor(seed, sized));
  migrations += r.migrations;
  for (const [p, n] of Object.entries(r.outcomes)) outcomes[p] = (outcomes[p] ?? 0) + n;
  if (r.violations.length > 0) {
    report(r);
    for (const v of r.violations) process.stdout.write(`violation: ${v}\n`);
    process.stdout.write(`replay: npm run sim -- --seed ${seed}${Object.entries(sized).map(([k, v]) => ` --${flag(k)} ${v}`).join('')} --trace\n`);
    process.exit(1);
  }
}
const s = (performance.now() - t0) / 1000;
const summary = { seeds: runs, migrations, outcomes, seconds: Math.round(s * 10) / 10, seedsPerSec: Math.round(runs / s), migrationsPerSec: Math.round(migrations / s) };
process.stdout.write(values.json ? JSON.stringify(summary) + '\n' : `${runs} seeds ok · ${migrations} migrations ${JSON.stringify(outcomes)} · ${summary.seconds} s · ${summary.seedsPerSec} seeds/s · ${summary.migrationsPerSec} migrations/s\n`);
