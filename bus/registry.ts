/** Reading node registrations from the nodes KV bucket (written by each agent's heartbeat). */
import type { NatsConnection } from '@nats-io/nats-core';
import { Kvm } from '@nats-io/kv';
import { createCodec } from './codec.js';
import { NodeRegistration } from './messages.js';
import { Buckets } from './subjects.js';

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
