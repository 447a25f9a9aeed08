/** Reading node registrations from the nodes KV bucket (written by each agent's heartbeat). */
import type { NatsConnection } from '@nats-io/nats-core';
import { Kvm } from '@nats-io/kv';
import { createCodec } from './codec.js';
import { NodeRegistration } from './messages.js';
import { Buckets, NODE_REGISTRATION_TTL_MS } from './subjects.js';

const registrationCodec = createCodec(NodeRegistration, 'node registration');

/** Every live registration, by node name; expired ones are gone by the bucket's TTL. */
export async function readRegistrations(nc: NatsConnection): Promise<Map<string, NodeRegistration>> {
  const kv = await new Kvm(nc).open(Buckets.nodes);
  const out = new Map<string, NodeRegistration>();
  const keys = await kv.keys();
  for await (const k of keys) {
    const e = await kv.get(k);
    if (e && e.operation === 'PUT') out.set(k, registrationCodec.decode(e.value));
  }
  return out;
}

/** How long start() waits for the bucket's contents before reads fall back to the bucket. */
const WATCH_START_TIMEOUT_MS = 2_000;

/**
 * The registrations, kept current by a watch on the bucket: reading them costs no round trip (a fresh read
 * is a request per node, and the overlay handoff reads them with the pod frozen). The bucket drops an entry
 * at its TTL without telling watchers, so an entry not renewed within the TTL is left out here too. Until
 * the watch has delivered the bucket's contents, and after it ended, a read goes to the bucket.
 */
export class RegistrationWatch {
  private readonly seen = new Map<string, { reg: NodeRegistration; atMs: number }>();
  private ready = false;
  private stopped = false;
  private watch: { stop(): void } | undefined;

  private constructor(private readonly nc: NatsConnection, private readonly nowMs: () => number) {}

  /** Starts watching; resolves once the bucket's contents have arrived, or after a bounded wait. */
  static async start(nc: NatsConnection, nowMs: () => number = Date.now): Promise<RegistrationWatch> {
    const w = new RegistrationWatch(nc, nowMs);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      w.run().catch(() => {}),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, WATCH_START_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    return w;
  }

  private async run(): Promise<void> {
    const kv = await new Kvm(this.nc).open(Buckets.nodes);
    let caughtUp!: () => void;
    const initialized = new Promise<void>((resolve) => (caughtUp = resolve));
    const it = await kv.watch({ key: '>' });
    this.watch = it;
    if (this.stopped) it.stop();
    const markReady = () => {
      if (!this.stopped) this.ready = true;
      caughtUp();
    };
    void (async () => {
      try {
        for await (const e of it) {
          if (e.operation === 'PUT') {
            try {
              // Entries delivered as the watch starts may be old: their age counts from when they were written.
              const atMs = this.ready ? this.nowMs() : Math.min(this.nowMs(), e.created.getTime());
              this.seen.set(e.key, { reg: registrationCodec.decode(e.value), atMs });
            } catch {
              this.seen.delete(e.key); // an entry that does not decode is no registration
            }
          } else {
            this.seen.delete(e.key);
          }
          // The watch flags the last of the bucket's current entries (and every later one) as an update.
          if (e.isUpdate && !this.ready) markReady();
        }
      } finally {
        this.ready = false;
        caughtUp();
      }
    })();
    // An empty bucket delivers nothing to say the watch caught up.
    if ((await kv.status()).values === 0) markReady();
    await initialized;
  }

  /** Every live registration, by node name. */
  async current(): Promise<Map<string, NodeRegistration>> {
    if (!this.ready) return readRegistrations(this.nc);
    const out = new Map<string, NodeRegistration>();
    const oldest = this.nowMs() - NODE_REGISTRATION_TTL_MS;
    for (const [k, v] of this.seen) if (v.atMs >= oldest) out.set(k, v.reg);
    return out;
  }

  stop(): void {
    this.stopped = true;
    this.ready = false;
    this.watch?.stop();
  }
}
