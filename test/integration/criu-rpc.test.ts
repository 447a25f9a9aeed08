// Integration test for criu-shim/rpc: a real CRIU moves a TCP counter server, with an open connection, from
// one network namespace to a new one over RPC (notify hooks, external netns, inherit_fd), and a CRIU failure
// comes back as a CriuError with CRIU's log. Everything it makes starts with pm-itcriu- and is removed after.
import anyTest, { type TestFn } from 'ava';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CriuError } from '../../bus/errors.js';
import { criuDump, criuRestore, criuVersion, LOG_TAIL_LINES, prepareRestore, type CriuNotification } from '../../criu-shim/rpc/index.js';
import { criuBinary } from '../../node-runtime/constants.js';
import { inNetns, ip, ipBatch } from '../../node-runtime/exec.js';
import { childrenOf, isAlive, pidsInNetns, refOf, type ProcessRef } from '../../node-runtime/procs.js';
import { PYTHON, WORKLOADS } from './helpers.js';

const PREFIX = 'pm-itcriu-';
const NS_A = `${PREFIX}a`;
const NS_B = `${PREFIX}b`;
const NS_C = `${PREFIX}c`;
const SERVER_IP = '10.99.0.1';
const CLIENT_IP = '10.99.0.2';
const SERVER_MAC = '02:99:00:00:00:01';
const PORT = 7000;
const HOLD_TABLE = 'pm_itcriu_hold';
/**
 * By absolute path: under `npx`/npm scripts PATH starts with node_modules/.bin, where ava's dependency
 * @vercel/nft installs a Node program called `nft` that happily exits 0 without touching netfilter.
 */
const NFT = '/usr/sbin/nft';
/** Bounds for waits that only catch hangs; the real figures are logged, not asserted. */
const START_TIMEOUT_MS = 15_000;
const CLIENT_DONE_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 2_000;
/** Replies the client must have had before the dump, and after the restore, for the run to mean anything. */
const MIN_REPLIES_EACH_SIDE = 25;

interface Ctx {
  tmp: string;
  children: ProcessRef[];
}
const test = anyTest as TestFn<Ctx>;

// The client lives in namespace C: a line every 20 ms, each reply checked (the server answers "<n> <count>",
// so a lost byte, a reset or a reconnect shows at once); the largest gap between replies is the stall.
const CLIENT_PY = String.raw`
import json, os, socket, sys, time
host, port, stop_file, ready_file, out_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
INTERVAL_S, MAX_RUN_S = 0.02, 150
res = {"sent": 0, "replies": 0, "ok": True, "error": None, "maxGapMs": 0.0, "connections": 0}
def dump(path, obj):
    with open(path + ".tmp", "w") as f: json.dump(obj, f)
    os.rename(path + ".tmp", path)
try:
    s = socket.create_connection((host, port), timeout=10)
    res["connections"] += 1
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    res["local"] = "%s:%d" % s.getsockname()
    dump(ready_file, {"local": res["local"]})
    f = s.makefile("rb")
    t0 = last = time.monotonic()
    i = 0
    while not os.path.exists(stop_file) and time.monotonic() - t0 < MAX_RUN_S:
        i += 1
        s.sendall(b"%d\n" % i)
        res["sent"] = i
        line = f.readline()
        if not line:
            raise EOFError("server closed the connection")
        now = time.monotonic()
        if (now - last) * 1000 > res["maxGapMs"]:
            res["maxGapMs"], res["gapFromMs"], res["gapToMs"] = (now - last) * 1000, last * 1000, now * 1000
        last = now
        if line.split() != [b"%d" % i, b"%d" % i]:
            raise ValueError("reply %r to line %d" % (line, i))
        res["replies"] = i
        time.sleep(max(0.0, INTERVAL_S - (time.monotonic() - now)))
except Exception as e:
    res["ok"] = False
    res["error"] = "%s: %s" % (type(e).__name__, e)
dump(out_file, res)
`;

interface ClientResult {
  sent: number;
  replies: number;
  ok: boolean;
  error: string | null;
  maxGapMs: number;
  /** Bounds of the largest gap, in CLOCK_MONOTONIC milliseconds (the clock of {@link monoMs}). */
  gapFromMs: number;
  gapToMs: number;
  connections: number;
  local: string;
}

