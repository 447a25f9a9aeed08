/**
 * The Helm chart against a real kube-apiserver: it renders, the API server accepts every object it makes
 * (server-side dry run, then for real), and its service accounts can do what PodMotion needs and no more
 * (`kubectl auth can-i` as each of them). deploy/install.yaml is what the chart renders now, and the krew
 * manifest names the plugin's binary for each platform.
 */
import test from 'ava';
import path from 'node:path';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { loadAllYaml } from '@kubernetes/client-node';
import { run } from '../../node-runtime/exec.js';
import { CHART_DIR, ROOT, startWithCrds, type ApiServer } from '../kube/apiserver.js';

const NS = 'podmotion-system';
let api: ApiServer | undefined;
let rendered = '';

async function helm(args: string[]): Promise<string> {
  return (await run(path.join(api!.bin, 'helm'), args, { timeoutMs: 120_000 })).stdout;
}

test.before(async () => {
  api = await startWithCrds();
  await api.kubectl(['create', 'namespace', NS]);
});
test.after.always(async () => {
  await api?.stop();
});

test.serial('the chart lints and renders, with its own certificates or with cert-manager', async (t) => {
  t.regex(await helm(['lint', CHART_DIR]), /1 chart\(s\) linted, 0 chart\(s\) failed/);
  rendered = await helm(['template', 'podmotion', CHART_DIR, '--namespace', NS]);
  const kinds = loadAllYaml(rendered).map((o: { kind: string; metadata: { name: string } }) => `${o.kind}/${o.metadata.name}`);
  for (const k of ['Deployment/podmotion-operator', 'DaemonSet/podmotion-agent', 'StatefulSet/podmotion-nats', 'ServiceAccount/podmotion-operator',
    'ServiceAccount/podmotion-agent', 'ClusterRole/podmotion-operator', 'ClusterRoleBinding/podmotion-operator', 'Service/podmotion-webhook',
    'ValidatingWebhookConfiguration/podmotion-podmigration-validation', 'Secret/podmotion-webhook-tls']) {
    t.true(kinds.includes(k), `${k} rendered`);
  }
  const cm = await helm(['template', 'podmotion', CHART_DIR, '--namespace', NS, '--set', 'webhook.certManager.enabled=true']);
  t.regex(cm, /kind: Certificate/);
  t.regex(cm, /cert-manager.io\/inject-ca-from: podmotion-system\/podmotion-webhook-tls/);
});

test.serial('the API server accepts every object the chart makes (server-side dry run, then applied)', async (t) => {
  const file = path.join(await mkdtemp(path.join(tmpdir(), 'podmotion-chart-')), 'chart.yaml');
  await writeFile(file, rendered);
  const dry = await api!.kubectl(['apply', '--dry-run=server', '-f', file]);
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, /daemonset.apps\/podmotion-agent created \(server dry run\)/);
  const real = await api!.kubectl(['apply', '-f', file]);
  t.is(real.code, 0, real.stderr);
  // The agent gets exactly the capabilities the chart lists, and runs unprivileged otherwise.
  const ds = JSON.parse((await api!.kubectl(['get', 'daemonset', '-n', NS, 'podmotion-agent', '-o', 'json'])).stdout);
  const sc = ds.spec.template.spec.containers[0].securityContext;
  t.false(sc.privileged);
  t.deepEqual(sc.capabilities.drop, ['ALL']);
  t.true(sc.capabilities.add.includes('CHECKPOINT_RESTORE'));
  t.false(sc.capabilities.add.includes('SYS_MODULE'));
  t.false(ds.spec.template.spec.automountServiceAccountToken);
});

async function canI(sa: string, verb: string, resource: string, extra: string[] = []): Promise<boolean> {
  const r = await api!.kubectl(['auth', 'can-i', verb, resource, '--as', `system:serviceaccount:${NS}:${sa}`, ...extra]);
  return r.stdout.trim() === 'yes';
}

