/**
 * Service-routed flows survive migration (short version of bench/service): 40 clients through a ClusterIP and
 * 10 through a NodePort on a third node reach a pod whose sidecar forwards each connection to another Service
 * with two endpoints. The pod moves away and back (the node it returns to had its flows' conntrack entries
 * once). Every flow keeps working, no packet is dropped as ctstate INVALID anywhere, no RST, seq_delta 0.
 * Then two migrations fail on purpose (before and after the destination served) and roll back, flows intact.
 */
import test from 'ava';
import { cli, cliJson } from '../integration/helpers.js';
import { startServiceScenario, type ServiceScenario } from '../../bench/service/scenario.js';

const CLUSTER = 'itsvc';
const FLOWS = { clusterIp: 40, nodePort: 10 };
let sc: ServiceScenario | undefined;

test.before(async () => {
  // The coordinator's failure hook, for the rollbacks below.
  process.env['PODMOTION_TEST_HOOKS'] = '1';
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  await cliJson(['cluster', 'up', '--nodes', '3', '--cluster', CLUSTER]);
});
test.after.always(async () => {
  sc?.stop();
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
});

test('ClusterIP and NodePort flows, and the pod\'s own Service flows, survive moving away and back', async (t) => {
  sc = await startServiceScenario(CLUSTER, FLOWS);
  const total = FLOWS.clusterIp + FLOWS.nodePort;
  for (const to of ['node-2', 'node-1']) {
    const r = await sc.migrate(to);
    t.is(r.phase, 'Complete', r.error);
    // Each client connection is a flow into the pod and, behind the proxy, one out of it to `backend`.
    t.is(r.connections, 2 * total);
    t.is(r.preserved, 2 * total);
    t.is(r.seqDeltaMax, 0);
    t.is(r.rst, 0);
    t.true(r.conntrackCarried! >= 2 * total, `${r.conntrackCarried} conntrack entries carried`);
    for (const [path, rep, after] of [['ClusterIP', r.clusterIp, r.clusterIpRequestsAfter], ['NodePort', r.nodePort, r.nodePortRequestsAfter]] as const) {
      t.deepEqual(rep.errors, [], `${path} client errors`);
      t.is(rep.alive, path === 'ClusterIP' ? FLOWS.clusterIp : FLOWS.nodePort);
      // Every connection answered again after the move (a wedged one would stall for the whole second).
      t.true(after > 0, `${path}: no request answered in the second after the migration`);
      t.true(rep.maxStallMs < 10_000, `${path}: a client waited ${rep.maxStallMs} ms`);
    }
    t.is(r.invalidDropped, 0, 'packets dropped as ctstate INVALID during the migration');
  }
  // Rollbacks give the flows' entries back: before the destination served (to the source, which had handed
  // them over), and after (the destination's go back with the pod).
  for (const failAt of ['OverlayHandoff', 'DisengageHold']) {
    const r = await sc.migrate('node-2', failAt);
    t.is(r.phase, 'RolledBack', `${failAt}: ${r.error}`);
    t.regex(r.error ?? '', /injected failure/);
    t.deepEqual([...r.clusterIp.errors, ...r.nodePort.errors], [], `${failAt}: client errors`);
    t.true(r.clusterIpRequestsAfter > 0 && r.nodePortRequestsAfter > 0, `${failAt}: flows answer after the rollback`);
    t.is(r.invalidDropped, 0, `${failAt}: packets dropped as ctstate INVALID`);
  }
  const list = await cliJson(['pod', 'list', '--cluster', CLUSTER]);
  t.is(list.pods.find((p: { name: string }) => p.name === 'web').node, 'node-1');
  const after = await sc.viaClusterIp.mark();
  t.true(after.perConnection.every((c) => c.maxStallMs < 1000), 'every ClusterIP connection keeps answering');
  const drops = await sc.invalidDropped();
  t.deepEqual(Object.values(drops).filter((d) => d > 0), [], JSON.stringify(drops));
});