/** CLOCK_MONOTONIC in ms, the clock Python's time.monotonic() reads too: client and test share a timeline. */
const monoMs = (): number => Number(process.hrtime.bigint()) / 1e6;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await probe();
    if (v !== undefined) return v;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function readJson<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

type Hook = 'prerouting' | 'output';

/**
 * Prepares a traffic hold in a namespace: an nftables table with empty base chains at raw priority (before
 * conntrack). Registering hooks is the slow part, so it happens ahead; {@link arm} then adds one rule.
 */
async function prepareHold(netns: string, hooks: readonly Hook[]): Promise<void> {
  const chains = hooks.map((hook) => `chain ${hook} { type filter hook ${hook} priority raw; }`);
  await inNetns(netns, NFT, ['-f', '-'], { input: `table inet ${HOLD_TABLE} {\n${chains.join('\n')}\n}\n` });
}

/** Drops all TCP through the prepared chains, except packets with CRIU's SOCCR mark (0xC114). */
async function arm(netns: string, hooks: readonly Hook[]): Promise<void> {
  const rules = hooks.map((hook) => `add rule inet ${HOLD_TABLE} ${hook} meta mark != 0xc114 meta l4proto tcp drop`);
  await inNetns(netns, NFT, ['-f', '-'], { input: `${rules.join('\n')}\n` });
}

async function disarm(netns: string, hooks: readonly Hook[]): Promise<void> {
  const flush = hooks.map((hook) => `flush chain inet ${HOLD_TABLE} ${hook}`);
  await inNetns(netns, NFT, ['-f', '-'], { input: `${flush.join('\n')}\n` });
}

/** Established TCP 4-tuples in a namespace, as "local peer". */
async function established(netns: string): Promise<string[]> {
  const r = await inNetns(netns, 'ss', ['-Htn', 'state', 'established']);
  return r.stdout.split('\n').map((l) => l.trim().split(/\s+/).slice(2, 4).join(' ')).filter((l) => l !== '');
}

async function netnsIno(name: string): Promise<number> {
  return (await stat(`/run/netns/${name}`)).ino;
}

/** Removes whatever an earlier (possibly interrupted) run left: processes in our namespaces, namespaces, temp dirs. */
async function cleanup(known: readonly ProcessRef[]): Promise<void> {
  const names = (await readdir('/run/netns').catch(() => [] as string[])).filter((n) => n.startsWith(PREFIX));
  const inodes = new Set<number>();
  for (const n of names) inodes.add(await netnsIno(n).catch(() => -1));
  const pids = new Set<number>(await pidsInNetns(inodes));
  for (const ref of known) if (await isAlive(ref)) pids.add(ref.pid);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const n of names) await ip(['netns', 'del', n], undefined, { okCodes: [0, 1, 2] });
  for (const d of await readdir(tmpdir())) {
    if (d.startsWith(PREFIX)) await rm(path.join(tmpdir(), d), { recursive: true, force: true });
  }
}

test.before(async (t) => {
  t.context = { tmp: '', children: [] };
  await cleanup([]);
  t.context.tmp = await mkdtemp(path.join(tmpdir(), PREFIX));
});

test.after.always(async (t) => {
  await cleanup(t.context.children);
});

/** A (server) and C (client) joined by a veth: the server side has a fixed MAC so B can take it over. */
async function makeNetwork(): Promise<void> {
  for (const ns of [NS_A, NS_C]) {
    await ip(['netns', 'add', ns]);
    await ip(['link', 'set', 'lo', 'up'], ns);
  }
  await linkServerSide(NS_A);
}

async function linkServerSide(netns: string): Promise<void> {
  await ipBatch([`link add eth0 address ${SERVER_MAC} type veth peer name pmc0 netns ${NS_C}`,
    `addr add ${SERVER_IP}/24 dev eth0`, 'link set eth0 up'], netns);
  await ipBatch([`addr add ${CLIENT_IP}/24 dev pmc0`, 'link set pmc0 up'], NS_C);
}

/**
 * Starts the counter server as PodMotion starts a pod (node-runtime/pods.ts), plus `setsid`: CRIU refuses a
 * pid-namespace init whose session leader is outside the namespace ("A session leader of P(1) is outside of its
 * pid namespace", cr-dump.c), shell_job or not. pid 1 is not a group leader there, so setsid does not fork.
 */
