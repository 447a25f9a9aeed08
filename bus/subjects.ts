/**
 * Every NATS subject, stream, KV bucket and header PodMotion uses. Nothing else spells a subject:
 * permissions handed to each bus identity are derived from these, so a rename cannot open a hole.
 */

import type { MigVerb } from './node-migration.js';

/** Root of every subject; the version lets a newer API run beside an older one. */
export const API_ROOT = 'podmotion.v1';

export const Subjects = {
  /** Requests to one node agent: `podmotion.v1.node.<node>.<verb>`. */
  node: (node: string, verb: NodeVerb | MigVerb) => `${API_ROOT}.node.${node}.${verb}`,
  /** Everything addressed to one node (for permissions and subscriptions). */
  nodeAll: (node: string) => `${API_ROOT}.node.${node}.>`,
  /** Events a node publishes about itself (heartbeats, pod changes). */
  nodeEvents: (node: string) => `${API_ROOT}.events.node.${node}`,
  /** Migration events, one subject per migration: `podmotion.v1.events.migration.<id>`. */
  migrationEvents: (id: string) => `${API_ROOT}.events.migration.${id}.phase`,
  /** Progress within a phase (pre-copy rounds): `podmotion.v1.events.migration.<id>.progress`. */
  migrationProgress: (id: string) => `${API_ROOT}.events.migration.${id}.progress`,
  /** Every event of one migration, for watchers. */
  migrationAll: (id: string) => `${API_ROOT}.events.migration.${id}.>`,
  /** The coordinator's API (migration start/status/watch/list/cancel). */
  api: (verb: ApiVerb) => `${API_ROOT}.api.${verb}`,
  eventsAll: `${API_ROOT}.events.>`,
} as const;

/** Verbs a node agent answers. */
export const NODE_VERBS = ['ping', 'info', 'pod.run', 'pod.delete', 'pod.list', 'pod.logs'] as const;
export type NodeVerb = (typeof NODE_VERBS)[number];

/** Verbs of the coordinator's API. */
export const API_VERBS = ['migrate', 'status', 'watch', 'list', 'cancel', 'estimate', 'check', 'nodes'] as const;
export type ApiVerb = (typeof API_VERBS)[number];

/** JetStream stream holding every event (audit trail and replay for watchers). */
export const Streams = {
  events: { name: 'PODMOTION_EVENTS', subjects: [Subjects.eventsAll] },
} as const;
export type StreamName = (typeof Streams)[keyof typeof Streams]['name'];

/** KV buckets: migration state (the coordinator's memory across restarts) and node registrations. */
export const Buckets = {
  migrations: 'podmotion_migrations',
  nodes: 'podmotion_nodes',
} as const;
export type BucketName = (typeof Buckets)[keyof typeof Buckets];

/** Node registrations expire when heartbeats stop: a dead agent drops out of the registry by itself. */
export const NODE_REGISTRATION_TTL_MS = 15_000;
export const HEARTBEAT_INTERVAL_MS = 2_000;

export const Headers = {
  /** Marks a reply as an error: the body is then a wire error ({code, message, retryable}). */
  error: 'Podmotion-Error',
} as const;
export type HeaderName = (typeof Headers)[keyof typeof Headers];
