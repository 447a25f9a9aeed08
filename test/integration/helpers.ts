/** Shared by integration tests: run the real CLI, and snapshot what a test may leave on the machine. */
import { spawn } from 'node:child_process';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import path from 'node:path';
import { CLI_ENTRY, PROJECT_ROOT } from '../../node-runtime/constants.js';

export const WORKLOADS = path.join(PROJECT_ROOT, 'workloads');
export const PYTHON = '/usr/bin/python3';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Adds flags to a command line before its `--` (after which everything belongs to the pod's command). */
export function withFlags(args: string[], ...flags: string[]): string[] {
  const dd = args.indexOf('--');
  return dd < 0 ? [...args, ...flags] : [...args.slice(0, dd), ...flags, ...args.slice(dd)];
}

/** Pids of a snapshot's processes that are still alive (and not zombies). */
export async function stillAlive(processes: readonly string[]): Promise<string[]> {
  const alive: string[] = [];
  for (const p of processes) {
    const pid = p.split(' ')[0];
    try {
      if (!/^State:\s+Z/m.test(await readFile(`/proc/${pid}/status`, 'utf8'))) alive.push(p);
    } catch {
      // gone
    }
  }
  return alive;
}

/** Runs `podmotion ARGS` as a user would, with a bound that catches hangs. */
export function cli(args: string[], timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_ENTRY, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** `podmotion ARGS --json`, parsed; fails with the CLI's own error line when the command fails. */
export async function cliJson<T = any>(args: string[], timeoutMs?: number): Promise<T> {
  const r = await cli(withFlags(args, '--json'), timeoutMs);
  if (r.code !== 0) throw new Error(`podmotion ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}

/** What a cluster can leave behind on the host: namespaces, host links, and its processes. */
export interface HostSnapshot {
  netns: string[];
  hostLinks: string[];
  processes: string[];
}

async function processesOf(cluster: string, markers: readonly string[], netnsInodes: ReadonlySet<number>): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = (await readFile(`/proc/${e}/cmdline`, 'utf8')).split('\0').join(' ');
      const status = await readFile(`/proc/${e}/status`, 'utf8');
      if (/^State:\s+Z/m.test(status)) continue;
      const netIno = Number(/\[(\d+)\]/.exec(await readlink(`/proc/${e}/ns/net`))?.[1]);
      const mine = cmd.includes(`--cluster ${cluster}`) || cmd.includes(`pm-${cluster}-`) || markers.some((m) => cmd.includes(m));
      if (mine || netnsInodes.has(netIno)) out.push(`${e} ${cmd}`);
    } catch {
      // exited meanwhile
    }
  }
  return out.sort();
}

/** `markers`: extra command-line fragments that identify the cluster's processes (e.g. its bus store dir). */
export async function snapshot(cluster: string, markers: readonly string[] = []): Promise<HostSnapshot> {
  const netns = (await readdir('/run/netns').catch(() => [] as string[])).filter((n) => n.startsWith(`pm-${cluster}-`)).sort();
  const hostLinks = (await readdir('/sys/class/net')).sort();
  const inodes = new Set<number>();
  for (const n of netns) inodes.add((await stat(`/run/netns/${n}`)).ino);
  return { netns, hostLinks, processes: await processesOf(cluster, markers, inodes) };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
