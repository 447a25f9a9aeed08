/**
 * Live migration on a real local cluster (real CRIU, NATS, namespaces, eBPF): a pod with 8 connections under
 * load moves and keeps every connection; bad requests get one clear line.
 */
import test from 'ava';
import { cli, cliJson, snapshot } from '../integration/helpers.js';
import { bringUp, imagesLeft, podNode, tearDown, type Bed } from './helpers.js';

const CLUSTER = 'itmig';
let bed: Bed | undefined;

test.before(async () => {
  bed = await bringUp(CLUSTER);
});
test.after.always(async () => {
  await tearDown(bed, CLUSTER);
});

test.serial('a migration under load keeps every connection: no error, no RST, seq_delta = 0, every reply in order', async (t) => {
  const r = await cli(['migrate', 'counter', '--to-node', 'node-2', '--strategy', 'Cold', '--wait', '--json', '--cluster', CLUSTER], 180_000);
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'Complete');
  t.is(s.outcome.connections, 8);
  t.is(s.outcome.preserved, 8);
  t.is(s.outcome.seqDeltaMax, 0);
  t.is(s.outcome.rst, 0);
  t.true(s.outcome.freezeMs > 0);
  for (const c of s.conditions) t.is(c.status, 'True', `${c.type}: ${c.message}`);
  const client = await bed!.load.mark();
  t.deepEqual(client.errors, []);
  t.is(client.alive, 8);
  t.true(client.requests > 0);
  t.is(await podNode(CLUSTER), 'node-2');
  const snap = await snapshot(CLUSTER);
  t.false(snap.netns.includes(`pm-${CLUSTER}-node-1-pod-counter`), 'the source copy is gone');
  t.true(snap.netns.includes(`pm-${CLUSTER}-node-2-pod-counter`));
  t.deepEqual(await imagesLeft(s.spec.id), [], 'checkpoint images are wiped');
});

test.serial('status, describe and list report the finished migration', async (t) => {
  const list = await cliJson(['list', '--cluster', CLUSTER]);
  const id = list.migrations.at(-1).id;
  const st = await cli(['status', id, '--cluster', CLUSTER]);
  t.regex(st.stdout, /^Phase: Complete · Pod: counter · node-1 → node-2 · Freeze window: \d+ ms\nTCP preserved: 8\/8 connections · seq_delta=0 · 0 RST\n$/);
  const d = await cli(['describe', id, '--cluster', CLUSTER]);
  for (const phase of ['SocketInventory', 'FinalFreeze', 'TCPVerifying', 'Cutover']) t.regex(d.stdout, new RegExp(`\\s${phase}\\s+True\\s`));
});

test.serial('bad requests get one line and a non-zero exit', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['migrate', 'nosuchpod'], /^podmotion: pod nosuchpod not found/],
    [['migrate', 'counter', '--to-node', 'node-9'], /^podmotion: node node-9 not found \(nodes: node-1, node-2, node-3\)/],
    [['migrate', 'counter', '--to-node', 'node-2'], /^podmotion: pod counter already runs on node-2/],
    [['migrate', 'counter', '--strategy', 'Warp'], /^podmotion: --strategy must be one of PreCopy, PostCopy, Cold/],
    [['status', 'no-such-migration'], /^podmotion: migration no-such-migration not found/],
    [['cancel', 'no-such-migration'], /^podmotion: migration no-such-migration not found/],
  ];
  for (const [args, re] of cases) {
    const r = await cli([...args, '--cluster', CLUSTER]);
    t.not(r.code, 0, args.join(' '));
    t.regex(r.stderr, re, args.join(' '));
    t.is(r.stderr.trim().split('\n').length, 1);
  }
  t.is(await podNode(CLUSTER), 'node-2', 'nothing moved');
  t.deepEqual((await bed!.load.mark()).errors, []);
});

