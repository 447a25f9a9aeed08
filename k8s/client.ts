/**
 * The Kubernetes API as PodMotion uses it: a kubeconfig (file, context, or in-cluster), PodMotion's own
 * kinds through the custom-objects API, a few core reads, and API errors turned into one-line messages.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { PodMotionError, type ErrorCode } from '../bus/errors.js';
import { ApiException, CoreV1Api, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { GROUP, KINDS, VERSION, type Kind, type KubeObject } from './api.js';

export interface KubeOptions {
  /** A kubeconfig file; else KUBECONFIG, ~/.kube/config, or the in-cluster service account. */
  kubeconfig?: string;
  context?: string;
}

export function loadKubeConfig(o: KubeOptions = {}): KubeConfig {
  const kc = new KubeConfig();
  const file = o.kubeconfig ?? process.env['KUBECONFIG']?.split(':').find(Boolean);
  if (file) {
    if (!existsSync(file)) throw new KubeError(`no kubeconfig: ${file} does not exist (set --kubeconfig or KUBECONFIG)`);
    if (o.kubeconfig) kc.loadFromFile(file);
    else kc.loadFromDefault();
  } else if (existsSync(path.join(homedir(), '.kube', 'config')) || process.env['KUBERNETES_SERVICE_HOST']) {
    kc.loadFromDefault();
  } else {
    // Without this, the client would quietly try http://localhost:8080.
    throw new KubeError('no kubeconfig: set --kubeconfig or KUBECONFIG, or create ~/.kube/config');
  }
  if (o.context) kc.setCurrentContext(o.context);
  if (!kc.getCurrentCluster()) throw new KubeError('no Kubernetes cluster in the kubeconfig (set --kubeconfig or KUBECONFIG)');
  return kc;
}

/** A Kubernetes API failure, as one line: the API server's own message where it gave one. */
export class KubeError extends PodMotionError {
  static { this.prototype.name = 'KubeError'; }
  readonly code: ErrorCode;
  constructor(message: string, readonly httpStatus?: number) {
    super(message, undefined, httpStatus === undefined || httpStatus >= 500 || httpStatus === 429);
    this.code = httpStatus === 404 ? 'NOT_FOUND' : httpStatus === 409 ? 'CONFLICT'
      : httpStatus === 400 || httpStatus === 422 ? 'INVALID_REQUEST' : httpStatus === undefined ? 'PRECONDITION' : 'INTERNAL';
  }
}

/** The HTTP status of an API failure (404, 409, 410, ...), when it has one. */
export function statusCode(e: unknown): number | undefined {
  if (e instanceof KubeError) return e.httpStatus;
  if (e instanceof ApiException) return e.code;
  const c = (e as { code?: unknown; statusCode?: unknown })?.code ?? (e as { statusCode?: unknown })?.statusCode;
  return typeof c === 'number' ? c : undefined;
}

