// Unit tests for bus/schema.ts: inference, acceptance, one-line rejections with paths, and bounded work.
import test from 'ava';
import { DecodeError, ShapeError } from '../../bus/errors.js';
import * as schemaModule from '../../bus/schema.js';
import {
  arr, bool, bytes, check, literal, nullable, num, obj, optional, parse, record, str, union,
  type Infer, type Schema,
} from '../../bus/schema.js';

const Ping = obj({ type: literal('ping'), node: str(), sentAtMs: num(), tags: optional(arr(str())) });
type Ping = Infer<typeof Ping>;
const Pong = obj({ type: literal('pong'), node: str(), rttMs: num({ min: 0 }) });
const Msg = union(Ping, Pong);

// Compile-time checks: these lines fail `tsc` if inference breaks.
const withoutTags: Ping = { type: 'ping', node: 'n', sentAtMs: 1 };
// @ts-expect-error -- 'pong' is not a Ping type
const wrongLiteral: Ping = { type: 'pong', node: 'n', sentAtMs: 1 };
const narrowed = (m: Infer<typeof Msg>): number => (m.type === 'pong' ? m.rttMs : m.sentAtMs);
void wrongLiteral;

test('parse accepts a valid value, with and without optional fields, and keeps the inferred type', (t) => {
  const full = parse(Ping, { type: 'ping', node: 'node-1', sentAtMs: 17, tags: ['a', 'b'] });
  t.deepEqual(full, { type: 'ping', node: 'node-1', sentAtMs: 17, tags: ['a', 'b'] });
  const bare = parse(Ping, withoutTags);
  t.deepEqual(bare, withoutTags);
  t.false(Object.hasOwn(bare, 'tags'), 'absent optional stays absent');
  t.is(narrowed(parse(Msg, { type: 'pong', node: 'n', rttMs: 3 })), 3);
  t.is(narrowed(parse(Msg, { type: 'ping', node: 'n', sentAtMs: 9 })), 9);
});

test('unknown keys are dropped from the output and the input is left alone', (t) => {
  const input = { type: 'ping', node: 'n', sentAtMs: 1, addedInV2: true, nested: { x: 1 } };
  const out = parse(Ping, input);
  t.deepEqual(out, { type: 'ping', node: 'n', sentAtMs: 1 });
  t.not(out as unknown, input);
  t.true(Object.hasOwn(input, 'addedInV2'));
});

test('undefined-valued optional fields are omitted, nullable keeps null', (t) => {
  t.false(Object.hasOwn(parse(Ping, { type: 'ping', node: 'n', sentAtMs: 1, tags: undefined }), 'tags'));
  const S = obj({ owner: nullable(str()) });
  t.deepEqual(parse(S, { owner: null }), { owner: null });
  t.deepEqual(parse(S, { owner: 'me' }), { owner: 'me' });
});

test('record, bytes and literal unions accept what they should', (t) => {
  t.deepEqual(parse(record(num()), { a: 1, 'node-2': 2 }), { a: 1, 'node-2': 2 });
  const buf = Buffer.from([1, 2, 3]);
  t.is(parse(bytes(), buf), buf);
  t.deepEqual(parse(bytes(), new Uint8Array([9])), new Uint8Array([9]));
  t.is(parse(literal('a', 'b'), 'b'), 'b');
  t.is(parse(num({ int: true, min: 0, max: 10 }), 10), 10);
  t.is(parse(str({ minLength: 1, maxLength: 3, pattern: /^[a-z]+$/ }), 'abc'), 'abc');
  t.is(parse(bool(), false), false);
});

type Rejection = [title: string, schema: Schema<unknown>, value: unknown, message: string, path: string];

const Spec = obj({ spec: obj({ tags: arr(str()), labels: record(str()) }) });
const label = 'message podmotion.v1.node.node-1.ping';
const at = (path: string, problem: string): string => `${label}: field "${path}": ${problem}`;

