/**
 * The validating admission webhook for PodMigrations, served over TLS by fastify. A PodMigration is
 * refused at the API server, with a message a user can act on, when its pod or destination node is
 * unknown, a volume of the pod has no storage tier that can move it, or the pod is already migrating.
 * The coordinator answers the pod, node and volume questions (`check` on the bus); the objects the CR
 * bridge watches answer "already migrating" before the coordinator has even heard of a migration.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import type { CheckReply, CheckRequest } from '../bus/api.js';
import { oneLine } from '../bus/errors.js';
import { isTerminalPhase, type PodMigration } from './api.js';

export const WEBHOOK_PATH = '/validate-podmigration';

interface AdmissionRequest {
  uid: string;
  kind?: { group?: string; kind?: string };
  operation: 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
  namespace?: string;
  object?: PodMigration;
  oldObject?: PodMigration;
}

export interface AdmissionReview {
  apiVersion: string;
  kind: 'AdmissionReview';
  request?: AdmissionRequest;
  response?: { uid: string; allowed: boolean; status?: { code: number; reason?: string; message: string } };
}

export interface ReviewDeps {
  /** The coordinator's admission check (bus `check`). */
  check(req: CheckRequest): Promise<CheckReply>;
  /** The namespace the cluster's pods live in. */
  podNamespace: string;
  /** PodMigrations known now (the bridge's cache). */
  podMigrations(): PodMigration[];
  /** Ready nodes whose NodeMigrationProfile carries these labels. */
  nodesMatching(selector: Record<string, string>): string[];
}

/** Allowed, or the one-line reason it is not. */
export async function reviewPodMigration(req: AdmissionRequest, deps: ReviewDeps): Promise<{ allowed: true } | { allowed: false; message: string }> {
  if (req.kind?.kind !== undefined && req.kind.kind !== 'PodMigration') return { allowed: true };
  // Updates are spec.cancel (the CRD's rules keep the rest immutable) and the bridge's own status writes.
  if (req.operation !== 'CREATE') return { allowed: true };
  const pm = req.object;
  const spec = pm?.spec;
  if (!pm || !spec?.pod) return { allowed: false, message: 'a PodMigration needs spec.pod' };
  const ns = req.namespace ?? pm.metadata.namespace ?? 'default';
  if (spec.cancel) return { allowed: true };
  if (ns !== deps.podNamespace) {
    return { allowed: false, message: `pod ${spec.pod} not found in namespace ${ns}: this PodMotion cluster's pods are in namespace ${deps.podNamespace}` };
  }
  const busy = deps.podMigrations().find((o) => o.spec?.pod === spec.pod && o.metadata.namespace === ns && o.metadata.name !== pm.metadata.name
    && !o.metadata.deletionTimestamp && !isTerminalPhase(o.status?.phase));
  if (busy) {
    return { allowed: false, message: `pod ${spec.pod} is already migrating (PodMigration ${ns}/${busy.metadata.name}, phase ${busy.status?.phase ?? 'not started'}): wait for it to end or cancel it with kubectl podmotion cancel ${busy.metadata.name}` };
  }
  let check: CheckReply;
  try {
    check = await deps.check({
      pod: spec.pod,
      ...(spec.destination?.node ? { toNode: spec.destination.node } : {}),
      ...(spec.strategy ? { strategy: spec.strategy } : {}),
      ...(spec.allowPostCopy ? { allowPostCopy: true } : {}),
    });
  } catch (e) {
    return { allowed: false, message: `cannot check pod ${spec.pod}: PodMotion's coordinator did not answer (${oneLine(e)}); try again when it runs` };
  }
  if (!check.allowed) return { allowed: false, message: check.reasons.join('; ') };
  if (spec.destination?.nodeSelector) {
    const nodes = deps.nodesMatching(spec.destination.nodeSelector).filter((n) => n !== check.sourceNode);
    if (nodes.length === 0) {
      return { allowed: false, message: `no ready node other than ${check.sourceNode ?? 'the source'} matches destination.nodeSelector ${JSON.stringify(spec.destination.nodeSelector)} (label NodeMigrationProfiles to select nodes)` };
    }
  }
  return { allowed: true };
}

export interface WebhookServer {
  url: string;
  close(): Promise<void>;
}

/** Serves the webhook on `port` with the certificate in tlsDir (tls.crt, tls.key); GET /healthz for probes. */
export async function startWebhook(o: { port: number; host?: string; tlsDir: string; deps: ReviewDeps; log?: FastifyInstance['log'] }): Promise<WebhookServer> {
  const [cert, key] = await Promise.all([readFile(path.join(o.tlsDir, 'tls.crt')), readFile(path.join(o.tlsDir, 'tls.key'))]);
  const app = Fastify({ https: { cert, key, minVersion: 'TLSv1.2' }, logger: false, bodyLimit: 4 << 20 });
  app.get('/healthz', async () => 'ok');
  app.post(WEBHOOK_PATH, async (request, reply) => {
    const review = request.body as AdmissionReview;
    const req = review?.request;
    if (!req?.uid) return reply.code(400).send({ error: 'expected an AdmissionReview with a request' });
    const verdict = await reviewPodMigration(req, o.deps);
    const response: AdmissionReview['response'] = verdict.allowed
      ? { uid: req.uid, allowed: true }
      : { uid: req.uid, allowed: false, status: { code: 422, reason: 'Invalid', message: verdict.message } };
    return { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response };
  });
  const address = await app.listen({ port: o.port, host: o.host ?? '0.0.0.0' });
  return { url: address, close: () => app.close() };
}