function asKubeError(e: unknown, what: string): KubeError {
  if (e instanceof KubeError) return e;
  if (e instanceof ApiException) {
    let msg: string | undefined;
    try {
      const body = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
      msg = (body as { message?: string })?.message;
    } catch {
      msg = typeof e.body === 'string' ? e.body : undefined;
    }
    return new KubeError(`${what}: ${(msg ?? `HTTP ${e.code}`).split('\n')[0]}`, e.code);
  }
  const err = e as Error & { code?: string };
  return new KubeError(`${what}: ${(err.message ?? String(e)).split('\n')[0]}${err.code && !err.message?.includes(err.code) ? ` (${err.code})` : ''}`);
}

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export class Kube {
  readonly custom: CustomObjectsApi;
  readonly core: CoreV1Api;

  constructor(readonly kc: KubeConfig) {
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.core = kc.makeApiClient(CoreV1Api);
  }

  /** The namespace of the kubeconfig's current context, else "default". */
  defaultNamespace(): string {
    return this.kc.getContextObject(this.kc.getCurrentContext())?.namespace ?? 'default';
  }

  private async call<T>(what: string, fn: () => Promise<unknown>): Promise<T> {
    try {
      return (await fn()) as T;
    } catch (e) {
      throw asKubeError(e, what);
    }
  }

  /** The object's coordinates: its namespace (undefined for a cluster-scoped kind) and the rest. */
  private where(kind: Kind, namespace?: string): { ns: string | undefined; base: { group: string; version: string; plural: string } } {
    const k = KINDS[kind];
    if (k.namespaced && !namespace) throw new KubeError(`${kind} is namespaced: a namespace is needed`);
    return { ns: k.namespaced ? namespace : undefined, base: { group: GROUP, version: VERSION, plural: k.plural } };
  }

  async get<T extends KubeObject>(kind: Kind, name: string, namespace?: string): Promise<T> {
    const { ns, base } = this.where(kind, namespace);
    return this.call(`get ${kind} ${ns ? `${ns}/` : ''}${name}`, () =>
      ns !== undefined ? this.custom.getNamespacedCustomObject({ ...base, namespace: ns, name }) : this.custom.getClusterCustomObject({ ...base, name }));
  }

  /** Every object of a kind (in one namespace, or in all when namespace is undefined). */
  async list<T extends KubeObject>(kind: Kind, namespace?: string): Promise<{ items: T[]; resourceVersion: string }> {
    const k = KINDS[kind];
    const base = { group: GROUP, version: VERSION, plural: k.plural };
    const r = await this.call<{ items: T[]; metadata?: { resourceVersion?: string } }>(`list ${kind}`, () =>
      k.namespaced && namespace ? this.custom.listNamespacedCustomObject({ ...base, namespace }) : this.custom.listClusterCustomObject(base));
    return { items: r.items ?? [], resourceVersion: r.metadata?.resourceVersion ?? '' };
  }

  async create<T extends KubeObject>(kind: Kind, body: KubeObject, namespace?: string): Promise<T> {
    const { ns, base } = this.where(kind, namespace);
    return this.call(`create ${kind} ${body.metadata.name ?? body.metadata.generateName ?? ''}`, () =>
      ns !== undefined ? this.custom.createNamespacedCustomObject({ ...base, namespace: ns, body }) : this.custom.createClusterCustomObject({ ...base, body }));
  }

  /** A JSON merge patch of the object (spec, metadata). */
  async patch<T extends KubeObject>(kind: Kind, name: string, body: object, namespace?: string): Promise<T> {
    const { ns, base } = this.where(kind, namespace);
    return this.call(`update ${kind} ${name}`, () =>
      ns !== undefined ? this.custom.patchNamespacedCustomObject({ ...base, namespace: ns, name, body }, mergePatch) : this.custom.patchClusterCustomObject({ ...base, name, body }, mergePatch));
  }

  /** A JSON merge patch of the status subresource. */
  async patchStatus<T extends KubeObject>(kind: Kind, name: string, status: object, namespace?: string): Promise<T> {
    const { ns, base } = this.where(kind, namespace);
    const body = { status };
    return this.call(`update ${kind} ${name} status`, () =>
      ns !== undefined ? this.custom.patchNamespacedCustomObjectStatus({ ...base, namespace: ns, name, body }, mergePatch) : this.custom.patchClusterCustomObjectStatus({ ...base, name, body }, mergePatch));
  }

  /** Labels of a namespace ({} when it cannot be read: policies then match on pod labels alone). */
  async namespaceLabels(name: string): Promise<Record<string, string>> {
    try {
      return (await this.core.readNamespace({ name })).metadata?.labels ?? {};
    } catch {
      return {};
    }
  }

  /** Labels of a pod object, when the API server has one. */
  async podLabels(name: string, namespace: string): Promise<Record<string, string> | undefined> {
    try {
      return (await this.core.readNamespacedPod({ name, namespace })).metadata?.labels ?? {};
    } catch (e) {
      if (statusCode(e) === 404) return undefined;
      throw asKubeError(e, `get pod ${namespace}/${name}`);
    }
  }
}

/** The API path of a kind, for watches. */
export function kindPath(kind: Kind, namespace?: string): string {
  const k = KINDS[kind];
  return `/apis/${GROUP}/${VERSION}${k.namespaced && namespace ? `/namespaces/${namespace}` : ''}/${k.plural}`;
}
