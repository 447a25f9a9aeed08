/**
 * What a node agent remembers about the migrations it takes part in. Only what cannot be found again on
 * disk lives here (an open image receiver, measured timestamps); cleanup works from names alone.
 */
import type { Receiver } from '../../criu-shim/transfer/index.js';
import type { VolumeReceiver } from '../storage/sync.js';
import type { LazyDaemon, PageSink, PageStore } from '../../criu-shim/transfer/lazy.js';
import type { LazySession } from './checkpoint.js';
import type { ImageDecoder } from '../../node-runtime/pages.js';
import type { PreparedRestore } from '../../criu-shim/rpc/index.js';
import { PreconditionError } from '../../bus/errors.js';
import type { FreezeReply, PrepareReply, RestoreReply } from '../../bus/node-migration.js';

export interface NodeMigration {
  id: string;
  pod: string;
  prepared?: PrepareReply;
  /** The pod's address and MAC, as the source reported them. */
  address?: { ip: string; mac: string };
  receiver?: Receiver;
  /** Rollback after the destination served: the source's receiver for the images coming back. */
  reclaim?: PrepareReply;
  reclaimReceiver?: Receiver;
  /** Replies of the move back, for a repeated request. */
  reclaimFroze?: FreezeReply;
  reclaimed?: RestoreReply;
  froze?: FreezeReply;
  restored?: RestoreReply;
  /** A restore began here: from then on, processes in the pod's namespace are a copy that may have served. */
  restoreStarted?: boolean;
  /** A rollback was told no copy was restored here: a restore request arriving later must not make one. */
  fenced?: boolean;
  /** PostCopy on the source: the lazy dump serving the pod's memory until the destination has all of it. */
  lazy?: LazySession;
  /** PostCopy on the destination: the page channel, and the lazy-pages daemon once the restore began. */
  pageSink?: PageSink;
  lazyDaemon?: LazyDaemon;
  /** Either daemon, started once the images are in (undefined: the restore is not lazy). */
  lazyDaemonStart?: Promise<LazyDaemon | undefined>;
  /** Pages images rebuilt from the pre-copy caches, each as soon as it is in; settled once all are. */
  decoding?: Promise<{ fromCache: number; ms: number; lastMs?: number }>;
  /** Destination: CRIU started at prepare, waiting for the restore request. */
  preparedRestore?: PreparedRestore;
  /** Pre-copy on the destination: the rebuilder holding the rounds' caches, and the last round it indexed. */
  decoder?: ImageDecoder;
  decoderRound?: number;
  /** Pre-copy with tracked writes, on the destination: the store of the pages that arrived, and its last round. */
  pageStore?: PageStore;
  storeRound?: number;
  /** Pre-copy rounds' receivers on the destination, by round number. */
  rounds: Map<number, Receiver>;
  /** The destination's receivers of the pod's `local` volumes, by volume name. */
  volumeReceivers: Map<string, VolumeReceiver>;
  /** Serializes this migration's operations on this node: a rollback waits for a running dump. */
  tail: Promise<unknown>;
}

const table = new Map<string, NodeMigration>();
/** Bound on migrations remembered at once; finished ones are dropped at cutover or rollback. */
const MAX_TRACKED = 10_000;

export function migrationState(id: string, pod: string): NodeMigration {
  let m = table.get(id);
  if (!m) {
    if (table.size >= MAX_TRACKED) throw new Error(`more than ${MAX_TRACKED} migrations in flight on this node`);
    m = { id, pod, rounds: new Map(), volumeReceivers: new Map(), tail: Promise.resolve() };
    table.set(id, m);
  }
  return m;
}

/** This node's state of a migration, if it has any (never makes one). */
export function peekMigration(id: string): NodeMigration | undefined {
  return table.get(id);
}

/**
 * Migrations that ended on this node (rolled back or cut over), oldest first, bounded: a forward step that
 * arrives after the end (delayed, or queued behind the rollback) must not act — a late freeze would stop a
 * pod that was just resumed, a late restore would make a second copy.
 */
const ended = new Set<string>();
const MAX_ENDED = 10_000;

export function forgetMigration(id: string): void {
  table.delete(id);
  ended.delete(id);
  ended.add(id);
  if (ended.size > MAX_ENDED) ended.delete(ended.values().next().value!);
}

/** Refuses a forward step of a migration that already ended here. */
export function refuseIfEnded(id: string, verb: string): void {
  if (ended.has(id)) throw new PreconditionError(`migration ${id} already ended on this node: ${verb} refused`);
}

/** Runs fn after every earlier operation of the same migration has settled. */
export function serialized<T>(m: NodeMigration, fn: () => Promise<T>): Promise<T> {
  const run = m.tail.then(fn, fn);
  m.tail = run.catch(() => {});
  return run;
}