test.serial('a pod already migrating is refused', async (t) => {
  const first = cli(['migrate', 'counter', '--to-node', 'node-3', '--strategy', 'Cold', '--cluster', CLUSTER], 180_000);
  await new Promise((r) => setTimeout(r, 150));
  const second = await cli(['migrate', 'counter', '--to-node', 'node-1', '--strategy', 'Cold', '--cluster', CLUSTER]);
  t.is(second.code, 1);
  t.regex(second.stderr, /^podmotion: pod counter is already migrating \(migration counter-[0-9a-f]+, phase \w+\)\n$/);
  t.is((await first).code, 0);
  t.is(await podNode(CLUSTER), 'node-3');
  t.deepEqual((await bed!.load.mark()).errors, []);
});

test.serial('a dry run validates and changes nothing', async (t) => {
  const before = await podNode(CLUSTER);
  const r = await cli(['migrate', 'counter', '--dry-run', '--strategy', 'Cold', '--cluster', CLUSTER], 60_000);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /✓ Dry run passed: counter can move node-\d → node-\d\n$/);
  t.is(await podNode(CLUSTER), before);
  t.deepEqual((await bed!.load.mark()).errors, []);
});

test.serial('kubectl-podmotion: bus verbs pass through, Kubernetes verbs want a kubeconfig', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const { PROJECT_ROOT } = await import('../../node-runtime/constants.js');
  const path = await import('node:path');
  const exe = path.join(PROJECT_ROOT, 'dist', 'cli', 'kubectl-podmotion.js');
  const help = spawnSync(process.execPath, [exe, 'help'], { encoding: 'utf8' });
  t.is(help.status, 0);
  t.regex(help.stdout, /^ {2}migrate POD \[--to-node N/m);
  // estimate is podmotion's own, over the bus.
  const est = spawnSync(process.execPath, [exe, 'estimate', 'nopod', '--cluster', CLUSTER, '--json'], { encoding: 'utf8' });
  t.false(JSON.parse(est.stdout).migratable);
  // migrate/status/... go through the API server: without a kubeconfig, one line says so.
  const env = { ...process.env, KUBECONFIG: '/nonexistent/kubeconfig', HOME: '/nonexistent' };
  const list = spawnSync(process.execPath, [exe, 'list'], { encoding: 'utf8', env });
  t.is(list.status, 1);
  t.is(list.stderr, 'podmotion: no kubeconfig: /nonexistent/kubeconfig does not exist (set --kubeconfig or KUBECONFIG)\n');
  const { KUBECONFIG: _k, ...noKubeconfig } = env;
  const none = spawnSync(process.execPath, [exe, 'status', 'x'], { encoding: 'utf8', env: { ...noKubeconfig, KUBERNETES_SERVICE_HOST: '' } });
  t.is(none.stderr, 'podmotion: no kubeconfig: set --kubeconfig or KUBECONFIG, or create ~/.kube/config\n');
});

test.serial('the coordinator is discoverable as a NATS micro service with its eight endpoints', async (t) => {
  const { connectBus } = await import('../../bus/connection.js');
  const { adminBus } = await import('../../node-runtime/local-cluster.js');
  const { readClusterRecord } = await import('../../node-runtime/records.js');
  const nc = await connectBus(adminBus((await readClusterRecord(CLUSTER))!), 'itmig-srv');
  try {
    const info = JSON.parse(new TextDecoder().decode((await nc.request('$SRV.INFO.podmotion', new Uint8Array(), { timeout: 3000 })).data));
    t.is(info.type, 'io.nats.micro.v1.info_response');
    t.is(info.name, 'podmotion');
    t.deepEqual(info.endpoints.map((e: { subject: string }) => e.subject).sort(),
      ['podmotion.v1.api.cancel', 'podmotion.v1.api.check', 'podmotion.v1.api.estimate', 'podmotion.v1.api.list', 'podmotion.v1.api.migrate', 'podmotion.v1.api.nodes',
        'podmotion.v1.api.status', 'podmotion.v1.api.watch']);
    const stats = JSON.parse(new TextDecoder().decode((await nc.request('$SRV.STATS.podmotion', new Uint8Array(), { timeout: 3000 })).data));
    const migrate = stats.endpoints.find((e: { name: string }) => e.name === 'migrate');
    t.true(migrate.num_requests >= 3, 'the migrations of earlier tests were counted');
    t.true(migrate.num_errors >= 1, 'and the refused ones');
  } finally {
    await nc.close();
  }
});

