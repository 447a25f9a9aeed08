/**
 * `podmotion operator`: the Kubernetes side of PodMotion in one process, the CR bridge (PodMigrations to
 * migrations on the bus and back) and the validating webhook. Started by the chart's operator Deployment,
 * or by hand against any API server for a local cluster.
 */
import { pino } from 'pino';
import { apiCodecs as c } from '../actors/coordinator/codecs.js';
import { busFromEnv, connectBus } from '../bus/connection.js';
import { request } from '../bus/rpc.js';
import { Subjects } from '../bus/subjects.js';
import { CrBridge } from '../k8s/bridge.js';
import { Kube, loadKubeConfig } from '../k8s/client.js';
import { startWebhook, type WebhookServer } from '../k8s/webhook.js';
import { startInspector } from '../inspector/server.js';
import { operatorBus, requireCluster } from '../node-runtime/local-cluster.js';
import { clusterName, intOption, parse } from './args.js';
import { UsageError } from './output.js';

export const OPERATOR_USAGE = `usage: podmotion operator [--kubeconfig F] [--context C] [--pod-namespace NS]
                          [--webhook-port 9443] [--webhook-host H] [--tls-dir DIR] [--no-webhook]
                          [--inspect-port P [--inspect-host H]]
  the CR bridge and the validating webhook; bus from NATS_URL/PODMOTION_NKEY, else --cluster's own bus
`;

export async function operatorCommand(argv: string[]): Promise<void> {
  const p = parse(argv, {
    kubeconfig: { type: 'string' }, context: { type: 'string' }, 'pod-namespace': { type: 'string' },
    'webhook-port': { type: 'string' }, 'webhook-host': { type: 'string' }, 'tls-dir': { type: 'string' }, 'no-webhook': { type: 'boolean' },
    'inspect-port': { type: 'string' }, 'inspect-host': { type: 'string' },
  });
  if (p.values['help']) {
    process.stdout.write(OPERATOR_USAGE);
    return;
  }
  const cluster = clusterName(p);
  const podNamespace = (p.values['pod-namespace'] as string | undefined) ?? process.env['PODMOTION_POD_NAMESPACE'] ?? 'default';
  const webhook = !p.values['no-webhook'];
  const tlsDir = (p.values['tls-dir'] as string | undefined) ?? process.env['PODMOTION_WEBHOOK_TLS_DIR'];
  if (webhook && !tlsDir) throw new UsageError('operator: the webhook needs --tls-dir DIR (tls.crt, tls.key), or --no-webhook');
  const port = intOption(p, 'webhook-port', 9443, 1, 65535);
  const kubeconfig = (p.values['kubeconfig'] as string | undefined);
  const context = (p.values['context'] as string | undefined);
  const kube = new Kube(loadKubeConfig({ ...(kubeconfig ? { kubeconfig } : {}), ...(context ? { context } : {}) }));
  const bus = busFromEnv() ?? operatorBus(await requireCluster(cluster));
  const log = pino({ base: { component: 'operator', cluster } });
  const nc = await connectBus(bus, 'podmotion-operator');
  const bridge = new CrBridge({ kube, nc, log, cluster, podNamespace, testHooks: process.env['PODMOTION_TEST_HOOKS'] === '1' });
  await bridge.start();
  let server: WebhookServer | undefined;
  if (webhook) {
    server = await startWebhook({
      port, tlsDir: tlsDir!, ...(p.values['webhook-host'] ? { host: p.values['webhook-host'] as string } : {}),
      deps: {
        check: (req) => request(nc, Subjects.api('check'), c.checkReq, c.checkReply, req, { timeoutMs: 8000 }),
        podNamespace,
        podMigrations: () => bridge.migrations.list(),
        nodesMatching: (sel) => bridge.nodesMatching(sel),
      },
    });
    log.info({ url: server.url }, 'webhook serving');
  }
  // The statechart inspector, read-only: from the cluster, cancel goes through kubectl and RBAC.
  const inspector = p.values['inspect-port'] === undefined ? undefined : await startInspector({
    nc, log, cluster, port: intOption(p, 'inspect-port', 8080, 0, 65535), host: (p.values['inspect-host'] as string | undefined) ?? '127.0.0.1',
  });
  if (inspector) log.info({ url: inspector.url }, 'inspector serving');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
    void nc.closed().then(() => resolve());
  });
  await server?.close();
  await inspector?.close();
  await bridge.stop();
  await nc.drain().catch(() => {});
}