async function startServer(t: { context: Ctx }, logFile: string): Promise<ProcessRef> {
  const log = await open(logFile, 'a', 0o600);
  try {
    const child = spawn('nsenter', [`--net=/run/netns/${NS_A}`, '--', 'unshare', '--pid', '--ipc', '--uts', '--fork', '--',
      'setsid', PYTHON, path.join(WORKLOADS, 'counter_server.py'), String(PORT)], { detached: true, stdio: ['ignore', log.fd, log.fd] });
    child.unref();
    const holder = await refOf(child.pid!);
    if (holder) t.context.children.push(holder);
    const init = await waitFor('the server init', START_TIMEOUT_MS, async () => {
      const kid = (await childrenOf(child.pid!))[0];
      return kid === undefined ? undefined : refOf(kid);
    });
    t.context.children.push(init);
    await waitFor('the server to listen', START_TIMEOUT_MS, async () =>
      (await inNetns(NS_A, 'ss', ['-Hltn', `sport = :${PORT}`])).stdout.trim() !== '' ? true : undefined);
    return init;
  } finally {
    await log.close();
  }
}

/** Events of one migration on the CLOCK_MONOTONIC timeline, in order of arrival. */
class Timeline {
  readonly marks: Array<{ what: string; atMs: number }> = [];
  mark(what: string): void {
    this.marks.push({ what, atMs: monoMs() });
  }
  at(what: string): number {
    const m = this.marks.find((x) => x.what === what);
    if (!m) throw new Error(`no ${what} on the timeline`);
    return m.atMs;
  }
  /** Milliseconds from `from` to `to`. */
  span(from: string, to: string): number {
    return this.at(to) - this.at(from);
  }
  render(originMs: number): string {
    return this.marks.map((m) => `${m.what}@${(m.atMs - originMs).toFixed(1)}`).join(' ');
  }
}

/** The client in C, the server pod in A, and the 4-tuple of their connection. */
async function startWorkload(t: { context: Ctx }): Promise<{ init: ProcessRef; tuple: string[]; files: Record<string, string> }> {
  const { tmp } = t.context;
  await makeNetwork();
  const files = { serverLog: path.join(tmp, 'server.log'), script: path.join(tmp, 'client.py'), stop: path.join(tmp, 'stop'),
    ready: path.join(tmp, 'ready.json'), out: path.join(tmp, 'client.json') };
  const init = await startServer(t, files.serverLog);
  await writeFile(files.script, CLIENT_PY);
  const client = spawn('nsenter', [`--net=/run/netns/${NS_C}`, '--', PYTHON, files.script, SERVER_IP, String(PORT),
    files.stop, files.ready, files.out], { stdio: 'ignore' });
  const clientRef = await refOf(client.pid!);
  if (clientRef) t.context.children.push(clientRef);
  const { local } = await waitFor('the client to connect', START_TIMEOUT_MS, () => readJson<{ local: string }>(files.ready));
  await sleep(MIN_REPLIES_EACH_SIDE * 20 * 2);
  return { init, tuple: [`${SERVER_IP}:${PORT} ${local}`], files };
}

