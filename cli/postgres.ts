/**
 * PostgreSQL as a proof workload: the pod (workloads/postgres_pod.sh, run as the postgres user with its
 * data on a volume), pgbench driven from the local cluster's client namespace, and the TPC-B invariant
 * (every balance total equals the history's) that says no transaction was lost or applied twice.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { WORKLOADS } from './load.js';
import { run } from '../node-runtime/exec.js';

export const PG_PORT = 5432;
export const PG_POD_SCRIPT = path.join(WORKLOADS, 'postgres_pod.sh');

const inClient = (netns: string, cmd: string, args: string[]) => ['--net=/run/netns/' + netns, '--', cmd, ...args];

/** Runs a query from the client namespace; returns psql's unaligned output. */
export async function psql(netns: string, ip: string, sql: string): Promise<string> {
  const r = await run('nsenter', inClient(netns, 'psql', ['-h', ip, '-p', String(PG_PORT), '-U', 'postgres', '-XAtq', '-c', sql]), { timeoutMs: 60_000 });
  return r.stdout.trim();
}

/** pgbench -i: the TPC-B tables at `scale`. */
export async function pgbenchInit(netns: string, ip: string, scale: number): Promise<void> {
  await run('nsenter', inClient(netns, 'pgbench', ['-h', ip, '-p', String(PG_PORT), '-U', 'postgres', '-i', '-q', '-s', String(scale), 'postgres']), { timeoutMs: 300_000 });
}

export interface PgbenchResult {
  /** Transactions per second, one figure per second of the run (pgbench -P 1). */
  perSecond: number[];
  processed: number;
  failed: number;
  tps: number;
  /** pgbench's own output, for a report. */
  output: string;
  code: number;
}

/** Starts pgbench -c clients -j threads -T seconds -P 1 (and -l into `logDir`, -n with `keepHistory`); resolves when it ends. */
export function pgbench(netns: string, ip: string, o: { clients: number; threads: number; seconds: number; logDir?: string; keepHistory?: boolean }): Promise<PgbenchResult> {
  return new Promise((resolve, reject) => {
    const log = o.logDir !== undefined ? ['-l', `--log-prefix=${path.join(o.logDir, 'pgbench_log')}`] : [];
    // A run truncates pgbench_history first unless -n: a second run must keep it for the invariant to hold.
    if (o.keepHistory) log.push('-n');
    const child = spawn('nsenter', inClient(netns, 'pgbench', ['-h', ip, '-p', String(PG_PORT), '-U', 'postgres',
      '-c', String(o.clients), '-j', String(o.threads), '-T', String(o.seconds), '-P', '1', ...log, 'postgres']), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
      resolve({
        perSecond: [...out.matchAll(/progress: [\d.]+ s, ([\d.]+) tps/g)].map((m) => Number(m[1])),
        processed: num(/number of transactions actually processed: (\d+)/),
        failed: num(/number of failed transactions: (\d+)/),
        tps: num(/tps = ([\d.]+)/),
        output: out, code: code ?? -1,
      });
    });
  });
}

/** TPC-B's invariant: the totals of accounts, branches and tellers all equal the sum of the history. */
export async function pgbenchConsistent(netns: string, ip: string): Promise<{ ok: boolean; totals: string }> {
  const totals = await psql(netns, ip,
    'select (select sum(abalance) from pgbench_accounts), (select sum(bbalance) from pgbench_branches), ' +
    '(select sum(tbalance) from pgbench_tellers), (select coalesce(sum(delta), 0) from pgbench_history)');
  const parts = totals.split('|');
  return { ok: parts.length === 4 && parts.every((x) => x === parts[0]), totals };
}
