/**
 * Drives bench/hold/pingpong.py (a paced request/response client) in a network namespace and collects what
 * it reports: the connection's local address, every reply gap over its threshold, and a final summary.
 * Times are CLOCK_MONOTONIC microseconds, the clock pm-hold reports in, so gaps line up with hold events.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** pingpong.py sits next to this file's source; dist/bench/hold/pingpong.js → <root>/bench/hold/pingpong.py. */
const SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'hold', 'pingpong.py');
/** Milliseconds between an answer and the next request: ~800 requests/s, light on a 2-core machine. */
export const PINGPONG_PACE_MS = 1;
/** Reply gaps above this are reported; the unloaded loop answers within 2 ms. */
export const PINGPONG_GAP_MS = 20;
/** Connecting inside the lab takes milliseconds. */
const CONNECT_TIMEOUT_MS = 5_000;
/** The client exits within milliseconds of SIGTERM; after this it is killed. */
const STOP_TIMEOUT_MS = 3_000;
/** Gaps kept; a run produces a handful per hold. */
const MAX_GAPS = 10_000;

export interface Gap {
  startUs: number;
  endUs: number;
  ms: number;
  /** The request whose answer ended the gap. */
  n: number;
}

export interface PingPongSummary {
  replies: number;
  /** Every answer matched its request and the connection never broke. */
  ok: boolean;
  error: string | null;
  maxGapMs: number;
  monoUs: number;
}

export interface PingPongClient {
  /** The client's "IP:PORT". */
  readonly local: string;
  readonly gaps: readonly Gap[];
  /** The first gap (already seen or still to come) matching `pred`, or undefined after timeoutMs. */
  waitGap(pred: (g: Gap) => boolean, timeoutMs: number): Promise<Gap | undefined>;
  /** The summary printed by the client before exiting early (an error), if it did. */
  readonly failure: PingPongSummary | undefined;
  /** SIGTERM, then the final summary. */
  stop(): Promise<PingPongSummary>;
}

class Client implements PingPongClient {
  local = '';
  readonly gaps: Gap[] = [];
  failure: PingPongSummary | undefined;
  private summary: PingPongSummary | undefined;
  private readonly waiters = new Set<() => void>();
  private readonly exited: Promise<void>;

  constructor(private readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.on('close', () => resolve()));
    createInterface({ input: child.stdout! }).on('line', (line) => this.onLine(line));
  }

  private onLine(line: string): void {
    const msg = JSON.parse(line) as { connected?: { local: string }; gap?: Gap; summary?: PingPongSummary };
    if (msg.connected) this.local = msg.connected.local;
    if (msg.gap && this.gaps.length < MAX_GAPS) this.gaps.push(msg.gap);
    if (msg.summary) {
      this.summary = msg.summary;
      if (!msg.summary.ok) this.failure = msg.summary;
    }
    for (const wake of this.waiters) wake();
  }

  async waitConnected(): Promise<void> {
    const deadline = performance.now() + CONNECT_TIMEOUT_MS;
    while (this.local === '' && this.summary === undefined && performance.now() < deadline) await this.next(deadline);
    if (this.local === '') throw new Error(`pingpong client did not connect: ${JSON.stringify(this.summary ?? 'no output')}`);
  }

  async waitGap(pred: (g: Gap) => boolean, timeoutMs: number): Promise<Gap | undefined> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const hit = this.gaps.find(pred);
      if (hit || this.summary !== undefined || performance.now() >= deadline) return hit;
      await this.next(deadline);
    }
  }

  /** Resolves at the next output line or at the deadline, whichever is first. */
  private next(deadline: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, deadline - performance.now()));
      this.waiters.add(done);
    });
  }

  async stop(): Promise<PingPongSummary> {
    this.child.kill('SIGTERM');
    const killer = setTimeout(() => this.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await this.exited;
    clearTimeout(killer);
    if (!this.summary) throw new Error('pingpong client exited without a summary');
    return this.summary;
  }
}

/** Starts the client in `netns` against HOST:PORT and resolves once it is connected. */
export async function startPingPong(netns: string, host: string, port: number): Promise<PingPongClient> {
  const args = [`--net=/run/netns/${netns}`, '--', '/usr/bin/python3', SCRIPT, host, String(port), String(PINGPONG_PACE_MS), String(PINGPONG_GAP_MS)];
  const child = spawn('nsenter', args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const client = new Client(child);
  await client.waitConnected();
  return client;
}
