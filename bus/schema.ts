// A tiny runtime shape checker with static type inference, for messages that arrive from other processes.
//
// Work is bounded by the schema, not the input: checking follows the schema's own nesting (schemas cannot be
// recursive), objects read only the keys their shape names, and arrays and records are length-checked before
// any element is visited. Unknown object keys are dropped rather than rejected, so a peer one version ahead
// can add a field without breaking older readers; the output never carries keys the schema does not know.
import { ShapeError } from './errors.js';

type PathSegment = string | number;

/** A runtime check that also carries its static type `T`. Build with the combinators below. */
export interface Schema<T> {
  /** Returns the checked (and possibly copied) value; reports a mismatch by throwing. Call via parse()/check(). */
  readonly run: (value: unknown, path: PathSegment[]) => T;
}

/** A schema whose key may be absent from an enclosing {@link obj}. */
export interface OptionalSchema<T> extends Schema<T | undefined> {
  readonly optional: true;
}

/** A string-literal union; `values` lets {@link union} index branches by their `type`. */
export interface LiteralSchema<V extends string> extends Schema<V> {
  readonly values: readonly V[];
}

/** The static type a schema checks for: `type Ping = Infer<typeof Ping>`. */
export type Infer<S extends Schema<unknown>> = S extends Schema<infer T> ? T : never;

type Shape = Record<string, Schema<unknown>>;
type OptionalKeys<S extends Shape> = { [K in keyof S]: S[K] extends OptionalSchema<unknown> ? K : never }[keyof S];
type Simplify<T> = { [K in keyof T]: T[K] } & {};
type ObjType<S extends Shape> = Simplify<
  { [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]> } & { [K in OptionalKeys<S>]?: Infer<S[K]> }
>;

/** An object schema; `shape` is kept so {@link union} can read each branch's `type` literal. */
export interface ObjSchema<S extends Shape> extends Schema<ObjType<S>> {
  readonly shape: S;
}

/** An object schema with a `type` literal, usable as a {@link union} branch. */
export interface TaggedSchema extends Schema<{ type: string }> {
  readonly shape: { readonly type: LiteralSchema<string> };
}

/** Default cap on array items and record keys; a message with more is hostile or a bug. */
export const DEFAULT_MAX_ITEMS = 10_000;

/** Thrown inside `run`; parse() turns it into a one-line ShapeError. Not exported: callers see ShapeError. */
class Mismatch {
  constructor(readonly path: readonly PathSegment[], readonly problem: string) {}
}

function fail(path: readonly PathSegment[], problem: string): never {
  throw new Mismatch([...path], problem);
}

/** Clip hostile strings before they reach a message, which must stay one short line. */
function clip(text: string, maxChars = 40): string {
  const short = text.length <= maxChars ? text : `${text.slice(0, maxChars)}…`;
  return JSON.stringify(short);
}

/** Names what was received without echoing it: a type, never the value itself. */
function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  if (typeof value !== 'object') return typeof value;
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) return 'object';
  const ctor = (value as { constructor?: { name?: unknown } }).constructor;
  return typeof ctor?.name === 'string' && ctor.name !== '' ? ctor.name : 'object';
}

function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : out === '' ? seg : `.${seg}`;
  return out;
}

/** Record keys come from the sender; clip them so the message stays one short line. */
function clipSegment(seg: PathSegment): PathSegment {
  return typeof seg === 'string' && seg.length > 64 ? `${seg.slice(0, 64)}…` : seg;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** A string, optionally bounded in length (UTF-16 units) and matched against `pattern` (after the length check). */
export function str(opts: { minLength?: number; maxLength?: number; pattern?: RegExp } = {}): Schema<string> {
  return {
    run(value, path) {
      if (typeof value !== 'string') fail(path, `expected string, got ${typeName(value)}`);
      if (opts.minLength !== undefined && value.length < opts.minLength) {
        fail(path, `expected at least ${opts.minLength} characters, got ${value.length}`);
      }
      // Length first: it bounds the input a pattern ever sees.
      if (opts.maxLength !== undefined && value.length > opts.maxLength) {
        fail(path, `expected at most ${opts.maxLength} characters, got ${value.length}`);
      }
      if (opts.pattern !== undefined && !opts.pattern.test(value)) {
        fail(path, `expected string matching ${String(opts.pattern)}, got ${clip(value)}`);
      }
      return value;
    },
  };
}

/** A finite number (NaN and ±Infinity are rejected), optionally an integer within [min, max]. */
export function num(opts: { int?: boolean; min?: number; max?: number } = {}): Schema<number> {
  return {
    run(value, path) {
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        fail(path, `expected finite number, got ${typeName(value)}`);
      }
      if (opts.int === true && !Number.isSafeInteger(value)) fail(path, `expected safe integer, got ${value}`);
      if (opts.min !== undefined && value < opts.min) fail(path, `expected number >= ${opts.min}, got ${value}`);
      if (opts.max !== undefined && value > opts.max) fail(path, `expected number <= ${opts.max}, got ${value}`);
      return value;
    },
  };
}

