/** Conntrack entries as the `conntrack` tool prints them, what moves with a pod, and the lines that recreate them. */
import test from 'ava';
import { carriable, deleteLine, forgettable, insertLine, natOf, parseConntrack } from '../../node-runtime/conntrack.js';
import { kubeProxyRules, validateService, type ServiceRecord } from '../../node-runtime/services.js';

const POD = '10.244.1.10';
const LISTING = [
  'tcp      6 431998 ESTABLISHED src=10.244.0.0 dst=10.244.1.10 sport=8827 dport=7000 src=10.244.1.10 dst=10.244.0.0 sport=7000 dport=8827 [ASSURED] mark=0 use=1',
  'tcp      6 299 ESTABLISHED src=10.244.1.10 dst=10.96.0.10 sport=34044 dport=80 src=10.244.3.10 dst=10.244.1.10 sport=7000 dport=34044 [ASSURED] mark=0 use=1',
  'tcp      6 119 TIME_WAIT src=10.244.3.0 dst=10.244.1.10 sport=56326 dport=7000 src=10.244.1.10 dst=10.244.3.0 sport=7000 dport=56326 [ASSURED] mark=0 use=1',
  'tcp      6 50 ESTABLISHED src=169.254.1.1 dst=10.244.1.10 sport=39890 dport=7000 src=10.244.1.10 dst=169.254.1.1 sport=7000 dport=39890 [ASSURED] mark=0 use=1',
  'tcp      6 100 ESTABLISHED src=10.244.1.10 dst=8.8.8.8 sport=5000 dport=443 src=8.8.8.8 dst=172.30.0.11 sport=443 dport=61000 [ASSURED] mark=0 use=1',
  'udp      17 29 src=10.244.1.10 dst=10.244.3.11 sport=5353 dport=53 [UNREPLIED] src=10.244.3.11 dst=10.244.1.10 sport=53 dport=5353 mark=7 use=1',
  'conntrack v1.4.7 (conntrack-tools): 6 flow entries have been shown.',
].join('\n');

test('the conntrack listing parses into entries with both tuples, state, status and mark', (t) => {
  const e = parseConntrack(LISTING);
  t.is(e.length, 6);
  t.deepEqual(e[0], {
    proto: 'tcp', state: 'ESTABLISHED', timeoutS: 431998, assured: true, seenReply: true, mark: 0,
    orig: { src: '10.244.0.0', dst: POD, sport: 8827, dport: 7000 }, reply: { src: POD, dst: '10.244.0.0', sport: 7000, dport: 8827 },
  });
  t.is(e[5]!.proto, 'udp');
  t.is(e[5]!.state, undefined);
  t.false(e[5]!.seenReply);
  t.is(e[5]!.mark, 7);
});

test('NAT is read from the tuples: DNAT to where replies come from, SNAT to where they go', (t) => {
  const [plain, dnat, , , snat] = parseConntrack(LISTING);
  t.deepEqual(natOf(plain!), {});
  t.deepEqual(natOf(dnat!), { dnat: '10.244.3.10:7000' });
  t.deepEqual(natOf(snat!), { snat: '172.30.0.11:61000' });
});

test('live flows move; ended ones, the node\'s own and those SNATed to the node stay', (t) => {
  const { carry, stuck } = carriable(parseConntrack(LISTING), POD, new Set(['172.30.0.11', '10.244.1.0', '169.254.1.1']));
  t.deepEqual(carry.map((e) => e.orig.sport), [8827, 34044, 5353]);
  t.deepEqual(stuck.map((e) => e.orig.dport), [443]);
});

test('a node forgets every flow of the pod but a plain one with a peer it still serves', (t) => {
  const entries = parseConntrack(LISTING);
  t.is(forgettable(entries, POD, new Set()).length, 6);
  // 10.244.0.0 is local: its plain flow stays; the DNATed one to 10.244.3.10 goes even if that peer is local.
  const kept = entries.filter((e) => !forgettable(entries, POD, new Set(['10.244.0.0', '10.96.0.10'])).includes(e));
  t.deepEqual(kept.map((e) => e.orig.sport), [8827]);
});

