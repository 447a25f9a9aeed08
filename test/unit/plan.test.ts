/** The local cluster's addressing plan: deterministic, collision-free, and strict about names. */
import test from 'ava';
import { InvalidRequestError } from '../../bus/errors.js';
import { allocateHost, planCluster, podHostIface, podIp, podMac, stableMac } from '../../node-runtime/plan.js';

test('a plan has one member per node plus the client, each with its own /24 and VTEP', (t) => {
  const p = planCluster('demo', 3);
  t.deepEqual(p.nodes.map((n) => n.name), ['node-1', 'node-2', 'node-3']);
  t.deepEqual(p.nodes.map((n) => n.podCidr), ['10.244.1.0/24', '10.244.2.0/24', '10.244.3.0/24']);
  t.is(p.client.podCidr, '10.244.0.0/24');
  t.is(p.client.vtepIp, '10.244.0.0');
  const all = [p.client, ...p.nodes];
  t.is(new Set(all.map((m) => m.underlayIp)).size, 4);
  t.is(new Set(all.map((m) => m.vtepMac)).size, 4);
  t.is(new Set(all.map((m) => m.netns)).size, 4);
  t.is(p.underlayNetns, 'pm-demo-underlay');
  for (const m of all) t.true(m.underlayPort.length <= 15, `${m.underlayPort} fits IFNAMSIZ`);
});

test('plans are deterministic: the same inputs give the same addresses', (t) => {
  t.deepEqual(planCluster('a1', 5), planCluster('a1', 5));
  t.notDeepEqual(planCluster('a1', 2).nodes[0]!.vtepMac, planCluster('a2', 2).nodes[0]!.vtepMac);
});

const badPlans: Array<[string, number, RegExp]> = [
  ['Upper', 3, /cluster name "Upper"/],
  ['has-dash', 3, /cluster name "has-dash"/],
  ['waytoolongname1', 3, /cluster name/],
  ['ok', 0, /--nodes must be a whole number from 1 to 50 \(got 0\)/],
  ['ok', 51, /--nodes/],
  ['ok', 2.5, /--nodes/],
];
for (const [name, nodes, re] of badPlans) {
  test(`planCluster rejects ${name}/${nodes}`, (t) => {
    const err = t.throws(() => planCluster(name, nodes));
    t.true(err instanceof InvalidRequestError);
    t.regex(err!.message, re);
  });
}

test('a pod MAC is derived from its IP, locally administered and unicast', (t) => {
  t.is(podMac('10.244.1.10'), '0a:58:0a:f4:01:0a');
  t.is(podMac(podIp(3, 250)), '0a:58:0a:f4:03:fa');
  const first = parseInt(stableMac('x').slice(0, 2), 16);
  t.is(first & 0b11, 0b10, 'locally administered, unicast');
});

test('host allocation takes the lowest free number and reports a full range', (t) => {
  t.is(allocateHost(new Set()), 10);
  t.is(allocateHost(new Set([10, 11, 13])), 12);
  const full = new Set<number>();
  for (let h = 10; h <= 250; h++) full.add(h);
  t.is(allocateHost(full), undefined);
});

test('pod host interface names are short, stable and distinct', (t) => {
  t.is(podHostIface('web'), podHostIface('web'));
  t.not(podHostIface('web'), podHostIface('web2'));
  t.true(podHostIface('a-very-long-pod-name-that-goes-on-and-on').length <= 15);
});