test.serial('migrate --json without --wait answers at once with the accepted migration', async (t) => {
  const from = await podNode(CLUSTER);
  const to = from === 'node-1' ? 'node-2' : 'node-1';
  const r = await cli(['migrate', 'counter', '--to-node', to, '--strategy', 'Cold', '--json', '--cluster', CLUSTER]);
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'Pending');
  t.regex(s.spec.id, /^counter-[0-9a-f]+$/);
  for (let i = 0; i < 200; i++) {
    const st = await cliJson(['status', s.spec.id, '--cluster', CLUSTER]);
    if (st.phase === 'Complete') break;
    await new Promise((res) => setTimeout(res, 50));
  }
  t.is(await podNode(CLUSTER), to);
  t.deepEqual((await bed!.load.mark()).errors, []);
});

test.serial('names and cluster names are checked before anything runs', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['migrate', 'Bad_Pod', '--cluster', CLUSTER], /^podmotion: pod name "Bad_Pod" must be lowercase letters/],
    [['migrate', 'counter', '--to-node', 'NODE/2', '--cluster', CLUSTER], /^podmotion: node name "NODE\/2" must be/],
    [['cluster', 'down', '--cluster', '../../..'], /^podmotion: cluster name "..\/..\/.." must be 1-12 lowercase letters/],
    [['status', 'x', '--cluster', ''], /^podmotion: cluster name "" must be/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(args);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, re);
  }
});

test.serial('a dual-stack server (IPv6 socket, IPv4 clients) keeps its connections too', async (t) => {
  const { startLoad, PYTHON, WORKLOADS } = await import('../../cli/load.js');
  const { readClusterRecord } = await import('../../node-runtime/records.js');
  const path = await import('node:path');
  const pod = await cliJson(['pod', 'run', 'dual', '--node', 'node-1', '--port', '7001', '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'counter_server.py'), '7001', 'dual']);
  const load = await startLoad((await readClusterRecord(CLUSTER))!.plan.client.netns, pod.ip, 7001, 4);
  try {
    const r = await cli(['migrate', 'dual', '--to-node', 'node-3', '--strategy', 'Cold', '--wait', '--json', '--cluster', CLUSTER], 180_000);
    t.is(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    t.is(s.phase, 'Complete', JSON.stringify(s.error));
    t.is(s.outcome.connections, 4);
    t.is(s.outcome.preserved, 4);
    t.is(s.outcome.seqDeltaMax, 0);
    const client = await load.stop();
    t.deepEqual(client.errors, []);
    t.is(client.alive, 4);
  } finally {
    load.kill();
    await cli(['pod', 'delete', 'dual', '--cluster', CLUSTER]);
  }
});

test.serial('estimate measures the pod without touching it and predicts from completed migrations', async (t) => {
  const before = await podNode(CLUSTER);
  const e = await cliJson(['estimate', 'counter', '--strategy', 'Cold', '--cluster', CLUSTER]);
  t.true(e.migratable, e.reasons.join('; '));
  t.is(e.sourceNode, before);
  t.true(e.memoryBytes > 1 << 20, `memory ${e.memoryBytes}`);
  t.true(e.dirtyBytesPerSec >= 0);
  t.is(e.connections, 8);
  t.true(e.predictedFreezeMs > 0, e.predictionBasis);
  t.regex(e.predictionBasis, /completed migrations/);
  t.deepEqual((await bed!.load.mark()).errors, [], 'the pod kept serving');
  t.is(await podNode(CLUSTER), before, 'nothing moved');
  const bad = await cli(['estimate', 'counter', '--to-node', 'node-9', '--cluster', CLUSTER]);
  t.is(bad.code, 1);
  t.regex(bad.stdout, /^Migratable: No \(node node-9 not found/);
});
