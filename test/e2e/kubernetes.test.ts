/**
 * Kubernetes end to end: a real kube-apiserver + etcd with PodMotion's CRDs, the operator (CR bridge and
 * webhook) in its own process on a restricted bus identity, and a 3-node local cluster. PodMigrations
 * made with kubectl and `kubectl podmotion` become migrations, their phases appear as conditions, the
 * webhook (called by the API server over TLS) refuses what cannot work, cancel and deletion roll back,
 * and a Deployment standing for the pod's owner is never touched.
 */
import test from 'ava';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { PYTHON, WORKLOADS } from '../../cli/load.js';
import { cli, cliJson } from '../integration/helpers.js';
import { PROJECT_ROOT } from '../../node-runtime/constants.js';
import { freePort, startWithCrds, type ApiServer } from '../kube/apiserver.js';
import { run } from '../../node-runtime/exec.js';
import { PORT, bringUp, podNode, tearDown, type Bed } from './helpers.js';

const CLUSTER = 'itk8s';
const KUBECTL_PODMOTION = path.join(PROJECT_ROOT, 'dist/cli/kubectl-podmotion.js');
const PHASES = ['SocketInventory', 'Validating', 'DestinationPrewarm', 'PreCopyMemory', 'ZeroWindowArm', 'FinalFreeze',
  'OverlayHandoff', 'Restore', 'DisengageHold', 'TCPVerifying', 'ServiceVerifying', 'Cutover'];

let api: ApiServer | undefined;
let bed: Bed | undefined;
let operator: ChildProcess | undefined;
let operatorLog = '';
let inspectPort = 0;
let deployment: { resourceVersion: string; generation: number } | undefined;