test.serial('dump over RPC, restore into a new namespace: the TCP connection survives', async (t) => {
  const criuPath = criuBinary();
  t.log('criu', await criuVersion({ criuPath }));
  const { init, tuple, files } = await startWorkload(t);
  t.deepEqual(await established(NS_A), tuple);

  // Both holds are prepared before the freeze. B stays closed from birth: a client retransmission that met B
  // before its socket exists would get a RST.
  await prepareHold(NS_A, ['prerouting', 'output']);
  await ip(['netns', 'add', NS_B]);
  await ip(['link', 'set', 'lo', 'up'], NS_B);
  await prepareHold(NS_B, ['prerouting']);
  await arm(NS_B, ['prerouting']);
  t.regex((await inNetns(NS_B, NFT, ['list', 'table', 'inet', HOLD_TABLE])).stdout, /tcp drop/, 'the hold is real');
  // Images hold the pod's memory: readable by root only.
  const images = path.join(t.context.tmp, 'images');
  await mkdir(images, { mode: 0o700 });
  // CRIU for the restore is started now, and waits for its request through the dump.
  const prepared = prepareRestore({ criuPath, inherit: [{ key: 'extnet', path: `/run/netns/${NS_B}` }] });
  t.teardown(() => prepared.discard());

  const tl = new Timeline();
  tl.mark('dump-call');
  await criuDump({
    criuPath, pid: init.pid, imagesDir: images, tcpEstablished: true, networkLock: 'SKIP',
    external: [`net[${await netnsIno(NS_A)}]:extnet`], finalState: 'stop',
  }, {
    onNotify: async (n: CriuNotification) => {
      tl.mark(n.script);
      if (n.script === 'network-lock') {
        await arm(NS_A, ['prerouting', 'output']);
        tl.mark('source-held');
      }
    },
  });
  tl.mark('dump-done');
  const scripts = tl.marks.map((m) => m.what);
  t.true(scripts.includes('network-lock'), scripts.join(','));
  t.true(scripts.includes('post-dump'), scripts.join(','));
  t.false(scripts.includes('network-unlock'), 'leave_stopped must not unlock the network');
  // CRIU sends SIGSTOP and then detaches: the stop lands when the task next heads for user mode (before any
  // user code runs), so for a moment it may still read "R" with SIGSTOP pending.
  await waitFor('the source to stop', STOP_TIMEOUT_MS, async () =>
    /^State:\s+T/m.test(await readFile(`/proc/${init.pid}/status`, 'utf8')) ? true : undefined);

  // Move the server's address and MAC: A's veth goes (its peer in C with it), B gets a new one.
  await ip(['link', 'del', 'eth0'], NS_A);
  await linkServerSide(NS_B);
  tl.mark('link-moved');

  tl.mark('restore-call');
  const restored = await criuRestore({
    criuPath, imagesDir: images, tcpEstablished: true, networkLock: 'SKIP',
    inherit: [{ key: 'extnet', path: `/run/netns/${NS_B}` }],
  }, {
    onNotify: async (n: CriuNotification) => {
      tl.mark(n.script === 'network-lock' || n.script === 'post-dump' ? `restore-${n.script}` : n.script);
      // At network-unlock every socket is restored (still in repair); released here, the client's
      // retransmission that the repair-off window probe triggers finds the way open.
      if (n.script === 'network-unlock') {
        await disarm(NS_B, ['prerouting']);
        tl.mark('destination-released');
      }
    },
  }, prepared);
  tl.mark('restore-done');
  t.true(prepared.taken, 'the restore used the CRIU started ahead of it');
  const restoredRef = await refOf(restored.pid);
  t.truthy(restoredRef, 'restored server is alive');
  if (restoredRef) t.context.children.push(restoredRef);

  await sleep(MIN_REPLIES_EACH_SIDE * 20 * 2);
  // Checked while the client still talks: once it stops, the connection closes.
  t.deepEqual(await established(NS_B), tuple, 'same 4-tuple in B');
  t.is(await readlink(`/proc/${restored.pid}/ns/net`), `net:[${await netnsIno(NS_B)}]`, 'server runs in B');
  await writeFile(files.stop!, '');
  const result = await waitFor('the client result', CLIENT_DONE_TIMEOUT_MS, () => readJson<ClientResult>(files.out!));

  t.is(result.error, null);
  t.true(result.ok);
  t.is(result.connections, 1);
  t.is(result.replies, result.sent, 'every line got its reply, in order');
  t.true(result.replies > 2 * MIN_REPLIES_EACH_SIDE, `replies: ${result.replies}`);
  t.true(restoredRef !== undefined && (await isAlive(restoredRef)), 'server still alive in B after the client left');
  const accepts = (await readFile(files.serverLog!, 'utf8')).split('\n').filter((l) => l.startsWith('connection from'));
  t.is(accepts.length, 1, 'the server accepted exactly one connection');

  const ppid = /^PPid:\s+(\d+)/m.exec(await readFile(`/proc/${restored.pid}/status`, 'utf8'))?.[1];
  t.log(`restored root: pid ${restored.pid}, parent ${ppid} (CRIU, its parent, has exited)`);
  const origin = tl.at('dump-call');
  t.log('timeline (ms):', tl.render(origin));
  t.log(`freeze in dump: network-lock -> post-dump ${tl.span('network-lock', 'post-dump').toFixed(1)} ms; ` +
    `dump call ${tl.span('dump-call', 'dump-done').toFixed(0)} ms; restore call ${tl.span('restore-call', 'restore-done').toFixed(0)} ms ` +
    `(pre-restore -> post-resume ${tl.span('pre-restore', 'post-resume').toFixed(1)} ms)`);
  t.log(`hold: source armed -> destination released ${tl.span('source-held', 'destination-released').toFixed(0)} ms`);
  t.log(`client: ${result.replies} replies; largest gap ${result.maxGapMs.toFixed(0)} ms (20 ms nominal), ` +
    `from ${(result.gapFromMs - origin).toFixed(0)} to ${(result.gapToMs - origin).toFixed(0)} ms`);
});

