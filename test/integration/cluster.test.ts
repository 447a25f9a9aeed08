/**
 * A real 3-node local cluster: namespaces, VXLAN overlay, embedded nats-server, agent processes.
 * Brought up and down through the CLI, with traffic across the overlay and nothing left behind.
 */
import test from 'ava';
import path from 'node:path';
import { inNetns } from '../../node-runtime/exec.js';
import { readClusterRecord } from '../../node-runtime/records.js';
import { podNetns } from '../../node-runtime/constants.js';
import { PYTHON, WORKLOADS, cli, cliJson, snapshot, stillAlive, withFlags, type HostSnapshot } from './helpers.js';

const CLUSTER = 'itcluster';
let before: HostSnapshot;
let natsStore = '';

test.before(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  before = await snapshot(CLUSTER);
});

test.after.always(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
});

async function counterCheck(netns: string, ip: string, lines: number): Promise<{ ok: boolean }> {
  const r = await inNetns(netns, PYTHON, [path.join(WORKLOADS, 'counter_check.py'), ip, '7000', String(lines)]);
  return JSON.parse(r.stdout) as { ok: boolean };
}

test.serial('cluster up brings 3 nodes whose agents register with their capabilities', async (t) => {
  const up = await cliJson(['cluster', 'up', '--nodes', '3', '--cluster', CLUSTER]);
  t.deepEqual(up.nodes, ['node-1', 'node-2', 'node-3']);
  t.regex(up.natsUrl, /^nats:\/\/127\.0\.0\.1:\d+$/);
  natsStore = (await readClusterRecord(CLUSTER))?.nats?.storeDir ?? '';
  t.true(natsStore.length > 0);
  const status = await cliJson(['cluster', 'status', '--cluster', CLUSTER]);
  t.is(status.nodes.length, 3);
  for (const n of status.nodes) {
    t.is(n.status, 'Ready', `${n.node} should be Ready`);
    t.regex(n.criu, /^\d+\.\d+/, `${n.node} should report a working CRIU`);
  }
  const after = await snapshot(CLUSTER);
  t.deepEqual(after.netns, [`pm-${CLUSTER}-client`, `pm-${CLUSTER}-node-1`, `pm-${CLUSTER}-node-2`, `pm-${CLUSTER}-node-3`, `pm-${CLUSTER}-underlay`]);
  t.deepEqual(after.hostLinks, before.hostLinks, 'the host namespace gets no links');
});

test.serial('a second cluster up of the same name is refused with one line', async (t) => {
  const r = await cli(['cluster', 'up', '--cluster', CLUSTER]);
  t.is(r.code, 1);
  t.regex(r.stderr, /^podmotion: cluster itcluster is already up; run: podmotion cluster down --cluster itcluster\n$/);
});