/** A boolean. */
export function bool(): Schema<boolean> {
  return {
    run(value, path) {
      if (typeof value !== 'boolean') fail(path, `expected boolean, got ${typeName(value)}`);
      return value;
    },
  };
}

/** One of the given strings; the static type is their union. */
export function literal<V extends string>(first: V, ...rest: V[]): LiteralSchema<V> {
  const values: readonly V[] = [first, ...rest];
  const expected = values.map((v) => JSON.stringify(v)).join(' | ');
  return {
    values,
    run(value, path) {
      if (typeof value !== 'string') fail(path, `expected ${expected}, got ${typeName(value)}`);
      if (!(values as readonly string[]).includes(value)) fail(path, `expected ${expected}, got ${clip(value)}`);
      return value as V;
    },
  };
}

/** An array of `item`, at most `maxItems` long (default {@link DEFAULT_MAX_ITEMS}), checked before any item. */
export function arr<T>(item: Schema<T>, opts: { maxItems?: number } = {}): Schema<T[]> {
  const maxItems = opts.maxItems ?? DEFAULT_MAX_ITEMS;
  return {
    run(value, path) {
      if (!Array.isArray(value)) fail(path, `expected array, got ${typeName(value)}`);
      if (value.length > maxItems) fail(path, `expected at most ${maxItems} items, got ${value.length}`);
      const out: T[] = [];
      for (let i = 0; i < value.length; i++) {
        path.push(i);
        out.push(item.run(value[i], path));
        path.pop();
      }
      return out;
    },
  };
}

/**
 * A plain object with the given fields. Unknown keys are dropped, not rejected (version skew: see the top of
 * this file). Fields wrapped in {@link optional} may be absent; absent or undefined optionals are left out.
 */
export function obj<S extends Shape>(shape: S): ObjSchema<S> {
  const keys = Object.keys(shape);
  return {
    shape,
    run(value, path) {
      if (!isPlainObject(value)) fail(path, `expected object, got ${typeName(value)}`);
      const out: Record<string, unknown> = {};
      for (const key of keys) {
        // hasOwn: a field named like an Object.prototype member ("constructor") must not read the prototype.
        const field = Object.hasOwn(value, key) ? value[key] : undefined;
        path.push(key);
        const checked = (shape[key] as Schema<unknown>).run(field, path);
        path.pop();
        if (checked !== undefined) out[key] = checked;
      }
      return out as ObjType<S>;
    },
  };
}

/** Allows `undefined`; inside {@link obj} it makes the key optional in the inferred type too. */
export function optional<T>(schema: Schema<T>): OptionalSchema<T> {
  return {
    optional: true,
    run: (value, path) => (value === undefined ? undefined : schema.run(value, path)),
  };
}

/** Allows `null` (which msgpack and JSON both carry, unlike `undefined`). */
export function nullable<T>(schema: Schema<T>): Schema<T | null> {
  return { run: (value, path) => (value === null ? null : schema.run(value, path)) };
}

/** A string-keyed map as a plain object, at most `maxKeys` keys (default {@link DEFAULT_MAX_ITEMS}). */
export function record<T>(valueSchema: Schema<T>, opts: { maxKeys?: number } = {}): Schema<Record<string, T>> {
  const maxKeys = opts.maxKeys ?? DEFAULT_MAX_ITEMS;
  return {
    run(value, path) {
      if (!isPlainObject(value)) fail(path, `expected object, got ${typeName(value)}`);
      const keys = Object.keys(value);
      if (keys.length > maxKeys) fail(path, `expected at most ${maxKeys} keys, got ${keys.length}`);
      const out: Record<string, T> = {};
      for (const key of keys) {
        path.push(key);
        // Assigning "__proto__" on a plain object would replace its prototype instead of adding a key.
        if (key === '__proto__') fail(path, 'key "__proto__" is not allowed');
        out[key] = valueSchema.run(value[key], path);
        path.pop();
      }
      return out;
    },
  };
}

/**
 * One of several {@link obj} schemas, chosen by the value's `type` field; only that branch is checked, so the
 * error names the real problem instead of listing every branch's. Duplicate `type` values are a bug: TypeError.
 */
