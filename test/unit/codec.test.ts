// Unit tests for bus/codec.ts: round trips, and every way hostile bytes can arrive ending in a DecodeError.
import test from 'ava';
import { Packr } from 'msgpackr';
import { createCodec, DEFAULT_MAX_MESSAGE_BYTES } from '../../bus/codec.js';
import {
  CriuError, DecodeError, fromWire, InternalError, MAX_LOG_TAIL_CHARS, MAX_WIRE_MESSAGE_CHARS, ShapeError, toWire,
} from '../../bus/errors.js';
import { arr, bool, bytes, literal, num, obj, optional, record, str, union } from '../../bus/schema.js';

const Ping = obj({ type: literal('ping'), node: str(), sentAtMs: num(), tags: optional(arr(str())) });
const Snapshot = obj({
  type: literal('snapshot'),
  pages: bytes(),
  labels: record(str()),
  slots: arr(optional(str())),
});
// The limits are toWire's own, so anything toWire produces must encode.
const WireError = obj({
  code: str({ maxLength: 64 }),
  message: str({ maxLength: MAX_WIRE_MESSAGE_CHARS }),
  retryable: bool(),
  details: optional(record(str({ maxLength: MAX_LOG_TAIL_CHARS }), { maxKeys: 16 })),
});
const Reply = union(
  obj({ type: literal('ok'), value: num() }),
  obj({ type: literal('error'), error: WireError }),
);

const ping = createCodec(Ping, 'test.ping');
// A plain msgpack encoder, standing in for a peer that sends whatever it likes.
const peer = new Packr({ useRecords: false });

/** Asserts a DecodeError with a one-line message naming the codec, and returns it. */
function decodeFails(t: import('ava').ExecutionContext, data: Uint8Array): DecodeError {
  const err = t.throws(() => ping.decode(data), { instanceOf: DecodeError });
  t.true(err.message.startsWith('message test.ping: '), err.message);
  t.false(err.message.includes('\n'), err.message);
  t.true(err.message.length < 300, err.message);
  return err;
}

test('round trip keeps every field and its type', (t) => {
  const value = { type: 'ping' as const, node: 'node-1', sentAtMs: 1_732_000_000_123, tags: ['a', 'ü'] };
  const encoded = ping.encode(value);
  t.true(encoded instanceof Uint8Array);
  t.deepEqual(ping.decode(encoded), value);
  t.deepEqual(ping.decode(ping.encode({ type: 'ping', node: '', sentAtMs: -0.5 })), {
    type: 'ping', node: '', sentAtMs: -0.5,
  });
});

test('bytes, records and undefined array slots round trip as plain values', (t) => {
  const codec = createCodec(Snapshot, 'test.snapshot');
  const pages = new Uint8Array([0, 255, 7]);
  const value = { type: 'snapshot' as const, pages, labels: { app: 'web' }, slots: ['a', undefined] };
  const encoded = codec.encode(value);
  const decoded = codec.decode(encoded);
  t.deepEqual([...decoded.pages], [0, 255, 7]);
  t.deepEqual(Object.getPrototypeOf(decoded.labels), Object.prototype);
  t.deepEqual(decoded.labels, { app: 'web' });
  t.deepEqual(decoded.slots, ['a', undefined]);
  encoded.fill(0); // copyBuffers: the decoded bytes must not be a view into the payload
  t.deepEqual([...decoded.pages], [0, 255, 7]);
});

test('encode returns a standalone buffer, not a view into a shared slab', (t) => {
  const a = ping.encode({ type: 'ping', node: 'a', sentAtMs: 1 });
  const b = ping.encode({ type: 'ping', node: 'b', sentAtMs: 2 });
  t.is(a.byteOffset, 0);
  t.is(a.buffer.byteLength, a.byteLength);
  t.not(a.buffer, b.buffer);
  t.is(ping.decode(a).node, 'a');
});

test('unknown keys are dropped on both sides', (t) => {
  const fromNewerPeer = peer.pack({ type: 'ping', node: 'n', sentAtMs: 1, addedLater: { deep: true } });
  t.deepEqual(ping.decode(fromNewerPeer), { type: 'ping', node: 'n', sentAtMs: 1 });
  const sloppy = { type: 'ping', node: 'n', sentAtMs: 1, secret: 'x' } as Parameters<typeof ping.encode>[0];
  t.deepEqual(peer.unpack(ping.encode(sloppy)), { type: 'ping', node: 'n', sentAtMs: 1 });
});

test('encode rejects a value that breaks the schema, naming the field', (t) => {
  const bad = { type: 'ping', node: 42, sentAtMs: 1 } as unknown as Parameters<typeof ping.encode>[0];
  const err = t.throws(() => ping.encode(bad), { instanceOf: InternalError });
  t.is(err.message, 'cannot encode message test.ping: field "node": expected string, got number');
  t.true(err.cause instanceof ShapeError);
  t.throws(() => ping.encode({ type: 'ping', node: 'n', sentAtMs: new Date() as unknown as number }), {
    instanceOf: InternalError,
    message: /field "sentAtMs": expected finite number, got Date/,
  });
});

test('encode refuses to produce a payload over the limit', (t) => {
  const small = createCodec(Ping, 'test.small', { maxBytes: 64 });
  t.notThrows(() => small.encode({ type: 'ping', node: 'n', sentAtMs: 1 }));
  t.throws(() => small.encode({ type: 'ping', node: 'x'.repeat(100), sentAtMs: 1 }), {
    instanceOf: InternalError,
    message: /^cannot encode message test\.small: \d+ bytes exceeds the 64-byte limit$/,
  });
});

