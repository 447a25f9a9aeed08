/**
 * PodMotion's five CRDs on a real kube-apiserver + etcd: they install and are served with their short
 * names, category and printer columns; good objects are accepted; bad specs are refused by the API server
 * itself with messages a user can act on.
 */
import test from 'ava';
import { startWithCrds, type ApiServer } from '../kube/apiserver.js';

let api: ApiServer | undefined;

test.before(async () => {
  api = await startWithCrds();
});
test.after.always(async () => {
  await api?.stop();
});

const pm = (name: string, spec: object) => JSON.stringify({ apiVersion: 'podmotion.io/v1alpha1', kind: 'PodMigration', metadata: { name, namespace: 'default' }, spec });

test.serial('five kinds are served, with short names and the podmotion category', async (t) => {
  const r = await api!.kubectl(['api-resources', '--api-group', 'podmotion.io', '-o', 'wide']);
  t.is(r.code, 0, r.stderr);
  for (const [plural, short, kind] of [['podmigrations', 'pmig', 'PodMigration'], ['migrationpolicies', 'mpol', 'MigrationPolicy'],
    ['nodemigrationprofiles', 'nmp', 'NodeMigrationProfile'], ['migrationcheckpoints', 'mckpt', 'MigrationCheckpoint'], ['storagemigrations', 'smig', 'StorageMigration']]) {
    t.regex(r.stdout, new RegExp(`^${plural}\\s+${short}\\s+podmotion.io/v1alpha1\\s+\\w+\\s+${kind}\\s.*podmotion`, 'm'), `${kind} row`);
  }
  const cat = await api!.kubectl(['get', 'podmotion', '-A']);
  t.is(cat.code, 0, cat.stderr);
});

test.serial('a good PodMigration is accepted and printed with its columns', async (t) => {
  const r = await api!.kubectl(['create', '-f', '-'], pm('good', { pod: 'db', destination: { node: 'node-2' }, strategy: 'PreCopy', bandwidthMbps: 500, timeouts: { FinalFreeze: 30 } }));
  t.is(r.code, 0, r.stderr);
  const g = await api!.kubectl(['get', 'pmig', 'good']);
  t.regex(g.stdout, /^NAME\s+POD\s+FROM\s+TO\s+STRATEGY\s+PHASE\s+FREEZE-MS\s+AGE/m);
  t.regex(g.stdout, /^good\s+db\s/m);
  // A default from the schema: connections are kept unless asked otherwise.
  const j = JSON.parse((await api!.kubectl(['get', 'pmig', 'good', '-o', 'json'])).stdout);
  t.is(j.spec.networkContinuity, true);
});

test.serial('bad PodMigrations are refused by the API server with readable reasons', async (t) => {
  const cases: Array<[string, object, RegExp]> = [
    ['nopod', { strategy: 'Cold' }, /spec.pod: Required value/],
    ['badname', { pod: 'Not_A_Pod' }, /spec.pod: Invalid value: "Not_A_Pod"/],
    ['badstrategy', { pod: 'db', strategy: 'Teleport' }, /spec.strategy: Unsupported value: "Teleport": supported values: "PreCopy", "PostCopy", "Cold"/],
    ['both', { pod: 'db', destination: { node: 'n1', nodeSelector: { zone: 'a' } } }, /set exactly one of spec.destination.node or spec.destination.nodeSelector/],
    ['postcopycold', { pod: 'db', strategy: 'Cold', allowPostCopy: true }, /spec.allowPostCopy applies to the PreCopy strategy only/],
    ['badbw', { pod: 'db', bandwidthMbps: 0 }, /spec.bandwidthMbps: Invalid value: 0: spec.bandwidthMbps in body should be greater than or equal to 1/],
    ['badtimeout', { pod: 'db', timeouts: { Teleport: 3 } }, /spec.timeouts.Teleport: Invalid value|unknown field "spec.timeouts.Teleport"|Forbidden|not allowed/],
  ];
  for (const [name, spec, re] of cases) {
    const r = await api!.kubectl(['create', '-f', '-'], pm(name, spec));
    t.not(r.code, 0, `${name} was accepted`);
    t.regex(r.stderr, re, name);
  }
});

test.serial('a PodMigration spec cannot change after creation, and cancel cannot be taken back', async (t) => {
  const r = await api!.kubectl(['patch', 'pmig', 'good', '--type', 'merge', '-p', '{"spec":{"pod":"other"}}']);
  t.not(r.code, 0);
  t.regex(r.stderr, /spec.pod cannot change: create a new PodMigration for another pod/);
  const d = await api!.kubectl(['patch', 'pmig', 'good', '--type', 'merge', '-p', '{"spec":{"destination":{"node":"node-3"}}}']);
  t.regex(d.stderr, /spec.destination cannot change once the migration is created/);
  t.is((await api!.kubectl(['patch', 'pmig', 'good', '--type', 'merge', '-p', '{"spec":{"cancel":true}}'])).code, 0);
  const u = await api!.kubectl(['patch', 'pmig', 'good', '--type', 'merge', '-p', '{"spec":{"cancel":false}}']);
  t.regex(u.stderr, /spec.cancel cannot be unset once it is true/);
});

test.serial('policies, profiles, checkpoints and storage records validate their specs', async (t) => {
  const obj = (kind: string, name: string, spec: object, ns = true) => JSON.stringify({ apiVersion: 'podmotion.io/v1alpha1', kind, metadata: { name, ...(ns ? { namespace: 'default' } : {}) }, spec });
  t.is((await api!.kubectl(['create', '-f', '-'], obj('MigrationPolicy', 'fast', { priority: 10, strategy: 'PostCopy', concurrency: { perNode: 1, perCluster: 3 }, freezeBudgetMs: 150,
    namespaceSelector: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['db'] }] } }, false))).stderr, '');
  const badSel = await api!.kubectl(['create', '-f', '-'], obj('MigrationPolicy', 'badsel', { podSelector: { matchExpressions: [{ key: 'app', operator: 'In' }] } }, false));
  t.regex(badSel.stderr, /In and NotIn need values; Exists and DoesNotExist take none/);
  const badConc = await api!.kubectl(['create', '-f', '-'], obj('MigrationPolicy', 'badconc', { concurrency: { perNode: 0 } }, false));
  t.regex(badConc.stderr, /spec.concurrency.perNode: Invalid value: 0/);
  t.is((await api!.kubectl(['create', '-f', '-'], obj('NodeMigrationProfile', 'node-1', { cluster: 'local' }, false))).code, 0);
  const smig = await api!.kubectl(['create', '-f', '-'], obj('StorageMigration', 's1', { migration: 'good', pod: 'db', volume: 'data', tier: 'nfs' }));
  t.regex(smig.stderr, /spec.tier: Unsupported value: "nfs": supported values: "shared", "local"/);
  t.is((await api!.kubectl(['create', '-f', '-'], obj('StorageMigration', 's2', { migration: 'good', pod: 'db', volume: 'data', tier: 'local' }))).code, 0);
  const imm = await api!.kubectl(['patch', 'smig', 's2', '--type', 'merge', '-p', '{"spec":{"tier":"shared"}}']);
  t.regex(imm.stderr, /a StorageMigration's spec is immutable/);
  const ck = await api!.kubectl(['create', '-f', '-'], obj('MigrationCheckpoint', 'c1', { migration: 'good', pod: 'db' }));
  t.regex(ck.stderr, /spec.sourceNode: Required value/);
});