test('a NATed entry is recreated from its untranslated reply and its NAT, a plain one as it was', (t) => {
  const [plain, dnat] = parseConntrack(LISTING);
  t.is(insertLine(plain!), '-I -p tcp -s 10.244.0.0 -d 10.244.1.10 --sport 8827 --dport 7000 -r 10.244.1.10 -q 10.244.0.0 ' +
    '--reply-port-src 7000 --reply-port-dst 8827 --state ESTABLISHED -u ASSURED,SEEN_REPLY -t 431998 -m 0');
  t.is(insertLine(dnat!), '-I -p tcp -s 10.244.1.10 -d 10.96.0.10 --sport 34044 --dport 80 -r 10.96.0.10 -q 10.244.1.10 ' +
    '--reply-port-src 80 --reply-port-dst 34044 --state ESTABLISHED -u ASSURED,SEEN_REPLY -t 299 -m 0 --dst-nat 10.244.3.10:7000');
  t.is(deleteLine(dnat!), '-D -p tcp -s 10.244.1.10 -d 10.96.0.10 --sport 34044 --dport 80');
});

const svc = (over: Partial<ServiceRecord> = {}): ServiceRecord => ({
  name: 'web', clusterIp: '10.96.0.10', port: 80, targetPort: 7000, endpoints: [{ pod: 'a', ip: '10.244.1.10' }, { pod: 'b', ip: '10.244.2.10' }],
  createdAtMs: 0, ...over,
});

test('kube-proxy rules: ClusterIP split evenly over endpoints, NodePort masqueraded, INVALID dropped', (t) => {
  const r = kubeProxyRules([svc({ nodePort: 30080 })]);
  t.regex(r, /-A KUBE-SERVICES -d 10\.96\.0\.10\/32 -p tcp --dport 80 -j KUBE-SVC-/);
  t.regex(r, /--probability 0\.5000000000 -j KUBE-SEP-/);
  t.regex(r, /-j DNAT --to-destination 10\.244\.1\.10:7000/);
  t.regex(r, /-j DNAT --to-destination 10\.244\.2\.10:7000/);
  t.regex(r, /-A KUBE-NODEPORTS -p tcp --dport 30080 -j KUBE-EXT-/);
  t.regex(r, /-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP/);
  t.is(r.match(/^COMMIT$/gm)?.length, 2);
  // The NodePort jump is the last rule of KUBE-SERVICES (after every ClusterIP).
  const services = r.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES'));
  t.regex(services.at(-1)!, /--dst-type LOCAL -j KUBE-NODEPORTS/);
});

test('a bad service spec is refused with one line', (t) => {
  const base = { name: 'web', port: 80, targetPort: 7000, endpoints: [{ pod: 'a', ip: '10.244.1.10' }] };
  t.throws(() => validateService({ ...base, name: 'Web!' }, []), { message: /DNS label/ });
  t.throws(() => validateService(base, [svc()]), { message: /already exists/ });
  t.throws(() => validateService({ ...base, nodePort: 8080 }, []), { message: /node port must be 30000-32767/ });
  t.throws(() => validateService({ ...base, nodePort: 30080 }, [svc({ name: 'other', nodePort: 30080 })]), { message: /already used by service other/ });
  t.throws(() => validateService({ ...base, endpoints: [] }, []), { message: /at least one endpoint/ });
  t.notThrows(() => validateService(base, []));
});

test('states with digits parse; a TCP entry without a state is not carried; timeouts are capped at 5 days', (t) => {
  const [e] = parseConntrack('tcp      6 119 SYN_SENT2 src=10.244.0.0 dst=10.244.1.10 sport=1 dport=2 src=10.244.1.10 dst=10.244.0.0 sport=2 dport=1 mark=0 use=1');
  t.is(e!.state, 'SYN_SENT2');
  const stateless = { ...e!, state: undefined };
  delete stateless.state;
  t.deepEqual(carriable([stateless], POD, new Set()).carry, []);
  t.regex(insertLine({ ...e!, timeoutS: 10_000_000 }), / -t 432000 /);
});
