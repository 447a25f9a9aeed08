/**
 * A simulated NATS: request/reply between the coordinator and node agents with delay, loss, duplication
 * (hence reordering) and partitions, all drawn from the run's seed and timed on the scheduler. It implements
 * the one NatsConnection method the coordinator's effects use (bus/rpc.ts `request`), so they run unchanged.
 */
import type { Msg, NatsConnection } from '@nats-io/nats-core';
import { toWire } from '../bus/errors.js';
import { wireErrorCodec } from '../bus/rpc.js';
import { Headers } from '../bus/subjects.js';
import type { Rng } from './rng.js';
import type { Scheduler } from './scheduler.js';

export interface BusFaults {
  /** Chance that a request, or separately its reply, is lost. */
  loss: number;
  /** Chance that a request is delivered twice. */
  duplicate: number;
  /** Network delay per message, uniform in [0, maxDelayMs]. */
  maxDelayMs: number;
}

export type Handler = (data: Uint8Array) => Promise<Uint8Array>;

/** Node of a subject `podmotion.v1.node.<node>.<verb>`, or undefined. */
function nodeOf(subject: string): string | undefined {
  const m = /^podmotion\.v1\.node\.([^.]+)\./.exec(subject);
  return m?.[1];
}

class TimeoutErr extends Error {
  constructor(subject: string) {
    super(`TIMEOUT waiting for a reply on ${subject}`);
    this.name = 'TimeoutError';
  }
}

class NoRespondersErr extends Error {
  constructor(subject: string) {
    super(`503 no responders on ${subject}`);
    this.name = 'NoRespondersError';
  }
}

export class SimBus {
  private handlers = new Map<string, Handler>();
  /** Nodes cut off from everyone (requests to them and their replies are lost). */
  readonly partitioned = new Set<string>();
  faults: BusFaults = { loss: 0, duplicate: 0, maxDelayMs: 1 };
  delivered = 0;

  constructor(private readonly clock: Scheduler, private readonly rng: Rng, private readonly trace: (line: string) => void) {}

  serve(subject: string, h: Handler): void {
    this.handlers.set(subject, h);
  }

  unserve(prefix: string): void {
    for (const k of [...this.handlers.keys()]) if (k.startsWith(prefix)) this.handlers.delete(k);
  }

  private delay(): number {
    return this.rng.int(0, Math.max(0, Math.round(this.faults.maxDelayMs)));
  }

  private lost(subject: string): boolean {
    const n = nodeOf(subject);
    return (n !== undefined && this.partitioned.has(n)) || this.rng.chance(this.faults.loss);
  }

  /**
   * The connection the coordinator's effects get: only `request` is used. Once `alive()` is false (the
   * process died) its requests go nowhere and nothing comes back to it, as for a dead process.
   */
  connection(alive: () => boolean = () => true): NatsConnection {
    const request = (subject: string, data: Uint8Array, opts?: { timeout?: number }): Promise<Msg> =>
      new Promise<Msg>((resolve, reject) => {
        if (!alive()) return;
        let done = false;
        const finish = (f: () => void) => {
          if (done || !alive()) return;
          done = true;
          cancelTimeout();
          f();
        };
        const cancelTimeout = this.clock.setTimer(() => finish(() => reject(new TimeoutErr(subject))), opts?.timeout ?? 5_000);
        if (!this.handlers.has(subject) && !this.partitioned.has(nodeOf(subject) ?? '')) {
          this.clock.setTimer(() => finish(() => reject(new NoRespondersErr(subject))), this.delay());
          return;
        }
        const copies = this.rng.chance(this.faults.duplicate) ? 2 : 1;
        for (let i = 0; i < copies; i++) {
          if (this.lost(subject)) {
            this.trace(`bus: request lost ${subject}`);
            continue;
          }
          this.clock.setTimer(() => {
            const h = this.handlers.get(subject);
            if (!h) return; // the agent went away while the message was in flight
            this.delivered++;
            h(data).then(
              (out) => ({ data: out, error: false }),
              (err: unknown) => ({ data: wireErrorCodec.encode(toWire(err)), error: true }),
            ).then((r) => {
              if (this.lost(subject)) {
                this.trace(`bus: reply lost ${subject}`);
                return;
              }
              this.clock.setTimer(() => finish(() => resolve(reply(r.data, r.error))), this.delay());
            });
          }, this.delay());
        }
      });
    return { request } as unknown as NatsConnection;
  }
}

function reply(data: Uint8Array, error: boolean): Msg {
  return {
    data,
    headers: error ? { get: (k: string) => (k === Headers.error ? '1' : '') } : undefined,
  } as unknown as Msg;
}
