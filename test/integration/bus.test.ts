/**
 * The bus against a real nats-server: NKey authentication and per-identity permissions, JetStream
 * resources, request/reply errors and timeouts, and a node agent that survives malformed messages.
 */
import anyTest, { type TestFn } from 'ava';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstreamManager } from '@nats-io/jetstream';
import { pack } from 'msgpackr';
import { pino } from 'pino';
import { connectBus } from '../../bus/connection.js';
import { startEmbedded, stopEmbedded, type EmbeddedServer } from '../../bus/embedded.js';
import { ensureIdentities, inboxPrefixOf, type Identity } from '../../bus/identity.js';
import { ensureBusResources } from '../../bus/jetstream.js';
import { request, serve } from '../../bus/rpc.js';
import { Buckets, Headers, NODE_REGISTRATION_TTL_MS, Streams, Subjects } from '../../bus/subjects.js';
import { readRegistrations, RegistrationWatch } from '../../bus/registry.js';
import { DecodeError, NotFoundError, TimeoutError } from '../../bus/errors.js';
import { createCodec } from '../../bus/codec.js';
import { PingReply, PingRequest, WireErrorSchema } from '../../bus/messages.js';
import { systemClock } from '../../common/clock.js';
import { codecs, startAgent, type Agent } from '../../node-runtime/agent.js';
import { identitySpecs } from '../../node-runtime/local-cluster.js';
import { planCluster } from '../../node-runtime/plan.js';

interface Ctx {
  credsDir: string;
  ids: Identity[];
  srv: EmbeddedServer;
  admin: NatsConnection;
  agent: Agent;
  agentNc: NatsConnection;
}
const test = anyTest as TestFn<Ctx>;
const plan = planCluster('itbus', 2);

test.before(async (t) => {
  const credsDir = await mkdtemp(path.join(tmpdir(), 'podmotion-itbus-'));
  const ids = await ensureIdentities(credsDir, identitySpecs(plan));
  const srv = await startEmbedded(ids, { detached: false });
  const seed = (name: string) => ids.find((i) => i.name === name)!.seedFile;
  const admin = await connectBus({ url: srv.url, seedFile: seed('admin') }, 'itbus-admin');
  await ensureBusResources(admin);
  const agentNc = await connectBus({ url: srv.url, seedFile: seed('agent-node-1'), inboxPrefix: inboxPrefixOf('agent-node-1') }, 'itbus-agent');
  const agent = await startAgent({
    cluster: 'itbus', node: plan.nodes[0]!, nc: agentNc, clock: systemClock, log: pino({ level: 'silent' }),
    capabilities: { kernel: 'test', criuOk: false, features: {} },
  });
  t.context = { credsDir, ids, srv, admin, agent, agentNc };
});

test.after.always(async (t) => {
  const c = t.context;
  await c.agent?.stop();
  await c.agentNc?.close();
  await c.admin?.close();
  if (c.srv) await stopEmbedded(c.srv);
  if (c.credsDir) await rm(c.credsDir, { recursive: true, force: true });
});

test('seed files are private to root and the server listens on loopback only', async (t) => {
  const { statSync } = await import('node:fs');
  for (const id of t.context.ids) t.is(statSync(id.seedFile).mode & 0o777, 0o600, id.name);
  t.is(statSync(t.context.credsDir).mode & 0o777, 0o700);
  t.regex(t.context.srv.url, /^nats:\/\/127\.0\.0\.1:\d+$/);
});

test('a client without credentials is refused', async (t) => {
  const err = await t.throwsAsync(connect({ servers: t.context.srv.url, timeout: 3000, maxReconnectAttempts: 0 }));
  t.regex(String(err?.message), /authorization/i);
});

test('a node identity cannot address another node', async (t) => {
  const ping = { from: 'test', sentAtMs: 0 };
  const own = await request(t.context.agentNc, Subjects.node('node-1', 'ping'), codecs.ping, codecs.pong, ping);
  t.is(own.node, 'node-1');
  const err = await t.throwsAsync(request(t.context.agentNc, Subjects.node('node-2', 'ping'), codecs.ping, codecs.pong, ping, { timeoutMs: 2000 }));
  t.regex(String(err?.message), /permission/i);
});

test('a node identity cannot read replies meant for others', async (t) => {
  const seed = t.context.ids.find((i) => i.name === 'agent-node-2')!.seedFile;
  // An agent connecting with the shared inbox prefix cannot even make a request: its replies are off limits.
  const rogue = await connectBus({ url: t.context.srv.url, seedFile: seed }, 'itbus-rogue');
  try {
    const err = await t.throwsAsync(rogue.request(Subjects.node('node-2', 'ping'), new Uint8Array(), { timeout: 1500 }));
    t.regex(String(err?.message), /permission|timeout/i);
    // Subscribing to everyone's inbox is refused by the server: the subscription ends with a permission error.
    const sniff = rogue.subscribe('_INBOX.>');
    const ended = await Promise.race([
      sniff.closed.then((e) => String(e ?? 'closed without error'), (e) => String(e)),
      new Promise<string>((r) => setTimeout(() => r('still open'), 3000)),
    ]);
    t.regex(ended, /permission/i);
  } finally {
    await rogue.close().catch(() => {});
  }
});

test('JetStream resources exist and creating them again is harmless', async (t) => {
  await ensureBusResources(t.context.admin);
  const jsm = await jetstreamManager(t.context.admin);
  const names: string[] = [];
  for await (const s of jsm.streams.list()) names.push(s.config.name);
  t.true(names.includes(Streams.events.name));
  t.true(names.includes(`KV_${Buckets.migrations}`));
  t.true(names.includes(`KV_${Buckets.nodes}`));
});

