import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NodeOperationError } from '../bus/errors.js';

/** Default bound for one system command; iproute2 and friends answer in milliseconds, a hang means trouble. */
export const COMMAND_TIMEOUT_MS = 20_000;
/** Output kept per stream: enough for diagnostics, bounded so a chatty tool cannot exhaust memory. */
const MAX_OUTPUT_BYTES = 1 << 20;

export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  /** Exit codes that count as success (default: only 0). */
  okCodes?: number[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a program (never through a shell) and collects its output. A non-success exit, a timeout or a
 * spawn failure becomes a NodeOperationError whose one-line message names the command and its stderr.
 */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const runner = opts.env === undefined && opts.cwd === undefined ? spawnd() : undefined;
  return runner ? runner.run(cmd, args, opts) : runDirect(cmd, args, opts);
}

/** The verdict on a finished command, the same whichever way it was started. */
function settle(label: string, timeoutMs: number, okCodes: number[], code: number | null, signal: string | null, stdout: string, stderr: string): RunResult {
  if (signal) throw new NodeOperationError(`${label}: killed by ${signal} (timeout ${timeoutMs} ms)`);
  const exit = code ?? -1;
  if (!okCodes.includes(exit)) {
    const why = (stderr.trim() || stdout.trim()).split('\n').slice(-3).join(' | ');
    throw new NodeOperationError(`${label}: exit ${exit}: ${why}`);
  }
  return { code: exit, stdout, stderr };
}

