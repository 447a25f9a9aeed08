/**
 * A list-and-watch loop over one of PodMotion's kinds, like client-go's reflector: list, then watch from
 * the list's resourceVersion with bookmarks; a watch that ends is resumed from the last version seen; a
 * 410 Gone (the version was compacted away, or the API server restarted with a newer cache) lists again;
 * an unreachable API server is retried with exponential backoff. Every object seen is kept in a cache.
 */
import { Watch } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Kind, KubeObject } from './api.js';
import { kindPath, statusCode, type Kube } from './client.js';

export type InformerEvent = 'ADDED' | 'MODIFIED' | 'DELETED';

const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 30_000;
/** A watch the API server keeps open at most this long; resumed from the last version afterwards. */
const WATCH_TIMEOUT_S = 300;

const keyOf = (o: KubeObject) => `${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;

export class Informer<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private resourceVersion = '';
  private stopped = false;
  private abort: AbortController | undefined;
  private wake: (() => void) | undefined;
  private synced = false;
  /** Counters a test or an operator can read: lists done, 410s met, watch restarts after errors. */
  readonly stats = { lists: 0, gone: 0, errors: 0 };

  constructor(
    private readonly kube: Kube,
    private readonly kind: Kind,
    private readonly onEvent: (type: InformerEvent, obj: T) => void,
    private readonly log: Logger,
  ) {}

  list(): T[] {
    return [...this.cache.values()];
  }

  get(name: string, namespace?: string): T | undefined {
    return this.cache.get(`${namespace ?? ''}/${name}`);
  }

  hasSynced(): boolean {
    return this.synced;
  }

  /** Starts the loop; resolves once the first list is in the cache. */
  async start(): Promise<void> {
    let firstList: () => void = () => {};
    const listed = new Promise<void>((r) => (firstList = r));
    void this.loop(firstList);
    await listed;
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
    this.wake?.();
  }

  private async loop(firstList: () => void): Promise<void> {
    let backoff = BACKOFF_MIN_MS;
    while (!this.stopped) {
      try {
        if (!this.resourceVersion) await this.relist();
        firstList();
        const ended = await this.watchOnce();
        backoff = BACKOFF_MIN_MS;
        if (ended === 'gone') {
          this.stats.gone++;
          this.log.info({ kind: this.kind }, 'watch expired (410 Gone): listing again');
          this.resourceVersion = '';
        }
      } catch (e) {
        if (this.stopped) break;
        this.stats.errors++;
        if (statusCode(e) === 410) {
          this.stats.gone++;
          this.resourceVersion = '';
          continue;
        }
        this.log.warn({ kind: this.kind, err: (e as Error).message, retryInMs: backoff }, 'watch failed: retrying');
        await new Promise<void>((r) => {
          this.wake = r;
          setTimeout(r, backoff).unref();
        });
        backoff = Math.min(BACKOFF_MAX_MS, backoff * 2);
      }
    }
  }

  private async relist(): Promise<void> {
    const { items, resourceVersion } = await this.kube.list<T>(this.kind);
    this.stats.lists++;
    const seen = new Set<string>();
    for (const o of items) {
      const k = keyOf(o);
      seen.add(k);
      const prev = this.cache.get(k);
      this.cache.set(k, o);
      if (!prev) this.onEvent('ADDED', o);
      else if (prev.metadata.resourceVersion !== o.metadata.resourceVersion) this.onEvent('MODIFIED', o);
    }
    // Deletions missed while the watch was down.
    for (const [k, o] of this.cache) {
      if (!seen.has(k)) {
        this.cache.delete(k);
        this.onEvent('DELETED', o);
      }
    }
    this.resourceVersion = resourceVersion;
    this.synced = true;
  }

  /** One watch, until the server ends it ('ended'), it says 410 ('gone'), or it fails (throws). */
  private watchOnce(): Promise<'ended' | 'gone'> {
    return new Promise((resolve, reject) => {
      let gone = false;
      const w = new Watch(this.kube.kc);
      void w.watch(kindPath(this.kind), { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: WATCH_TIMEOUT_S },
        (type: string, obj: T & { code?: number; metadata: { resourceVersion?: string } }) => {
          if (type === 'ERROR') {
            if ((obj as { code?: number }).code === 410) gone = true;
            return;
          }
          const rv = obj.metadata?.resourceVersion;
          if (rv) this.resourceVersion = rv;
          if (type === 'BOOKMARK') return;
          const k = keyOf(obj);
          if (type === 'DELETED') this.cache.delete(k);
          else this.cache.set(k, obj);
          this.onEvent(type as InformerEvent, obj);
        },
        (err: unknown) => {
          if (gone || statusCode(err) === 410) resolve('gone');
          else if (err && !(err as Error).message?.includes('aborted')) reject(err as Error);
          else resolve('ended');
        }).then((ac) => {
        this.abort = ac;
        if (this.stopped) ac.abort();
      }, reject);
    });
  }
}
