/**
 * A pod of three containers (an app on loopback, a sidecar proxy forwarding the pod's port to it, a log
 * shipper following the app's log on a shared volume) migrates under load: all three are frozen, moved and
 * restored together, the client connections and the loopback connections behind them are kept, and no
 * container's heartbeat shows a gap longer than the freeze.
 */
import test from 'ava';
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import { PYTHON, WORKLOADS, startLoad, type LoadClient } from '../../cli/load.js';
import { cli, cliJson } from '../integration/helpers.js';
import { readClusterRecord } from '../../node-runtime/records.js';
import { podVolumePath } from '../../node-runtime/constants.js';

const CLUSTER = 'itmc';
const PORT = 7000;
const APP = 7001;
const CLIENTS = Number(process.env['PODMOTION_MC_CLIENTS'] ?? 8);
/** Scheduling noise a 5 ms Python tick sees on a busy 2-core machine, on top of the freeze. */
const GAP_SLACK_MS = 100;
const W = path.join(WORKLOADS, 'pod_containers.py');
let load: LoadClient | undefined;

interface Heartbeat { role: string; beats: number; maxGapMs: number; gaps: Array<{ atMs: number; gapMs: number }>; extra: Record<string, number> }
const heartbeat = async (role: string): Promise<Heartbeat> => JSON.parse(await readFile(path.join(podVolumePath(CLUSTER, 'web', 'logs'), `${role}.hb`), 'utf8'));

test.before(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  await cliJson(['cluster', 'up', '--nodes', '2', '--cluster', CLUSTER]);
});
test.after.always(async () => {
  load?.kill();
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
});

test('three containers move together, keep their connections, and see no gap beyond the freeze', async (t) => {
  const pod = await cliJson(['pod', 'run', 'web', '--node', 'node-1', '--port', String(PORT), '--volume', 'logs', '--cluster', CLUSTER,
    '--container', `app=${PYTHON} ${W} app ${APP}`, '--container', `proxy=${PYTHON} ${W} proxy ${PORT} ${APP}`, '--container', `shipper=${PYTHON} ${W} shipper`]);
  t.deepEqual(pod.containers.map((c: { name: string }) => c.name), ['app', 'proxy', 'shipper']);
  load = await startLoad((await readClusterRecord(CLUSTER))!.plan.client.netns, pod.ip, PORT, CLIENTS);
  await load.mark();
  await new Promise((r) => setTimeout(r, 1000));
  const before = { app: await heartbeat('app'), shipper: await heartbeat('shipper') };
  const freezes: number[] = [];
  for (const to of ['node-2', 'node-1', 'node-2']) {
    const r = await cli(['migrate', 'web', '--to-node', to, '--wait', '--json', '--cluster', CLUSTER], 180_000);
    const s = JSON.parse(r.stdout);
    t.is(s.phase, 'Complete', JSON.stringify(s.error));
    const tcp = s.results.TCPVerifying;
    // The 8 client connections, and behind the proxy 8 loopback connections (both of their ends are the pod's).
    t.true(tcp.connections >= CLIENTS, `${tcp.connections} connections at the freeze`);
    t.is(tcp.preserved, tcp.connections);
    t.is(tcp.seqDeltaMax, 0);
    t.is(tcp.rst, 0);
    freezes.push(s.results.Restore.freezeMs);
    const client = await load.mark();
    t.deepEqual(client.errors, []);
    t.is(client.alive, CLIENTS);
    await new Promise((r) => setTimeout(r, 500));
  }
  const worst = Math.max(...freezes);
  for (const role of ['app', 'proxy', 'shipper']) {
    const hb = await heartbeat(role);
    t.true(hb.maxGapMs <= worst + GAP_SLACK_MS, `${role}: longest heartbeat gap ${hb.maxGapMs} ms, longest freeze ${worst} ms`);
  }
  // Each container went on working across the moves: the app served, the shipper read what it wrote.
  const after = { app: await heartbeat('app'), shipper: await heartbeat('shipper') };
  t.true(after.app.extra['served']! > before.app.extra['served']!);
  t.true(after.shipper.extra['shipped']! > before.shipper.extra['shipped']!);
  const list = await cliJson(['pod', 'list', '--cluster', CLUSTER]);
  t.is(list.pods[0].node, 'node-2');
});
