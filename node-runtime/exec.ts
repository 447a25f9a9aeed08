import { spawn } from 'node:child_process';
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
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (signal) {
        return reject(new NodeOperationError(`${label}: killed by ${signal} (timeout ${timeoutMs} ms)`));
      }
      const exit = code ?? -1;
      if (!okCodes.includes(exit)) {
        const why = (stderr.trim() || stdout.trim()).split('\n').slice(-3).join(' | ');
        return reject(new NodeOperationError(`${label}: exit ${exit}: ${why}`));
      }
      resolve({ code: exit, stdout, stderr });
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
