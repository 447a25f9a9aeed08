/**
 * One `criu swrk` run behind the pm-criu-swrk helper (criu-shim/native/criu-swrk.c): the helper owns the
 * SEQPACKET socketpair Node cannot open, and relays each RPC message as a frame (u32 little-endian length +
 * bytes) over its stdin/stdout. This module only moves frames and tracks the process; driver.ts speaks RPC.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Same bound as the helper's MAX_FRAME_BYTES: CRIU's messages are a few hundred bytes. */
export const MAX_FRAME_BYTES = 1 << 20;
/** CRIU sends one message and waits for an answer, so more queued frames means something is wrong. */
const MAX_QUEUED_FRAMES = 64;
/** Helper stderr kept for diagnostics: its own lines plus whatever CRIU prints before its log is open. */
const MAX_STDERR_CHARS = 16_384;
/** After SIGTERM the helper SIGKILLs CRIU at once and exits; if it has not within this, it is SIGKILLed too. */
export const HELPER_KILL_GRACE_MS = 2_000;

/** Exit codes the helper itself uses (otherwise it exits with CRIU's code, or 128+signal). */
export const HELPER_EXIT = { helperFailed: 125, criuNotExecutable: 127 } as const;

/** The helper binary as scripts/build-native.sh builds it: <root>/dist/native/pm-criu-swrk. */
export function defaultHelperPath(): string {
  // This file runs from <root>/dist/criu-shim/rpc/swrk.js.
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  return path.join(root, 'dist', 'native', 'pm-criu-swrk');
}

/**
 * A file the helper opens read-only and hands to CRIU as descriptor `fd` (and keeps at `fd` itself), or,
 * with `connect`, an AF_UNIX stream listener at `path` the helper connects to (and keeps no copy of).
 */
export interface InheritedFile {
  path: string;
  fd: number;
  connect?: boolean;
}

export interface SwrkExit {
  /** Helper exit code (CRIU's, or 128+signal, or a HELPER_EXIT code); null if the helper was signalled. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The helper could not be started at all (e.g. ENOENT). */
  spawnError?: Error;
}

export interface SwrkSession {
  /** Sends one RPC message to CRIU. */
  send(message: Uint8Array): void;
  /** The next message from CRIU, or undefined once the helper's output has ended. */
  next(): Promise<Uint8Array | undefined>;
  /** Settles when the helper has exited (never rejects). */
  readonly exited: Promise<SwrkExit>;
  /** The helper has exited or its output ended: nothing more can be asked of it. */
  ended(): boolean;
  /** The last lines the helper (or CRIU, before its log file is open) wrote to stderr. */
  stderr(): string;
  /** Aborts: SIGTERM (the helper kills CRIU), then SIGKILL after HELPER_KILL_GRACE_MS. Idempotent. */
  kill(): void;
  /** Set when the frame stream broke (oversized frame, too many queued): the session is unusable. */
  readonly failure: Error | undefined;
}

class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** Appends bytes and returns every frame they complete. */
  push(chunk: Buffer): Uint8Array[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Uint8Array[] = [];
    while (this.buffered >= 4) {
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = [all];
      const len = all.readUInt32LE(0);
      if (len > MAX_FRAME_BYTES) throw new Error(`helper sent a frame of ${len} bytes (limit ${MAX_FRAME_BYTES})`);
      if (all.length < 4 + len) break;
      frames.push(Uint8Array.from(all.subarray(4, 4 + len)));
      const rest = all.subarray(4 + len);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
    }
    return frames;
  }
}

function frame(message: Uint8Array): Buffer {
  if (message.length > MAX_FRAME_BYTES) throw new Error(`message of ${message.length} bytes is over the frame limit`);
  const out = Buffer.allocUnsafe(4 + message.length);
  out.writeUInt32LE(message.length, 0);
  out.set(message, 4);
  return out;
}

/** Starts the helper, which starts `criu swrk`. Never throws: a spawn failure shows in `exited`. */
export function startSwrk(helperPath: string, criuPath: string, inherit: readonly InheritedFile[], env?: Readonly<Record<string, string>>): SwrkSession {
  const args = ['--criu', criuPath];
  for (const f of inherit) args.push(f.connect ? '--connect' : '--inherit', `${f.path}:${f.fd}`);
  const child: ChildProcess = spawn(helperPath, args, { stdio: ['pipe', 'pipe', 'pipe'], ...(env ? { env: { ...process.env, ...env } } : {}) });

  const queue: Uint8Array[] = [];
  const waiters: Array<(m: Uint8Array | undefined) => void> = [];
  let ended = false;
  let failure: Error | undefined;
  let stderrText = '';
  let killTimer: NodeJS.Timeout | undefined;

  const deliver = (m: Uint8Array | undefined): void => {
    const w = waiters.shift();
    if (w) w(m);
    else if (m !== undefined) queue.push(m);
  };
  const end = (): void => {
    ended = true;
    while (waiters.length > 0) waiters.shift()!(undefined);
  };

  let kill = (): void => {};
  const reader = new FrameReader();
  child.stdout!.on('data', (chunk: Buffer) => {
    if (failure) return;
    try {
      for (const m of reader.push(chunk)) deliver(m);
      if (queue.length > MAX_QUEUED_FRAMES) throw new Error(`more than ${MAX_QUEUED_FRAMES} unread messages from criu`);
    } catch (e) {
      failure = e as Error;
      kill();
      end();
    }
  });
  child.stdout!.on('end', end);
  child.stderr!.on('data', (chunk: Buffer) => {
    stderrText = (stderrText + chunk.toString('utf8')).slice(-MAX_STDERR_CHARS);
  });
  // The helper may exit before reading everything; that shows in its exit code, not as EPIPE here.
  child.stdin!.on('error', () => {});

  const exited = new Promise<SwrkExit>((resolve) => {
    child.once('error', (spawnError) => {
      end();
      resolve({ code: null, signal: null, spawnError });
    });
    child.once('close', (code, signal) => {
      if (killTimer) clearTimeout(killTimer);
      end();
      resolve({ code, signal });
    });
  });

  kill = (): void => {
    if (child.exitCode !== null || child.signalCode !== null || killTimer) return;
    child.kill('SIGTERM');
    killTimer = setTimeout(() => child.kill('SIGKILL'), HELPER_KILL_GRACE_MS);
  };

  return {
    send(message) {
      child.stdin!.write(frame(message));
    },
    next() {
      const m = queue.shift();
      if (m !== undefined || ended) return Promise.resolve(m);
      return new Promise((resolve) => waiters.push(resolve));
    },
    exited,
    ended: () => ended || child.exitCode !== null || child.signalCode !== null,
    stderr: () => stderrText,
    kill: () => kill(),
    get failure() {
      return failure;
    },
  };
}