export function union<B extends readonly [TaggedSchema, ...TaggedSchema[]]>(...branches: B): Schema<Infer<B[number]>> {
  const byType = new Map<string, TaggedSchema>();
  for (const branch of branches) {
    for (const tag of branch.shape.type.values) {
      if (byType.has(tag)) throw new TypeError(`union: type ${JSON.stringify(tag)} appears in two branches`);
      byType.set(tag, branch);
    }
  }
  const expected = [...byType.keys()].map((t) => JSON.stringify(t)).join(' | ');
  return {
    run(value, path) {
      if (!isPlainObject(value)) fail(path, `expected object, got ${typeName(value)}`);
      const tag = Object.hasOwn(value, 'type') ? value.type : undefined;
      const branch = typeof tag === 'string' ? byType.get(tag) : undefined;
      if (branch === undefined) {
        const got = typeof tag === 'string' ? clip(tag) : typeName(tag);
        fail([...path, 'type'], `expected ${expected}, got ${got}`);
      }
      return branch.run(value, path) as Infer<B[number]>;
    },
  };
}

/** Binary data: a Uint8Array (Node's Buffer is one), at most `maxBytes` long if given. Returned as is. */
export function bytes(opts: { maxBytes?: number } = {}): Schema<Uint8Array> {
  return {
    run(value, path) {
      if (!(value instanceof Uint8Array)) fail(path, `expected bytes, got ${typeName(value)}`);
      if (opts.maxBytes !== undefined && value.byteLength > opts.maxBytes) {
        fail(path, `expected at most ${opts.maxBytes} bytes, got ${value.byteLength}`);
      }
      return value;
    },
  };
}

/** A JSON value (null, boolean, finite number, string, array, plain object). */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/**
 * Free-form JSON data, such as a phase's result record. The one schema whose work follows the input, so
 * it is bounded three ways: nesting depth, total number of values visited, and string length.
 */
export function json(opts: { maxDepth?: number; maxValues?: number; maxStringLength?: number } = {}): Schema<JsonValue> {
  const maxDepth = opts.maxDepth ?? 16;
  const maxValues = opts.maxValues ?? DEFAULT_MAX_ITEMS;
  const maxString = opts.maxStringLength ?? 65_536;
  return {
    run(value, path) {
      let visited = 0;
      const walk = (v: unknown, p: PathSegment[], depth: number): JsonValue => {
        if (++visited > maxValues) fail(p, `expected at most ${maxValues} JSON values`);
        if (v === null || typeof v === 'boolean') return v;
        if (typeof v === 'number') {
          if (!Number.isFinite(v)) fail(p, `expected a finite number, got ${typeName(v)}`);
          return v;
        }
        if (typeof v === 'string') {
          if (v.length > maxString) fail(p, `expected at most ${maxString} characters, got ${v.length}`);
          return v;
        }
        if (depth >= maxDepth) fail(p, `expected JSON nested at most ${maxDepth} deep`);
        if (Array.isArray(v)) return v.map((x, i) => walk(x, [...p, i], depth + 1));
        if (!isPlainObject(v)) fail(p, `expected JSON, got ${typeName(v)}`);
        const out: Record<string, JsonValue> = {};
        for (const [k, x] of Object.entries(v)) {
          if (k === '__proto__') fail(p, 'expected no "__proto__" key');
          if (x !== undefined) out[k] = walk(x, [...p, clipSegment(k)], depth + 1);
        }
        return out;
      };
      return walk(value, path, 0);
    },
  };
}

/** The outcome of {@link check}. */
export type CheckResult<T> = { ok: true; value: T } | { ok: false; error: ShapeError };

/**
 * Check `value` against `schema` without throwing. `label` starts the error message and should say what was
 * being checked, e.g. `message podmotion.v1.node.node-1.ping`.
 */
export function check<T>(schema: Schema<T>, value: unknown, label = 'value'): CheckResult<T> {
  try {
    return { ok: true, value: schema.run(value, []) };
  } catch (err) {
    if (!(err instanceof Mismatch)) throw err;
    const path = formatPath(err.path.map(clipSegment));
    const where = path === '' ? '' : ` field ${JSON.stringify(path)}:`;
    return { ok: false, error: new ShapeError(`${label}:${where} ${err.problem}`, { path }) };
  }
}

/**
 * Return `value` typed as the schema's type (a copy without unknown keys), or throw a {@link ShapeError} whose
 * one-line message names `label`, the path and the problem.
 */
export function parse<T>(schema: Schema<T>, value: unknown, label = 'value'): T {
  const result = check(schema, value, label);
  if (!result.ok) throw result.error;
  return result.value;
}