const rejections: Rejection[] = [
  ['wrong leaf type', Ping, { type: 'ping', node: 7, sentAtMs: 1 }, at('node', 'expected string, got number'), 'node'],
  ['missing field', Ping, { type: 'ping', sentAtMs: 1 }, at('node', 'expected string, got undefined'), 'node'],
  ['root not an object', Ping, 'ping', `${label}: expected object, got string`, ''],
  ['root array', Ping, [], `${label}: expected object, got array`, ''],
  ['root null', Ping, null, `${label}: expected object, got null`, ''],
  ['root Date', Ping, new Date(0), `${label}: expected object, got Date`, ''],
  ['wrong literal', Ping, { type: 'pong', node: 'n', sentAtMs: 1 }, at('type', 'expected "ping", got "pong"'),
    'type'],
  ['NaN', Ping, { type: 'ping', node: 'n', sentAtMs: NaN }, at('sentAtMs', 'expected finite number, got NaN'), 'sentAtMs'],
  ['Infinity', num(), Infinity, `${label}: expected finite number, got Infinity`, ''],
  ['not an int', num({ int: true }), 1.5, `${label}: expected safe integer, got 1.5`, ''],
  ['below min', num({ min: 0 }), -1, `${label}: expected number >= 0, got -1`, ''],
  ['above max', num({ max: 5 }), 6, `${label}: expected number <= 5, got 6`, ''],
  ['bigint', num(), 5n, `${label}: expected finite number, got bigint`, ''],
  ['too short', str({ minLength: 2 }), 'a', `${label}: expected at least 2 characters, got 1`, ''],
  ['too long', str({ maxLength: 2 }), 'abc', `${label}: expected at most 2 characters, got 3`, ''],
  ['pattern', str({ pattern: /^\d+$/ }), 'x1', `${label}: expected string matching /^\\d+$/, got "x1"`, ''],
  ['bool', bool(), 'true', `${label}: expected boolean, got string`, ''],
  ['array item', Spec, { spec: { tags: ['a', 'b', 3], labels: {} } },
    at('spec.tags[2]', 'expected string, got number'), 'spec.tags[2]'],
  ['array type', Spec, { spec: { tags: 'a', labels: {} } }, at('spec.tags', 'expected array, got string'), 'spec.tags'],
  ['too many items', arr(num(), { maxItems: 2 }), [1, 2, 3], `${label}: expected at most 2 items, got 3`, ''],
  ['record value', Spec, { spec: { tags: [], labels: { app: 'x', tier: false } } },
    at('spec.labels.tier', 'expected string, got boolean'), 'spec.labels.tier'],
  ['too many keys', record(num(), { maxKeys: 1 }), { a: 1, b: 2 }, `${label}: expected at most 1 keys, got 2`, ''],
  ['record Map', record(num()), new Map(), `${label}: expected object, got Map`, ''],
  ['__proto__ key', record(num()), JSON.parse('{"__proto__": 1}'), at('__proto__', 'key "__proto__" is not allowed'),
    '__proto__'],
  ['optional is not nullable', Ping, { type: 'ping', node: 'n', sentAtMs: 1, tags: null },
    at('tags', 'expected array, got null'), 'tags'],
  ['nullable is not optional', nullable(str()), undefined, `${label}: expected string, got undefined`, ''],
  ['union unknown type', Msg, { type: 'pang' }, at('type', 'expected "ping" | "pong", got "pang"'), 'type'],
  ['union missing type', Msg, {}, at('type', 'expected "ping" | "pong", got undefined'), 'type'],
  ['union branch field', Msg, { type: 'pong', node: 'n', rttMs: -1 }, at('rttMs', 'expected number >= 0, got -1'),
    'rttMs'],
  ['bytes', bytes(), 'AQID', `${label}: expected bytes, got string`, ''],
  ['bytes too long', bytes({ maxBytes: 2 }), new Uint8Array(3), `${label}: expected at most 2 bytes, got 3`, ''],
  ['inherited field', obj({ constructor: str() }), {}, at('constructor', 'expected string, got undefined'),
    'constructor'],
];