test('a dump of a pid that does not exist fails with a one-line CriuError carrying CRIU\'s log', async (t) => {
  const images = await mkdtemp(path.join(tmpdir(), `${PREFIX}fail-`));
  // Pids are below pid_max (at most 2^22), so this one cannot exist.
  const pid = 2 ** 22 + 7;
  const err = await t.throwsAsync(criuDump({ criuPath: criuBinary(), pid, imagesDir: images }), { instanceOf: CriuError });
  t.regex(err!.message, new RegExp(`^criu dump of pid ${pid} failed: .+`));
  t.false(/[\r\n]/.test(err!.message), 'one line');
  t.truthy(err!.logTail);
  t.true(err!.logTail!.split('\n').length <= LOG_TAIL_LINES);
  t.regex(err!.logTail!, /Error \(/);
  t.regex(err!.logTail!, new RegExp(String(pid)));
  t.log(err!.message);
});

test('the CRIU configuration file is root\'s alone, rewritten when changed, and CRIU reads it', async (t) => {
  const { criuConfigFile } = await import('../../node-runtime/criu-rundir.js');
  const file = await criuConfigFile();
  const st = await stat(file);
  t.is(st.uid, 0);
  t.is(st.mode & 0o777, 0o600);
  t.is((await stat(path.dirname(file))).mode & 0o777, 0o700);
  t.regex(await readFile(file, 'utf8'), /^file-validation filesize\n$/);
  await writeFile(file, 'action-script /bin/false\n');
  t.is(await criuConfigFile(), file);
  t.regex(await readFile(file, 'utf8'), /^file-validation filesize\n$/, 'a tampered file is replaced');
  // CRIU parses it: an option it does not know in the same place fails the dump in one line.
  const bad = await mkdtemp(path.join(tmpdir(), `${PREFIX}conf-`));
  t.teardown(() => rm(bad, { recursive: true, force: true }));
  await writeFile(path.join(bad, 'criu.conf'), 'no-such-criu-option\n', { mode: 0o600 });
  const err = await t.throwsAsync(criuDump({ criuPath: criuBinary(), pid: 2 ** 22 + 7, imagesDir: bad, configFile: path.join(bad, 'criu.conf') }), { instanceOf: CriuError });
  t.regex(err!.message, /unrecognized option '--no-such-criu-option'/);
});

test('a CRIU started ahead for a restore waits, is not taken by a restore of other files, and ends when discarded', async (t) => {
  const criuPath = criuBinary();
  const helpers = async () => {
    const out: number[] = [];
    for (const pid of await childrenOf(process.pid)) {
      if ((await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim() === 'pm-criu-swrk') out.push(pid);
    }
    return out;
  };
  const before = await helpers();
  const prepared = prepareRestore({ criuPath, inherit: [{ key: 'extnet', path: '/proc/self/ns/net' }] });
  t.teardown(() => prepared.discard());
  const started = await waitFor('the helper to start', START_TIMEOUT_MS, async () => {
    const now = (await helpers()).filter((p) => !before.includes(p));
    return now.length ? now : undefined;
  });
  // CRIU waits under it for the request.
  await waitFor('criu under the helper', START_TIMEOUT_MS, async () => ((await childrenOf(started[0]!)).length ? true : undefined));
  // Asked for other files, it is not used (a fresh CRIU would be started) and it goes.
  t.is(prepared.take({ criuPath }, [{ path: '/proc/self/ns/mnt', fd: 10 }]), undefined);
  t.false(prepared.taken);
  await waitFor('the helper to exit', START_TIMEOUT_MS, async () => ((await helpers()).includes(started[0]!) ? undefined : true));

  const second = prepareRestore({ criuPath });
  const two = await waitFor('the second helper', START_TIMEOUT_MS, async () => {
    const now = (await helpers()).filter((p) => !before.includes(p));
    return now.length ? now : undefined;
  });
  second.discard();
  second.discard();
  await waitFor('the second helper to exit', START_TIMEOUT_MS, async () => ((await helpers()).includes(two[0]!) ? undefined : true));
  t.is(second.take({ criuPath }, []), undefined, 'nothing left to take once discarded');
});
