// Typed msgpack codecs: every message is checked against its schema on the way out (to catch sender bugs where
// they are made) and on the way in (because the bytes come from another process).
import { Packr, type Options } from 'msgpackr';
import { DecodeError, InternalError, oneLine } from './errors.js';
import { check, type Schema } from './schema.js';

/** Encodes and decodes one message type. */
export interface Codec<T> {
  /** The name used in every error message, e.g. `podmotion.v1.node.ping`. */
  readonly name: string;
  /** Check and encode; throws InternalError if `value` breaks the schema or the size limit (a sender bug). */
  encode(value: T): Uint8Array;
  /** Decode and check; throws only DecodeError (ShapeError for a wrong shape), whatever the bytes. */
  decode(data: Uint8Array): T;
}

/** Per-codec limits. */
export interface CodecOptions {
  /** Largest payload accepted by decode and produced by encode; default {@link DEFAULT_MAX_MESSAGE_BYTES}. */
  maxBytes?: number;
}

/** 8 MiB: nats-server warns above an 8 MB max_payload (default 1 MB); bigger data belongs in object storage. */
export const DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

/** Longest msgpackr diagnostic kept in a DecodeError; its "end of buffer not reached" text echoes data. */
const MAX_CAUSE_CHARS = 160;

// The Packr options, each chosen so a message means the same thing to every peer:
// - useRecords: false — objects go out as standard msgpack maps, not msgpackr's record extension, so non-JS
//   peers can read them and no structure state is shared between messages.
// - mapsAsObjects: true — incoming maps become plain objects (never Map), which is what obj() and record() check.
// - moreTypes: false — Set, Map, Error and typed arrays are not given msgpackr extensions on the way out; the
//   schema would reject them anyway, and a wire type no other decoder knows is a trap.
// - encodeUndefinedAsNil: false — undefined keeps msgpackr's own encoding, so arr(optional(x)) round-trips instead
//   of coming back as null; obj() already drops undefined fields, so absent fields are absent on the wire.
// - copyBuffers: true — bytes() values are copies, not views that pin (and alias) the whole received payload.
// - int64AsType 'auto' — a peer's int64/uint64 decodes to a number when it fits in 53 bits and to a bigint
//   otherwise, which num() rejects: loud, instead of the silent rounding of 'number'.
// Dates have no schema combinator: times travel as epoch-millisecond numbers (`...Ms` fields), so a Date fails
// the schema before it is encoded, and a peer's msgpack timestamp (decoded to a Date) fails it on arrival.
const PACKR_OPTIONS = {
  useRecords: false,
  mapsAsObjects: true,
  moreTypes: false,
  encodeUndefinedAsNil: false,
  copyBuffers: true,
  // msgpackr 2.1 implements 'auto' but its typings list only 'bigint' | 'number' | 'string'.
  int64AsType: 'auto' as Options['int64AsType'],
} satisfies Options;

// One instance serves every codec: with records off it holds no per-type state.
const packr = new Packr(PACKR_OPTIONS);

function clipped(text: string): string {
  return text.length <= MAX_CAUSE_CHARS ? text : `${text.slice(0, MAX_CAUSE_CHARS)}…`;
}

/**
 * Make a codec for `schema`. `name` appears in every error, so use the message's subject-like name.
 * Encode returns a fresh, exactly-sized Uint8Array; decode returns a value holding only schema keys.
 */
export function createCodec<T>(schema: Schema<T>, name: string, options: CodecOptions = {}): Codec<T> {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const label = `message ${name}`;

  function encode(value: T): Uint8Array {
    const checked = check(schema, value, `cannot encode ${label}`);
    if (!checked.ok) throw new InternalError(checked.error.message, { cause: checked.error });
    let packed: Uint8Array;
    try {
      // Copy: msgpackr returns a view into a shared 8 KiB slab that also holds other messages' bytes.
      packed = new Uint8Array(packr.pack(checked.value));
    } catch (err) {
      throw new InternalError(`cannot encode ${label}: ${clipped(oneLine(err))}`, { cause: err });
    }
    if (packed.byteLength > maxBytes) {
      throw new InternalError(`cannot encode ${label}: ${packed.byteLength} bytes exceeds the ${maxBytes}-byte limit`);
    }
    return packed;
  }

  function decode(data: Uint8Array): T {
    // Checked at run time too: callers in plain JS, or with `any` from a transport, can hand us anything.
    if (!((data as unknown) instanceof Uint8Array)) {
      throw new DecodeError(`${label}: expected bytes, got ${data === null ? 'null' : typeof data}`);
    }
    if (data.byteLength > maxBytes) {
      throw new DecodeError(`${label}: ${data.byteLength} bytes exceeds the ${maxBytes}-byte limit`);
    }
    if (data.byteLength === 0) throw new DecodeError(`${label}: empty payload`);
    let raw: unknown;
    try {
      raw = packr.unpack(data);
    } catch (err) {
      // Includes stack overflow (RangeError) from absurdly nested input; msgpackr resets its state after it.
      throw new DecodeError(`${label}: not valid msgpack (${clipped(oneLine(err))})`, { cause: err });
    }
    const checked = check(schema, raw, label);
    if (!checked.ok) throw checked.error;
    return checked.value;
  }

  return { name, encode, decode };
}