for (const [title, schema, value, message, path] of rejections) {
  test(`rejects: ${title}`, (t) => {
    const err = t.throws(() => parse(schema, value, label), { instanceOf: ShapeError });
    t.is(err.message, message);
    t.is(err.path, path);
    t.is(err.code, 'DECODE');
    t.true(err instanceof DecodeError);
    const result = check(schema, value, label);
    t.false(result.ok);
    if (!result.ok) t.is(result.error.message, message);
  });
}

test('check returns ok with the parsed value, and parse labels default to "value"', (t) => {
  t.deepEqual(check(Pong, { type: 'pong', node: 'n', rttMs: 1, extra: 1 }), {
    ok: true,
    value: { type: 'pong', node: 'n', rttMs: 1 },
  });
  t.throws(() => parse(str(), 1), { message: 'value: expected string, got number' });
});

test('hostile strings and keys are clipped so the message stays one short line', (t) => {
  const longKey = 'k'.repeat(10_000);
  const err = t.throws(() => parse(record(num()), { [longKey]: 'x' }), { instanceOf: ShapeError });
  t.true(err.message.length < 200, err.message);
  t.true(err.message.startsWith(`value: field "${'k'.repeat(64)}…": expected finite number, got string`));
  const lit = t.throws(() => parse(literal('a'), `evil\n${'x'.repeat(10_000)}`), { instanceOf: ShapeError });
  t.false(lit.message.includes('\n'));
  t.true(lit.message.length < 200, lit.message);
});

test('duplicate union tags are a definition error', (t) => {
  t.throws(() => union(Ping, obj({ type: literal('ping', 'other') })), {
    instanceOf: TypeError,
    message: 'union: type "ping" appears in two branches',
  });
});

test('deep input nesting costs only as much as the schema is deep', (t) => {
  let deep: unknown = 'leaf';
  for (let i = 0; i < 200_000; i++) deep = [deep];
  const err = t.throws(() => parse(arr(arr(str())), deep), { instanceOf: ShapeError });
  t.is(err.message, 'value: field "[0][0]": expected string, got array');
});

test('oversized arrays are refused before any item is read', (t) => {
  let itemReads = 0;
  const huge = new Proxy(new Array<number>(1_000_000).fill(0), {
    get(target, key, receiver) {
      if (typeof key === 'string' && /^\d+$/.test(key)) itemReads++;
      return Reflect.get(target, key, receiver) as unknown;
    },
  });
  t.throws(() => parse(arr(num()), huge), { message: 'value: expected at most 10000 items, got 1000000' });
  t.is(itemReads, 0);
});

test('objects read only the keys their shape names', (t) => {
  const source: Record<string, unknown> = { type: 'ping', node: 'n', sentAtMs: 1 };
  for (let i = 0; i < 50_000; i++) source[`junk${i}`] = i;
  const touched = new Set<PropertyKey>();
  const spy = new Proxy(source, {
    get(target, key, receiver) {
      touched.add(key);
      return Reflect.get(target, key, receiver) as unknown;
    },
    ownKeys(target) {
      touched.add('<ownKeys>');
      return Reflect.ownKeys(target);
    },
  });
  t.deepEqual(parse(Ping, spy), { type: 'ping', node: 'n', sentAtMs: 1 });
  t.deepEqual([...touched].sort(), ['node', 'sentAtMs', 'type']);
});

test('json accepts JSON values and bounds depth, size and strings', (t) => {
  const { json, parse } = schemaModule;
  const v = { a: [1, 'x', null, true, { b: 2.5 }], c: {} };
  t.deepEqual(parse(json(), v), v);
  let deep: unknown = 1;
  for (let i = 0; i < 40; i++) deep = [deep];
  t.throws(() => parse(json(), deep), { message: /nested at most 16 deep/ });
  t.throws(() => parse(json({ maxValues: 10 }), Array.from({ length: 20 }, () => 0)), { message: /at most 10 JSON values/ });
  t.throws(() => parse(json({ maxStringLength: 3 }), 'abcd'), { message: /at most 3 characters/ });
  t.throws(() => parse(json(), { x: Number.NaN }), { message: /field "x": expected a finite number/ });
  t.throws(() => parse(json(), { d: new Date(0) }), { message: /expected JSON, got Date/ });
});