test.serial('pods run with stable IP and MAC, and reach each other over the overlay', async (t) => {
  const counter = await cliJson(['pod', 'run', 'counter', '--node', 'node-1', '--port', '7000', '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'counter_server.py'), '7000']);
  t.is(counter.node, 'node-1');
  t.regex(counter.ip, /^10\.244\.1\.\d+$/);
  t.is(counter.mac, '0a:58:' + counter.ip.split('.').map((o: string) => Number(o).toString(16).padStart(2, '0')).join(':'));
  const peer = await cliJson(['pod', 'run', 'peer', '--node', 'node-3', '--cluster', CLUSTER, '--', 'sleep', 'infinity']);
  t.regex(peer.ip, /^10\.244\.3\.\d+$/);

  const rec = (await readClusterRecord(CLUSTER))!;
  t.true((await counterCheck(rec.plan.client.netns, counter.ip, 20)).ok, 'client namespace → pod on node-1');
  t.true((await counterCheck(podNetns(CLUSTER, 'node-3', 'peer'), counter.ip, 20)).ok, 'pod on node-3 → pod on node-1');

  const list = await cliJson(['pod', 'list', '--cluster', CLUSTER]);
  t.deepEqual(list.pods.map((p: { name: string; node: string; running: boolean }) => [p.name, p.node, p.running]),
    [['counter', 'node-1', true], ['peer', 'node-3', true]]);
  const logs = await cliJson(['pod', 'logs', 'counter', '--cluster', CLUSTER]);
  t.true(logs.lines.includes('counter server listening on :7000'));
  t.true(logs.lines.some((l: string) => l.startsWith('connection from 10.244.0.0:')), 'the client connected from the overlay');
});

test.serial('the pod is its own pid, uts and net namespace', async (t) => {
  const rec = (await readClusterRecord(CLUSTER))!;
  const ns = podNetns(CLUSTER, 'node-3', 'peer');
  const list = await cliJson(['pod', 'list', '--cluster', CLUSTER]);
  const peer = list.pods.find((p: { name: string }) => p.name === 'peer');
  const nsOf = async (pid: number | string, kind: string) => (await inNetns(rec.plan.client.netns, 'readlink', [`/proc/${pid}/ns/${kind}`])).stdout.trim();
  for (const kind of ['pid', 'uts', 'ipc', 'net']) {
    t.not(await nsOf(peer.initPid, kind), await nsOf(process.pid, kind), `${kind} namespace differs from the host's`);
  }
  const status = (await inNetns(ns, 'cat', [`/proc/${peer.initPid}/status`])).stdout;
  t.regex(status, /^NSpid:\s+\d+\s+1$/m, 'the pod command is pid 1 of its pid namespace');
});

test.serial('bad pod requests get one clear line and a non-zero exit', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['pod', 'run', 'x', '--node', 'node-9', '--', 'true'], /^podmotion: node node-9 not found in cluster itcluster \(nodes: node-1, node-2, node-3\)\n$/],
    [['pod', 'run', 'Bad_Name', '--node', 'node-1', '--', 'true'], /^podmotion: pod name "Bad_Name" must be lowercase/],
    [['pod', 'run', 'counter', '--node', 'node-2', '--', 'true'], /^podmotion: pod counter already exists\n$/],
    [['pod', 'delete', 'nope'], /^podmotion: pod nope not found in cluster itcluster/],
    [['pod', 'run', 'x', '--node', 'node-1'], /^podmotion: pod run needs a command after --/],
    [['pod', 'run', 'dies', '--node', 'node-1', '--port', '7001', '--', 'false'], /^podmotion: pod dies (did not start|is not listening on port 7001)/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(withFlags(args, '--cluster', CLUSTER));
    t.not(r.code, 0, args.join(' '));
    t.regex(r.stderr, re, args.join(' '));
    t.is(r.stderr.trim().split('\n').length, 1, 'exactly one line');
  }
  const list = await cliJson(['pod', 'list', '--cluster', CLUSTER]);
  t.deepEqual(list.pods.map((p: { name: string }) => p.name), ['counter', 'peer'], 'failed runs leave no pod behind');
  t.false((await snapshot(CLUSTER)).netns.some((n) => n.endsWith('-pod-dies')), 'failed run left no namespace');
});

test.serial('pod delete removes the pod and its namespace', async (t) => {
  await cliJson(['pod', 'delete', 'peer', '--cluster', CLUSTER]);
  const snap = await snapshot(CLUSTER);
  t.false(snap.netns.includes(podNetns(CLUSTER, 'node-3', 'peer')));
  t.false(snap.processes.some((p) => p.includes('sleep infinity')));
  const list = await cliJson(['pod', 'list', '--cluster', CLUSTER]);
  t.deepEqual(list.pods.map((p: { name: string }) => p.name), ['counter']);
});

test.serial('cluster down removes every namespace, link and process it made', async (t) => {
  const during = await snapshot(CLUSTER, [natsStore]);
  // 3 agents, the bus, and the counter pod (its init and the unshare holding it).
  t.true(during.processes.length >= 6, `agents, bus and pod processes are running: ${during.processes.join('; ')}`);
  const down = await cliJson(['cluster', 'down', '--cluster', CLUSTER]);
  t.true(down.clusters[0].hadRecord);
  t.deepEqual(await stillAlive(during.processes), [], 'every process the cluster ran is gone');
  const after = await snapshot(CLUSTER, [natsStore]);
  t.deepEqual(after, { ...before, processes: [] });
  t.is(await readClusterRecord(CLUSTER), undefined);
});

test.serial('cluster down after a crash cleans up from what is on disk', async (t) => {
  await cliJson(['cluster', 'up', '--nodes', '2', '--cluster', CLUSTER]);
  await cliJson(['pod', 'run', 'orphan', '--node', 'node-2', '--cluster', CLUSTER, '--', 'sleep', 'infinity']);
  const store = (await readClusterRecord(CLUSTER))?.nats?.storeDir ?? '';
  const during = await snapshot(CLUSTER, [store]);
  // A crash of the control plane: agents and the bus die at once, nothing gets to clean up; the
  // pod keeps running, as a workload does when its node agent dies.
  for (const p of during.processes) {
    if (/ agent --cluster | -c \S*podmotion-nats-/.test(p)) process.kill(Number(p.split(' ')[0]), 'SIGKILL');
  }
  const r = await cliJson(['cluster', 'down', '--cluster', CLUSTER]);
  t.is(r.clusters[0].namespacesRemoved.length, 5);
  t.deepEqual(await stillAlive(during.processes), []);
  t.deepEqual(await snapshot(CLUSTER, [store]), { ...before, processes: [] });
});