test.serial('the operator can do what the bridge and webhook need', async (t) => {
  const need: Array<[string, string, string[]?]> = [
    ['watch', 'podmigrations.podmotion.io', ['-A']], ['patch', 'podmigrations.podmotion.io', ['-n', 'default']],
    ['patch', 'podmigrations.podmotion.io', ['-n', 'default', '--subresource', 'status']],
    ['list', 'migrationpolicies.podmotion.io'], ['create', 'nodemigrationprofiles.podmotion.io'],
    ['patch', 'nodemigrationprofiles.podmotion.io', ['--subresource', 'status']],
    ['create', 'migrationcheckpoints.podmotion.io', ['-n', 'default']], ['create', 'storagemigrations.podmotion.io', ['-n', 'default']],
    ['patch', 'storagemigrations.podmotion.io', ['-n', 'default', '--subresource', 'status']],
    ['get', 'pods', ['-n', 'default']], ['get', 'namespaces'],
  ];
  for (const [verb, res, extra] of need) t.true(await canI('podmotion-operator', verb, res, extra), `operator can ${verb} ${res} ${extra?.join(' ') ?? ''}`);
});

test.serial('and no more: no owners, no secrets, no pods written, nothing for the agent and NATS', async (t) => {
  const denied: Array<[string, string, string, string[]?]> = [
    ['podmotion-operator', 'update', 'deployments.apps', ['-n', 'default']], ['podmotion-operator', 'patch', 'statefulsets.apps', ['-n', 'default']],
    ['podmotion-operator', 'patch', 'replicasets.apps', ['-n', 'default']], ['podmotion-operator', 'get', 'secrets', ['-n', NS]],
    ['podmotion-operator', 'update', 'pods', ['-n', 'default']], ['podmotion-operator', 'delete', 'pods', ['-n', 'default']],
    ['podmotion-operator', 'create', 'podmigrations.podmotion.io', ['-n', 'default']], ['podmotion-operator', 'delete', 'podmigrations.podmotion.io', ['-n', 'default']],
    ['podmotion-operator', 'create', 'migrationpolicies.podmotion.io'], ['podmotion-operator', 'list', 'pods', ['-A']],
    ['podmotion-operator', '*', '*'],
    ['podmotion-agent', 'get', 'pods', ['-n', 'default']], ['podmotion-agent', 'list', 'podmigrations.podmotion.io', ['-A']],
    ['podmotion-agent', 'get', 'secrets', ['-n', NS]], ['podmotion-agent', 'get', 'nodes'],
    ['podmotion-nats', 'get', 'secrets', ['-n', NS]], ['podmotion-nats', 'list', 'podmigrations.podmotion.io', ['-A']],
  ];
  for (const [sa, verb, res, extra] of denied) t.false(await canI(sa, verb, res, extra), `${sa} must not ${verb} ${res} ${extra?.join(' ') ?? ''}`);
});

test.serial('deploy/install.yaml is what the chart renders now', async (t) => {
  const r = await run('bash', [path.join(ROOT, 'scripts/render-install.sh'), '--check'], { timeoutMs: 120_000 }).then(() => 0, (e: Error) => e.message);
  t.is(r, 0, String(r));
});

test.serial('the krew manifest installs kubectl-podmotion on linux amd64 and arm64', async (t) => {
  const [m] = loadAllYaml(await readFile(path.join(ROOT, 'deploy/krew/podmotion.yaml'), 'utf8')) as Array<any>;
  t.is(m.kind, 'Plugin');
  t.is(m.metadata.name, 'podmotion');
  const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8'));
  t.is(m.spec.version, `v${pkg.version}`);
  t.deepEqual(m.spec.platforms.map((p: any) => p.selector.matchLabels.arch).sort(), ['amd64', 'arm64']);
  for (const p of m.spec.platforms) {
    t.is(p.bin, 'kubectl-podmotion');
    t.regex(p.sha256, /^[0-9a-f]{64}$/);
    t.true(p.uri.endsWith(`kubectl-podmotion-v${pkg.version}.tar.gz`));
  }
});
