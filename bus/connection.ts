/** Connecting to the bus: an explicit URL and NKey seed, or the cluster's embedded server. */
import { connect } from '@nats-io/transport-node';
import { nkeyAuthenticator, type NatsConnection } from '@nats-io/nats-core';
import { readSeed } from './identity.js';

/** Where the bus is and who we are on it. */
export interface BusAddress {
  url: string;
  /** NKey seed file of this component's identity; absent only for servers without auth. */
  seedFile?: string;
  /** Inbox prefix a restricted identity is allowed to subscribe to (see bus/identity.ts). */
  inboxPrefix?: string;
}

/** A connection attempt to a local or cluster server; longer means the server is not there. */
export const CONNECT_TIMEOUT_MS = 5_000;

/** Opens a connection named after the component, so `nats server report connections` tells who is who. */
export async function connectBus(addr: BusAddress, name: string): Promise<NatsConnection> {
  const seed = addr.seedFile ? await readSeed(addr.seedFile) : undefined;
  return connect({
    servers: addr.url,
    name,
    timeout: CONNECT_TIMEOUT_MS,
    // Agents and the coordinator must ride out a bus restart rather than exit.
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    ...(seed ? { authenticator: nkeyAuthenticator(seed) } : {}),
    ...(addr.inboxPrefix ? { inboxPrefix: addr.inboxPrefix } : {}),
  });
}

/** Bus address from the environment: NATS_URL plus PODMOTION_NKEY (seed file). */
export function busFromEnv(env: NodeJS.ProcessEnv = process.env): BusAddress | undefined {
  const url = env['NATS_URL'];
  if (!url) return undefined;
  const seedFile = env['PODMOTION_NKEY'];
  const inboxPrefix = env['PODMOTION_INBOX_PREFIX'];
  return { url, ...(seedFile ? { seedFile } : {}), ...(inboxPrefix ? { inboxPrefix } : {}) };
}
