/** The JetStream stream and KV buckets PodMotion keeps its state in; creating them is idempotent. */
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { Buckets, NODE_REGISTRATION_TTL_MS, Streams } from './subjects.js';

/** Events are an audit trail, not a database: a week or 1 GiB, whichever comes first. */
const EVENTS_MAX_AGE_MS = 7 * 24 * 3600 * 1000;
const EVENTS_MAX_BYTES = 1 << 30;
/** Migration records: keep a short history per migration for debugging a resume. */
const MIGRATIONS_HISTORY = 5;
/** A migration record is rewritten at every phase; a week after its last change it is history, not state. */
const MIGRATIONS_TTL_MS = 7 * 24 * 3600 * 1000;

/** Creates the events stream and the KV buckets when missing; leaves existing ones as they are. */
export async function ensureBusResources(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const ev = Streams.events;
  try {
    await jsm.streams.info(ev.name);
  } catch {
    await jsm.streams.add({
      name: ev.name,
      subjects: [...ev.subjects],
      max_age: EVENTS_MAX_AGE_MS * 1_000_000,
      max_bytes: EVENTS_MAX_BYTES,
    });
  }
  const kvm = new Kvm(nc);
  await kvm.create(Buckets.migrations, { history: MIGRATIONS_HISTORY, ttl: MIGRATIONS_TTL_MS });
  await kvm.create(Buckets.nodes, { history: 1, ttl: NODE_REGISTRATION_TTL_MS });
}
