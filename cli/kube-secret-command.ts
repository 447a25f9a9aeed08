/**
 * `podmotion kube bus-secret [--namespace NS] [--name NAME]`: the bus identities of a Kubernetes install,
 * as a Secret manifest on stdout (pipe it to `kubectl apply -f -`). Fresh NKeys are made in memory and go
 * nowhere else: the coordinator's (unrestricted), the operator's (the coordinator's API and migration events
 * only) and the node agents' (node subjects and the node registry), plus `auth.conf`, the server's
 * authorization block with each identity's public key and permissions. No password exists anywhere.
 */
import { createUser } from '@nats-io/nkeys';
import { authorizationBlock } from '../bus/embedded.js';
import { inboxPrefixOf, type Identity, type Permissions } from '../bus/identity.js';
import { API_ROOT, Buckets } from '../bus/subjects.js';
import { OPERATOR_PERMISSIONS } from '../node-runtime/local-cluster.js';
import { parse } from './args.js';
import { UsageError } from './output.js';

const DNS_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Permissions of the chart's identities (the agents share one: a DaemonSet's pods mount the same Secret). */
export const CHART_IDENTITIES: Record<'coordinator' | 'operator' | 'agent', Permissions | undefined> = {
  coordinator: undefined,
  operator: OPERATOR_PERMISSIONS,
  agent: {
    publish: [`${API_ROOT}.node.*.>`, `${API_ROOT}.events.node.*`, `$KV.${Buckets.nodes}.*`, `$JS.API.STREAM.INFO.KV_${Buckets.nodes}`],
    subscribe: [`${API_ROOT}.node.*.>`, `${inboxPrefixOf('agent')}.>`],
    allowResponses: true,
  },
};

export function busSecretManifest(namespace: string, name: string): string {
  const ids: Identity[] = [];
  const data: Record<string, string> = {};
  for (const [id, permissions] of Object.entries(CHART_IDENTITIES)) {
    const kp = createUser();
    data[`${id}.nk`] = Buffer.from(new TextDecoder().decode(kp.getSeed()) + '\n').toString('base64');
    ids.push({ name: id, publicKey: kp.getPublicKey(), seedFile: '', ...(permissions ? { permissions } : {}) });
  }
  data['auth.conf'] = Buffer.from(authorizationBlock(ids)).toString('base64');
  return [
    '# PodMotion bus identities (NKey seeds): keep this Secret as private as the checkpoint images.',
    'apiVersion: v1', 'kind: Secret', 'type: Opaque',
    'metadata:', `  name: ${name}`, `  namespace: ${namespace}`, '  labels:', '    app.kubernetes.io/part-of: podmotion',
    'data:', ...Object.entries(data).map(([k, v]) => `  ${k}: ${v}`), '',
  ].join('\n');
}

export async function kubeToolCommand(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub !== 'bus-secret') throw new UsageError(`unknown kube command "${sub ?? ''}" (try: podmotion kube bus-secret --namespace podmotion-system)`);
  const p = parse(rest, { namespace: { type: 'string', short: 'n' }, name: { type: 'string' } });
  const namespace = (p.values['namespace'] as string | undefined) ?? 'podmotion-system';
  const name = (p.values['name'] as string | undefined) ?? 'podmotion-bus';
  for (const [flag, v] of [['namespace', namespace], ['name', name]] as const) {
    if (!DNS_NAME.test(v)) throw new UsageError(`--${flag} "${v}" is not a valid Kubernetes name`);
  }
  process.stdout.write(busSecretManifest(namespace, name));
}