test('a valid msgpack of the wrong shape is a ShapeError naming the path', (t) => {
  const err = decodeFails(t, peer.pack({ type: 'ping', node: 7, sentAtMs: 1 }));
  t.true(err instanceof ShapeError);
  t.is(err.message, 'message test.ping: field "node": expected string, got number');
  t.is(decodeFails(t, peer.pack('ping')).message, 'message test.ping: expected object, got string');
  t.is(decodeFails(t, peer.pack({ type: 'ping', node: 'n', sentAtMs: new Date(0) })).message,
    'message test.ping: field "sentAtMs": expected finite number, got Date');
});

test('64-bit integers decode to numbers when safe and are rejected when not', (t) => {
  // map { type: 'ping', node: 'n', sentAtMs: <int64> }: a Go peer's fixed-width int64
  const withInt64 = (hi: number, lo: number): Buffer => {
    const int64 = Buffer.alloc(9);
    int64[0] = 0xd3;
    int64.writeUInt32BE(hi, 1);
    int64.writeUInt32BE(lo, 5);
    const fields = ['type', 'ping', 'node', 'n', 'sentAtMs'].map((s) => peer.pack(s));
    return Buffer.concat([Buffer.from([0x83]), ...fields, int64]); // 0x83: fixmap of three pairs
  };
  t.is(ping.decode(withInt64(0, 1000)).sentAtMs, 1000);
  t.is(decodeFails(t, withInt64(0x7fffffff, 0)).message,
    'message test.ping: field "sentAtMs": expected finite number, got bigint');
});

test('garbage bytes are a DecodeError', (t) => {
  const cases: [string, number[]][] = [
    ['never-used byte 0xc1', [0xc1]],
    ['trailing bytes', [0x01, 0x02]],
    ['text', [...Buffer.from('hello world')]],
    ['array32 claiming 4 billion items', [0xdd, 0xff, 0xff, 0xff, 0xff]],
    ['map32 claiming 4 billion keys', [0xdf, 0xff, 0xff, 0xff, 0xff]],
    ['str32 longer than the payload', [0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61]],
  ];
  for (const [title, bytesIn] of cases) {
    const err = decodeFails(t, Uint8Array.from(bytesIn));
    t.truthy(err.message, title);
  }
  t.is(decodeFails(t, new Uint8Array(0)).message, 'message test.ping: empty payload');
});

test('seeded random bytes never escape as anything but DecodeError', (t) => {
  const seed = Number(process.env.SEED ?? 0x5eed);
  t.log(`seed ${seed}`);
  let state = seed >>> 0 || 1;
  const next = (): number => {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    return state;
  };
  for (let i = 0; i < 500; i++) {
    const data = new Uint8Array(1 + (next() % 64)).map(() => next() & 0xff);
    const err = t.throws(() => ping.decode(data), { instanceOf: DecodeError }, `case ${i}`);
    t.true(err.message.startsWith('message test.ping: '));
  }
});

test('every truncation of a valid encoding is a DecodeError', (t) => {
  const full = ping.encode({ type: 'ping', node: 'node-1', sentAtMs: 1.5, tags: ['a', 'bb'] });
  for (let end = 1; end < full.length; end++) {
    const err = decodeFails(t, full.subarray(0, end));
    t.false(err instanceof ShapeError, `prefix of ${end} bytes: ${err.message}`);
  }
});

test('oversized input is refused before it is parsed', (t) => {
  const small = createCodec(Ping, 'test.small', { maxBytes: 32 });
  const valid = small.encode({ type: 'ping', node: 'n', sentAtMs: 1 });
  const padded = peer.pack({ type: 'ping', node: 'n'.repeat(40), sentAtMs: 1 });
  t.true(padded.length > 32 && valid.length <= 32);
  t.throws(() => small.decode(padded), {
    instanceOf: DecodeError,
    message: `message test.small: ${padded.length} bytes exceeds the 32-byte limit`,
  });
  const huge = new Uint8Array(DEFAULT_MAX_MESSAGE_BYTES + 1);
  t.is(decodeFails(t, huge).message, `message test.ping: ${huge.length} bytes exceeds the 8388608-byte limit`);
});

test('absurdly deep nesting is a DecodeError and leaves the codec usable', (t) => {
  const deep = new Uint8Array(4_000_000).fill(0x91); // fixarray of one element, nested
  deep[deep.length - 1] = 0xc0;
  const err = decodeFails(t, deep);
  t.regex(err.message, /not valid msgpack/);
  t.deepEqual(ping.decode(ping.encode({ type: 'ping', node: 'n', sentAtMs: 1 })).node, 'n');
});

test('non-bytes input is a DecodeError, not a TypeError', (t) => {
  const err = t.throws(() => ping.decode('abc' as unknown as Uint8Array), { instanceOf: DecodeError });
  t.is(err.message, 'message test.ping: expected bytes, got string');
});

test('an error rides inside a reply and comes back as its class', (t) => {
  const replies = createCodec(Reply, 'test.reply');
  const sent = new CriuError('restore failed', { logTail: 'Error (criu/cr-restore.c:123): no such file' });
  const decoded = replies.decode(replies.encode({ type: 'error', error: toWire(sent) }));
  if (decoded.type !== 'error') return t.fail('expected an error reply');
  const rebuilt = fromWire(decoded.error);
  t.true(rebuilt instanceof CriuError);
  t.is(rebuilt.message, 'restore failed');
  t.is((rebuilt as CriuError).logTail, sent.logTail);
});