test('the agent answers pings and registers in the nodes bucket', async (t) => {
  const pong = await request(t.context.admin, Subjects.node('node-1', 'ping'), codecs.ping, codecs.pong, { from: 't', sentAtMs: 1 });
  t.is(pong.node, 'node-1');
  t.is(pong.pid, process.pid);
  const { Kvm } = await import('@nats-io/kv');
  const kv = await new Kvm(t.context.admin).open(Buckets.nodes);
  const e = await kv.get('node-1');
  t.truthy(e);
  const reg = codecs.registration.decode(e!.value);
  t.is(reg.podCidr, '10.244.1.0/24');
  t.is(reg.cluster, 'itbus');
});

test('the coordinator\'s watched registrations follow the bucket: puts, deletes and the TTL', async (t) => {
  const { Kvm } = await import('@nats-io/kv');
  const kv = await new Kvm(t.context.admin).open(Buckets.nodes);
  let skewMs = 0;
  const watch = await RegistrationWatch.start(t.context.admin, () => Date.now() + skewMs);
  t.teardown(() => watch.stop());
  const until = async (what: string, ok: (m: Awaited<ReturnType<typeof watch.current>>) => boolean) => {
    for (let i = 0; i < 100 && !ok(await watch.current()); i++) await new Promise((r) => setTimeout(r, 20));
    t.true(ok(await watch.current()), what);
  };
  // What the agent registered is there from the start, as a fresh read of the bucket has it.
  t.deepEqual([...(await watch.current()).keys()].sort(), [...(await readRegistrations(t.context.admin)).keys()].sort());
  t.true((await watch.current()).has('node-1'));
  const reg = codecs.registration.decode((await kv.get('node-1'))!.value);
  await kv.put('node-9', codecs.registration.encode({ ...reg, node: 'node-9', podCidr: '10.244.9.0/24' }));
  await until('a new registration appears', (m) => m.has('node-9'));
  t.is((await watch.current()).get('node-9')?.podCidr, '10.244.9.0/24');
  await kv.put('node-8', new Uint8Array([0xc1]));
  await kv.delete('node-9');
  await until('a deleted registration is gone', (m) => !m.has('node-9'));
  t.false((await watch.current()).has('node-8'), 'an entry that does not decode is no registration');
  // Not renewed within the TTL: left out, as the bucket drops it.
  skewMs = NODE_REGISTRATION_TTL_MS + 60_000;
  t.is((await watch.current()).size, 0);
  await kv.delete('node-8');
});

test('malformed messages get a DECODE error reply and the agent keeps serving', async (t) => {
  const nc = t.context.admin;
  const wire = createCodec(WireErrorSchema, 'error');
  const subject = Subjects.node('node-1', 'ping');
  const bad: Array<[string, Uint8Array]> = [
    ['garbage bytes', new Uint8Array([0xc1, 0xff, 0x00, 0x13])],
    ['truncated msgpack', pack({ from: 'x', sentAtMs: 5 }).subarray(0, 6)],
    ['wrong shape', pack({ from: 42, sentAtMs: 'soon' })],
    ['empty', new Uint8Array()],
  ];
  for (const [label, bytes] of bad) {
    const reply = await nc.request(subject, bytes, { timeout: 3000 });
    t.is(reply.headers?.get(Headers.error), '1', label);
    const err = wire.decode(reply.data);
    t.is(err.code, 'DECODE', label);
    t.false(err.message.includes('\n'), `${label}: one line`);
  }
  const wrongShape = await nc.request(subject, pack({ from: 42, sentAtMs: 1 }), { timeout: 3000 });
  t.regex(wire.decode(wrongShape.data).message, /field "from": expected string, got number/);
  const pong = await request(nc, subject, codecs.ping, codecs.pong, { from: 'after', sentAtMs: 2 });
  t.is(pong.node, 'node-1', 'the agent still answers after bad input');
});

test('request errors: typed rebuild on the caller, timeouts and missing responders', async (t) => {
  const nc = t.context.admin;
  const req = createCodec(PingRequest, 'ping');
  const res = createCodec(PingReply, 'pong');
  const sub = serve(nc, 'podmotion.v1.test.fail', req, res, async () => {
    throw new DecodeError('refused on purpose');
  });
  const silent = nc.subscribe('podmotion.v1.test.silent');
  try {
    const e1 = await t.throwsAsync(request(nc, 'podmotion.v1.test.fail', req, res, { from: 'a', sentAtMs: 0 }));
    t.true(e1 instanceof DecodeError);
    t.is(e1?.message, 'refused on purpose');
    const t0 = Date.now();
    const e2 = await t.throwsAsync(request(nc, 'podmotion.v1.test.silent', req, res, { from: 'a', sentAtMs: 0 }, { timeoutMs: 300 }));
    t.true(e2 instanceof TimeoutError, String(e2));
    t.true(Date.now() - t0 < 5000);
    const e3 = await t.throwsAsync(request(nc, 'podmotion.v1.test.nobody', req, res, { from: 'a', sentAtMs: 0 }, { timeoutMs: 2000 }));
    t.true(e3 instanceof NotFoundError, String(e3));
  } finally {
    sub.unsubscribe();
    silent.unsubscribe();
  }
});

test('stopping the embedded server ends its process and removes its store', async (t) => {
  const ids = t.context.ids.filter((i) => i.name === 'admin');
  const srv = await startEmbedded(ids, { detached: false });
  t.true(existsSync(srv.storeDir));
  await stopEmbedded(srv);
  t.false(existsSync(srv.storeDir));
  t.throws(() => process.kill(srv.pid, 0));
});