function runDirect(cmd: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? COMMAND_TIMEOUT_MS;
  const okCodes = opts.okCodes ?? [0];
  return new Promise((resolve, reject) => {
    const stdin: 'ignore' | 'pipe' = opts.input === undefined ? 'ignore' : 'pipe';
    const child = spawn(cmd, args, { stdio: [stdin, 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    child.stdout!.on('data', (b: Buffer) => {
      if (outLen < MAX_OUTPUT_BYTES) out.push(b);
      outLen += b.length;
    });
    child.stderr!.on('data', (b: Buffer) => {
      if (errLen < MAX_OUTPUT_BYTES) err.push(b);
      errLen += b.length;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const label = [cmd, ...args].join(' ');
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new NodeOperationError(`cannot run ${cmd}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      try {
        resolve(settle(label, timeoutMs, okCodes, code, signal, Buffer.concat(out).subarray(0, MAX_OUTPUT_BYTES).toString('utf8'), Buffer.concat(err).subarray(0, MAX_OUTPUT_BYTES).toString('utf8')));
      } catch (e) {
        reject(e as Error);
      }
    });
    if (child.stdin) {
      // A program may exit before reading its input; that shows in its exit code, not as EPIPE here.
      child.stdin.on('error', () => {});
      child.stdin.end(opts.input);
    }
  });
}

/** Runs an `ip` command, optionally inside a named network namespace (`ip -n NS ...`). */
export function ip(args: readonly string[], netns?: string, opts?: RunOptions): Promise<RunResult> {
  return run('ip', netns ? ['-n', netns, ...args] : [...args], opts);
}

/** Feeds a batch of `ip` commands to `ip -batch -`, one per line: far faster than one process each. */
export async function ipBatch(lines: readonly string[], netns?: string): Promise<void> {
  if (lines.length === 0) return;
  const args = netns ? ['-n', netns, '-batch', '-'] : ['-batch', '-'];
  await run('ip', args, { input: lines.join('\n') + '\n' });
}

/** Runs a program inside a network namespace without a new mount namespace (unlike `ip netns exec`). */
export function inNetns(netns: string, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
  return run('nsenter', [`--net=/run/netns/${netns}`, '--', cmd, ...args], opts);
}

/**
 * Commands started by a small resident helper (native/pm-spawnd.c) instead of by forking this process:
 * a fork copies the page tables of the whole agent (~5 ms at ~100 MB), the helper's posix_spawn ~1 ms,
 * which counts where a freeze waits for a command. The helper is started on first use; it keeps no
 * process alive on its own (unreferenced while idle) and exits with this process. If it cannot start,
 * or dies, commands are forked directly again.
 */
class Spawnd {
  private child: ChildProcess | undefined;
  private failed = false;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: { kind: number; value: number; stdout: string; stderr: string }) => void; reject: (e: Error) => void }>();
  private inbox: Buffer = Buffer.alloc(0);

  constructor(private readonly binary: string) {}

  get usable(): boolean {
    return !this.failed;
  }

  private ensure(): ChildProcess | undefined {
    if (this.child) return this.child;
    if (this.failed) return undefined;
    const child = spawn(this.binary, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    child.on('error', () => this.lost(child));
    child.on('exit', () => this.lost(child));
    child.stdin!.on('error', () => this.lost(child));
    child.stdout!.on('data', (b: Buffer) => this.receive(b));
    this.child = child;
    this.idle();
    return child;
  }

  private lost(child: ChildProcess): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.failed = true;
    for (const p of this.pending.values()) p.reject(new NodeOperationError('the command runner (pm-spawnd) exited'));
    this.pending.clear();
  }

  /** While no command runs the helper keeps nothing alive: a CLI process may exit. */
  private idle(): void {
    const c = this.child;
    if (!c) return;
    const busy = this.pending.size > 0;
    for (const h of [c, c.stdin, c.stdout] as Array<{ ref?: () => void; unref?: () => void } | null>) {
      if (busy) h?.ref?.();
      else h?.unref?.();
    }
  }

  private receive(b: Buffer): void {
    this.inbox = this.inbox.length ? Buffer.concat([this.inbox, b]) : b;
    for (;;) {
      const i = this.inbox;
      if (i.length < 13) return;
      const outLen = i.readUInt32LE(9);
      if (i.length < 13 + outLen + 4) return;
      const errLen = i.readUInt32LE(13 + outLen);
      const end = 17 + outLen + errLen;
      if (i.length < end) return;
      const id = i.readUInt32LE(0);
      const r = { kind: i.readUInt8(4), value: i.readInt32LE(5), stdout: i.toString('utf8', 13, 13 + outLen), stderr: i.toString('utf8', 17 + outLen, end) };
      this.inbox = i.subarray(end);
      const p = this.pending.get(id);
      this.pending.delete(id);
      p?.resolve(r);
      this.idle();
    }
  }

  run(cmd: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
    const child = this.ensure();
    if (!child) return runDirect(cmd, args, opts);
    const timeoutMs = opts.timeoutMs ?? COMMAND_TIMEOUT_MS;
    const okCodes = opts.okCodes ?? [0];
    const label = [cmd, ...args].join(' ');
    const id = this.nextId++ >>> 0;
    const parts: Buffer[] = [];
    const u32 = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(n >>> 0);
      return b;
    };
    parts.push(Buffer.from('R'), u32(id), u32(args.length + 1));
    for (const a of [cmd, ...args]) {
      const b = Buffer.from(a, 'utf8');
      parts.push(u32(b.length), b);
    }
    if (opts.input === undefined) {
      parts.push(u32(0xffffffff));
    } else {
      const b = Buffer.from(opts.input, 'utf8');
      parts.push(u32(b.length), b);
    }
    return new Promise<RunResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        const k = Buffer.concat([Buffer.from('K'), u32(id)]);
        child.stdin?.write(k);
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          if (r.kind === 2) return reject(new NodeOperationError(`cannot run ${cmd}: ${errnoName(r.value)}`));
          try {
            resolve(settle(label, timeoutMs, okCodes, r.kind === 0 ? r.value : null, r.kind === 1 ? signalName(r.value) : null, r.stdout, r.stderr));
          } catch (e) {
            reject(e as Error);
          }
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.idle();
      child.stdin!.write(Buffer.concat(parts));
    });
  }
}

const nameOf = (table: Record<string, number>, n: number) => Object.entries(table).find(([, v]) => v === n)?.[0];
const errnoName = (n: number) => `spawn ${nameOf(os.constants.errno, n) ?? `errno ${n}`}`;
const signalName = (n: number) => nameOf(os.constants.signals, n) ?? `signal ${n}`;

let runner: Spawnd | undefined;
/** The helper, when it is built and has not failed; PODMOTION_SPAWND=off forks every command directly. */
function spawnd(): Spawnd | undefined {
  if (process.env['PODMOTION_SPAWND'] === 'off') return undefined;
  if (!runner) {
    const binary = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'native', 'pm-spawnd');
    if (!existsSync(binary)) return undefined;
    runner = new Spawnd(binary);
  }
  return runner.usable ? runner : undefined;
}