function plugin(args: string[], timeoutMs = 240_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [KUBECTL_PODMOTION, ...args], { env: { ...process.env, KUBECONFIG: api!.kubeconfig }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

async function getJson(args: string[]): Promise<any> {
  const r = await api!.kubectl(['get', ...args, '-o', 'json']);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const podMigration = (name: string, spec: object, annotations?: Record<string, string>) => JSON.stringify({
  apiVersion: 'podmotion.io/v1alpha1', kind: 'PodMigration', metadata: { name, namespace: 'default', ...(annotations ? { annotations } : {}) }, spec,
});

const ended = (name: string) => until(`${name} to end`, async () => {
  const o = await getJson(['pmig', name]);
  return ['Complete', 'RolledBack', 'Cancelled', 'Failed', 'Rejected', 'Validated'].includes(o.status?.phase) ? o : undefined;
}, 240_000);

test.before(async () => {
  api = await startWithCrds();
  // The pod's owner as GitOps sees it: a Deployment the bridge must never write.
  const dep = await api.kubectl(['create', 'deployment', 'counter', '--image', 'registry.invalid/counter:1', '-o', 'json']);
  if (dep.code !== 0) throw new Error(dep.stderr);
  const d = JSON.parse(dep.stdout);
  deployment = { resourceVersion: d.metadata.resourceVersion, generation: d.metadata.generation };

  bed = await bringUp(CLUSTER);
  await cliJson(['pod', 'run', 'vw', '--node', 'node-1', '--port', String(PORT + 1), '--volume', 'data', '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'volume_writer.py'), String(PORT + 1)]);

  const port = await freePort();
  inspectPort = await freePort();
  const tlsDir = await api.issueServing('127.0.0.1');
  operatorLog = path.join(api.dir, 'operator.log');
  const fd = openSync(operatorLog, 'a');
  operator = spawn(process.execPath, [path.join(PROJECT_ROOT, 'dist/cli/podmotion.js'), 'operator', '--cluster', CLUSTER, '--kubeconfig', api.kubeconfig,
    '--tls-dir', tlsDir, '--webhook-port', String(port), '--webhook-host', '127.0.0.1', '--inspect-port', String(inspectPort)],
  { stdio: ['ignore', fd, fd], env: { ...process.env, PODMOTION_TEST_HOOKS: '1', NATS_URL: '', PODMOTION_NKEY: '' } });
  const ca = (await readFile(api.caFile)).toString('base64');
  const hook = await api.kubectl(['apply', '-f', '-'], JSON.stringify({
    apiVersion: 'admissionregistration.k8s.io/v1', kind: 'ValidatingWebhookConfiguration', metadata: { name: 'podmotion-test' },
    webhooks: [{
      name: 'validate.podmigrations.podmotion.io', admissionReviewVersions: ['v1'], sideEffects: 'None', failurePolicy: 'Fail', timeoutSeconds: 10,
      clientConfig: { url: `https://127.0.0.1:${port}/validate-podmigration`, caBundle: ca },
      rules: [{ apiGroups: ['podmotion.io'], apiVersions: ['v1alpha1'], resources: ['podmigrations'], operations: ['CREATE', 'UPDATE'] }],
    }],
  }));
  if (hook.code !== 0) throw new Error(hook.stderr);
  await until('the webhook to serve', async () => {
    const r = await run('curl', ['-sf', '--cacert', api!.caFile, `https://127.0.0.1:${port}/healthz`], { timeoutMs: 5000 });
    return r.stdout === 'ok' ? true : undefined;
  }, 60_000);
  await until('the operator to publish node profiles', async () => ((await getJson(['nmp'])).items.length === 3 ? true : undefined), 60_000);
});

test.after.always(async () => {
  operator?.kill('SIGTERM');
  await tearDown(bed, CLUSTER);
  await api?.stop();
});

test.serial('each node agent shows up as a NodeMigrationProfile', async (t) => {
  const { items } = await getJson(['nmp']);
  t.deepEqual(items.map((p: any) => p.metadata.name).sort(), ['node-1', 'node-2', 'node-3']);
  for (const p of items) {
    t.truthy(p.status.kernel);
    t.true(p.status.criuOk);
    t.regex(p.status.criuVersion, /^\d+\.\d+/);
    t.is(p.status.conditions.find((c: any) => c.type === 'Ready')?.status, 'True');
    t.is(typeof p.status.features, 'object');
  }
});

test.serial('the webhook refuses unknown pods and nodes, impossible destinations and other namespaces, in words', async (t) => {
  const denied = /admission webhook "validate.podmigrations.podmotion.io" denied the request: /;
  const cases: Array<[string, object, RegExp]> = [
    ['nopod', { pod: 'nope', destination: { node: 'node-2' } }, /pod nope not found/],
    ['nonode', { pod: 'counter', destination: { node: 'node-9' } }, /node node-9 not found \(nodes: node-1, node-2, node-3\)/],
    ['samenode', { pod: 'counter', destination: { node: 'node-1' } }, /pod counter already runs on node-1/],
    ['noselector', { pod: 'counter', destination: { nodeSelector: { zone: 'mars' } } }, /no ready node other than node-1 matches destination.nodeSelector \{"zone":"mars"\}/],
  ];
  for (const [name, spec, re] of cases) {
    const r = await api!.kubectl(['create', '-f', '-'], podMigration(name, spec));
    t.not(r.code, 0, `${name} was admitted`);
    t.regex(r.stderr, denied, name);
    t.regex(r.stderr, re, name);
  }
  await api!.kubectl(['create', 'namespace', 'elsewhere']);
  const ns = await api!.kubectl(['create', '-n', 'elsewhere', '-f', '-'], podMigration('x', { pod: 'counter' }).replace('"namespace":"default"', '"namespace":"elsewhere"'));
  t.regex(ns.stderr, /pod counter not found in namespace elsewhere: this PodMotion cluster's pods are in namespace default/);
  t.is((await getJson(['pmig'])).items.length, 0, 'nothing refused was stored');
});

test.serial('kubectl podmotion migrate: phases stream, the pod moves with its connections, conditions land in the API server', async (t) => {
  const r = await plugin(['migrate', 'counter', '--to-node', 'node-2', '--name', 'counter-1']);
  t.is(r.code, 0, r.stderr + r.stdout);
  t.regex(r.stdout, /^podmigration.podmotion.io\/counter-1 created$/m);
  for (const p of ['SocketInventory', 'FinalFreeze', 'TCPVerifying', 'Cutover']) t.regex(r.stdout, new RegExp(`^✓ ${p}\\s`, 'm'));
  t.regex(r.stdout, /✓ Migration complete · Pod running on: node-2 · freeze [\d.]+ ms · 8\/8 connections kept, seq_delta=0, 0 RST/);
  t.is(await podNode(CLUSTER), 'node-2');
  t.deepEqual((await bed!.load.mark()).errors, []);

  const o = await getJson(['pmig', 'counter-1']);
  t.is(o.status.phase, 'Complete');
  t.is(o.status.observedGeneration, o.metadata.generation);
  t.true(o.status.freezeWindowMs > 0);
  t.deepEqual(o.status.connections, { total: 8, preserved: 8, seqDeltaMax: 0, rst: 0 });
  for (const p of PHASES) {
    const c = o.status.conditions.find((x: any) => x.type === p);
    t.is(c?.status, 'True', `condition ${p}`);
    t.regex(c?.lastTransitionTime ?? '', /^\d{4}-\d\d-\d\dT/);
    t.is(c?.observedGeneration, 1);
  }
  t.deepEqual(o.metadata.finalizers, ['podmotion.io/migration']);
  // The checkpoint images are recorded, then wiped at cutover.
  const ck = await getJson(['mckpt', 'counter-1']);
  t.is(ck.status.phase, 'Deleted');
  t.true(ck.status.imageBytes > 0);
  t.is(ck.metadata.ownerReferences[0].uid, o.metadata.uid);

  const s = await plugin(['status', 'counter-1']);
  t.is(s.code, 0, s.stderr);
  t.regex(s.stdout, /^counter-1: Complete · pod counter · node-1 → node-2 · PreCopy$/m);
  t.regex(s.stdout, /^connections: 8\/8 kept · seq_delta=0 · No RST$/m);
  const d = await plugin(['describe', 'counter-1']);
  t.regex(d.stdout, /^Conditions:$/m);
  t.regex(d.stdout, /^ {2}Cutover\s+True\s+\w+\s+\d{4}-\d\d-\d\dT/m);
  const j = JSON.parse((await plugin(['status', 'counter-1', '--json'])).stdout);
  t.is(j.phase, 'Complete');
  // The operator serves the statechart inspector too: the same migration, by its bus id.
  const seen = await (await fetch(`http://127.0.0.1:${inspectPort}/api/migrations/${o.status.migrationId}`)).json() as any;
  t.is(seen.phase, 'Complete');
  t.is(seen.outcome.freezeMs, seen.results.Restore.freezeMs);
});

test.serial('a PodMigration from a manifest with a node selector moves a pod and its local volume', async (t) => {
  t.is((await api!.kubectl(['label', 'nmp', 'node-3', 'zone=b'])).code, 0);
  const r = await api!.kubectl(['apply', '-f', '-'], podMigration('vw-move', { pod: 'vw', destination: { nodeSelector: { zone: 'b' } }, strategy: 'Cold' }));
  t.is(r.code, 0, r.stderr);
  const o = await ended('vw-move');
  t.is(o.status.phase, 'Complete', o.status.message);
  t.is(o.status.destinationNode, 'node-3');
  t.is(o.status.strategy, 'Cold');
  const sm = await getJson(['smig', 'vw-move-data']);
  t.is(sm.spec.tier, 'local');
  t.is(sm.status.phase, 'CutOver');
  t.true(sm.status.bulkBytes > 0);
});

test.serial('cancel through kubectl podmotion rolls back; a second migration of a busy pod is refused', async (t) => {
  const c = await api!.kubectl(['create', '-f', '-'], podMigration('counter-2', { pod: 'counter', destination: { node: 'node-3' } }, { 'podmotion.io/test-pause-at': 'PreCopyMemory' }));
  t.is(c.code, 0, c.stderr);
  await until('counter-2 to start', async () => ((await getJson(['pmig', 'counter-2'])).status?.migrationId ? true : undefined));
  const busy = await api!.kubectl(['create', '-f', '-'], podMigration('counter-3', { pod: 'counter', destination: { node: 'node-1' } }));
  t.regex(busy.stderr, /pod counter is already migrating \(PodMigration default\/counter-2, phase \w+\)/);
  const x = await plugin(['cancel', 'counter-2']);
  t.is(x.code, 0, x.stderr);
  t.regex(x.stdout, /counter-2 cancelled — rollback initiated/);
  const o = await ended('counter-2');
  t.is(o.status.phase, 'Cancelled', o.status.message);
  t.is(o.status.conditions.find((k: any) => k.type === 'CancelRequested')?.status, 'True');
  t.is(await podNode(CLUSTER), 'node-2', 'the pod stayed where it was');
  t.deepEqual((await bed!.load.mark()).errors, []);
  const again = await plugin(['cancel', 'counter-2']);
  t.is(again.code, 1);
  t.regex(again.stderr, /counter-2 already ended: Cancelled; nothing to cancel/);
});

test.serial('deleting a running PodMigration cancels it first; the finalizer holds the object until then', async (t) => {
  t.is((await api!.kubectl(['create', '-f', '-'], podMigration('counter-4', { pod: 'counter', destination: { node: 'node-1' } }, { 'podmotion.io/test-pause-at': 'PreCopyMemory' }))).code, 0);
  const id = await until('counter-4 to start', async () => (await getJson(['pmig', 'counter-4'])).status?.migrationId as string | undefined);
  t.is((await api!.kubectl(['delete', 'pmig', 'counter-4', '--wait=false'])).code, 0);
  await until('counter-4 to be gone', async () => ((await api!.kubectl(['get', 'pmig', 'counter-4'])).code !== 0 ? true : undefined), 180_000);
  const s = await cliJson(['status', id, '--cluster', CLUSTER]);
  t.is(s.phase, 'Cancelled');
  t.is(await podNode(CLUSTER), 'node-2');
  t.deepEqual((await bed!.load.mark()).errors, []);
});

test.serial('the bridge rides out an API server restart and goes on', async (t) => {
  await api!.restart();
  const r = await plugin(['migrate', 'counter', '--to-node', 'node-1', '--name', 'counter-5']);
  t.is(r.code, 0, r.stderr + r.stdout);
  t.is(await podNode(CLUSTER), 'node-1');
  const log = await readFile(operatorLog, 'utf8');
  t.regex(log, /watch failed: retrying|watch expired \(410 Gone\)/, 'the watch was resumed after the restart');
  t.deepEqual((await bed!.load.mark()).errors, []);
});

test.serial('a MigrationPolicy supplies defaults, holds migrations over its concurrency and judges the freeze', async (t) => {
  const policy = JSON.stringify({ apiVersion: 'podmotion.io/v1alpha1', kind: 'MigrationPolicy', metadata: { name: 'one-at-a-time' },
    spec: { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'default' } }, strategy: 'Cold', concurrency: { perCluster: 1 }, freezeBudgetMs: 1 } });
  t.is((await api!.kubectl(['apply', '-f', '-'], policy)).code, 0);
  await until('the bridge to see the policy', async () => ((await getJson(['mpol'])).items.length === 1 ? true : undefined));
  t.is((await api!.kubectl(['create', '-f', '-'], podMigration('counter-6', { pod: 'counter', destination: { node: 'node-2' } }, { 'podmotion.io/test-pause-at': 'DestinationPrewarm' }))).code, 0);
  await until('counter-6 to start', async () => ((await getJson(['pmig', 'counter-6'])).status?.migrationId ? true : undefined));
  t.is((await api!.kubectl(['create', '-f', '-'], podMigration('vw-2', { pod: 'vw', destination: { node: 'node-1' } }))).code, 0);
  const waiting = await until('vw-2 to wait', async () => {
    const o = await getJson(['pmig', 'vw-2']);
    return o.status?.phase === 'Pending' ? o : undefined;
  });
  t.regex(waiting.status.message, /waiting: policy one-at-a-time allows 1 migrations at once in the cluster \(1 running\)/);
  t.is(waiting.status.conditions.find((c: any) => c.type === 'Admitted')?.reason, 'ConcurrencyLimit');
  t.is((await plugin(['cancel', 'counter-6'])).code, 0);
  const six = await ended('counter-6');
  t.is(six.status.phase, 'Cancelled');
  t.is(six.status.strategy, 'Cold', 'the policy\'s strategy applied');
  const vw = await ended('vw-2');
  t.is(vw.status.phase, 'Complete', vw.status.message);
  t.is(vw.status.policy, 'one-at-a-time');
  const budget = vw.status.conditions.find((c: any) => c.type === 'FreezeWithinBudget');
  t.is(budget?.status, 'False');
  t.regex(budget?.message ?? '', /^freeze [\d.]+ ms; policy one-at-a-time allows 1 ms$/);
  await api!.kubectl(['delete', 'mpol', 'one-at-a-time']);
});

test.serial('the pod\'s owner is never written: GitOps sees no drift', async (t) => {
  const d = await getJson(['deployment', 'counter']);
  t.is(d.metadata.resourceVersion, deployment!.resourceVersion);
  t.is(d.metadata.generation, deployment!.generation);
  const r = await cli(['pod', 'list', '--cluster', CLUSTER]);
  t.is(r.code, 0);
});
