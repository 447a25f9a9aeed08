/**
 * Carrying conntrack entries with the real kernel: three namespaces (a client pod, a router that DNATs a
 * Service address and drops ctstate INVALID as kube-proxy does, a backend). After the router's entry of an
 * established flow is replaced by the one node-runtime/conntrack.ts recreates, the flow must keep reaching
 * the same backend although the Service rule now points elsewhere; without it, the flow must break (the
 * test can fail). A plain flow under tcp_loose=0 shows the INVALID side: its packets pass only with the entry.
 */
import test from 'ava';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { carriable, forgetEntries, insertEntries, listEntries } from '../../node-runtime/conntrack.js';
import { inNetns, ip, run } from '../../node-runtime/exec.js';

// Named like a cluster's namespaces (pm-<name>-...), so `cluster down --all --prefix it` sweeps leftovers.
const A = 'pm-itct-a';
const R = 'pm-itct-r';
const B = 'pm-itct-b';
const CLIENT = '10.1.0.2';
const VIP = '10.96.0.10';
const BACKEND = '10.2.0.2';
const REPLY_TIMEOUT_S = 2;
const procs: ChildProcessWithoutNullStreams[] = [];

async function down(): Promise<void> {
  for (const p of procs) p.kill('SIGKILL');
  await run(process.execPath, ['dist/cli/podmotion.js', 'cluster', 'down', '--cluster', 'itct'], { timeoutMs: 60_000 }).catch(() => {});
}

test.before(async () => {
  await down();
  for (const n of [A, R, B]) {
    await ip(['netns', 'add', n]);
    await ip(['link', 'set', 'lo', 'up'], n);
  }
  await ip(['link', 'add', 'a0', 'netns', A, 'type', 'veth', 'peer', 'name', 'ra', 'netns', R]);
  await ip(['link', 'add', 'b0', 'netns', B, 'type', 'veth', 'peer', 'name', 'rb', 'netns', R]);
  for (const [ns, dev, addr, gw] of [[A, 'a0', `${CLIENT}/24`, '10.1.0.1'], [B, 'b0', `${BACKEND}/24`, '10.2.0.1']] as const) {
    await ip(['addr', 'add', addr, 'dev', dev], ns);
    await ip(['link', 'set', dev, 'up'], ns);
    await ip(['route', 'add', 'default', 'via', gw], ns);
  }
  await ip(['addr', 'add', '10.1.0.1/24', 'dev', 'ra'], R);
  await ip(['addr', 'add', '10.2.0.1/24', 'dev', 'rb'], R);
  await ip(['link', 'set', 'ra', 'up'], R);
  await ip(['link', 'set', 'rb', 'up'], R);
  await inNetns(R, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  await inNetns(R, 'iptables-restore', [], {
    input: ['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]',
      `-A PREROUTING -d ${VIP}/32 -p tcp --dport 80 -j DNAT --to-destination ${BACKEND}:7000`, 'COMMIT',
      '*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]',
      '-A FORWARD -m conntrack --ctstate INVALID -j DROP', 'COMMIT', ''].join('\n'),
  });
  // An echo server for each flow the tests open.
  const srv = spawn('nsenter', [`--net=/run/netns/${B}`, '--', 'python3', '-c', `
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 7000)); s.listen(8)
def echo(c):
    while True:
        d = c.recv(100)
        if not d: break
        c.sendall(d)
while True:
    c, _ = s.accept(); threading.Thread(target=echo, args=(c,), daemon=True).start()
`]);
  procs.push(srv);
  await new Promise((r) => setTimeout(r, 300));
});
test.after.always(down);

/** A client connection in A (`port`: its local port): `send(x)` writes x and resolves with the echo, or "timeout". */
async function connect(to: string, port: number): Promise<{ port: number; send(x: string): Promise<string> }> {
  const c = spawn('nsenter', [`--net=/run/netns/${A}`, '--', 'python3', '-u', '-c', `
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); s.settimeout(${REPLY_TIMEOUT_S})
print("up", s.getsockname()[1], flush=True)
for line in sys.stdin:
    s.sendall(line.strip().encode())
    try: print(s.recv(100).decode(), flush=True)
    except OSError: print("timeout", flush=True)
`, to, String(port)]);
  procs.push(c);
  const lines = createInterface({ input: c.stdout })[Symbol.asyncIterator]();
  const first = String((await lines.next()).value ?? '').split(' ');
  if (first[0] !== 'up') throw new Error('client did not connect');
  return {
    port: Number(first[1]),
    async send(x) {
      c.stdin.write(x + '\n');
      return String((await lines.next()).value);
    },
  };
}

async function pointServiceAt(backend: string): Promise<void> {
  await inNetns(R, 'iptables', ['-t', 'nat', '-R', 'PREROUTING', '1', '-d', `${VIP}/32`, '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `${backend}:7000`]);
}

test.serial('a DNATed flow keeps its endpoint only through a recreated entry', async (t) => {
  await pointServiceAt(BACKEND);
  const carried = await connect(VIP, 80);
  t.is(await carried.send('one'), 'one');
  const lost = await connect(VIP, 80);
  t.is(await lost.send('one'), 'one');
  const { carry } = carriable(await listEntries(R, CLIENT), CLIENT, new Set());
  t.is(carry.length, 2);
  t.true(carry.every((e) => e.reply.src === BACKEND && e.reply.sport === 7000));
  // From now on a new pick of the Service goes to an address nobody has: only the old binding reaches the backend.
  await pointServiceAt('10.2.0.99');
  t.is(await forgetEntries(R, CLIENT, new Set()), 2);
  // The first flow's entry is recreated; the second's is left to be picked up again.
  await insertEntries(R, CLIENT, carry.filter((e) => e.orig.sport === carried.port));
  const after = await listEntries(R, CLIENT);
  t.deepEqual(after.map((e) => [e.orig.sport, e.reply.src]), [[carried.port, BACKEND]]);
  t.is(await carried.send('two'), 'two', 'the recreated entry keeps the flow on its backend');
  t.is(await lost.send('two'), 'timeout', 'a flow whose entry was not recreated is DNATed afresh and lost');
});

test.serial('with tcp_loose=0, a plain flow passes only with its entry', async (t) => {
  await inNetns(R, 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_tcp_loose=0']);
  try {
    const a = await connect(BACKEND, 7000);
    const b = await connect(BACKEND, 7000);
    t.is(await a.send('one'), 'one');
    t.is(await b.send('one'), 'one');
    const entries = (await listEntries(R, CLIENT)).filter((e) => e.orig.dst === BACKEND && e.state === 'ESTABLISHED');
    t.is(entries.length, 2);
    await forgetEntries(R, CLIENT, new Set());
    await insertEntries(R, CLIENT, entries.filter((e) => e.orig.sport === a.port));
    t.is(await a.send('two'), 'two', 'the flow passes with its recreated entry');
    t.is(await b.send('two'), 'timeout', 'without its entry the flow is INVALID and dropped');
  } finally {
    await inNetns(R, 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_tcp_loose=1']);
  }
});
