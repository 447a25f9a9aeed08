// The PodMotion error model: one class per failure mode, each with a stable code and a retryable flag, so a
// caller decides what to do from the class (or, across the bus, the code) and never from message text.

/** Every error code that can cross the bus; `as const` so the list and the union stay in step. */
export const ERROR_CODES = [
  'DECODE',
  'TIMEOUT',
  'NOT_FOUND',
  'INVALID_REQUEST',
  'CONFLICT',
  'PRECONDITION',
  'CRIU',
  'NODE_OP',
  'INTERNAL',
] as const;

/** One of {@link ERROR_CODES}. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** How an error travels across the bus. `code` is a plain string: a newer peer may send a code we don't know. */
export interface WireError {
  code: string;
  message: string;
  retryable: boolean;
  /** Class-specific extras as strings, e.g. `logTail` for CRIU failures or `path` for shape errors. */
  details?: Record<string, string>;
}

/** Options common to every PodMotion error; `retryable` overrides the class default (e.g. a peer's own verdict). */
export interface PodMotionErrorOptions extends ErrorOptions {
  retryable?: boolean;
}

/** A message this long already says what went wrong; more only crowds a reply and a terminal line. */
export const MAX_WIRE_MESSAGE_CHARS = 4096;
/** CRIU logs run to megabytes and the failure is at the end; keep only the tail so the error fits in a reply. */
export const MAX_LOG_TAIL_CHARS = 16_384;

/** Base class of every PodMotion error. Subclasses fix `code`, `name` and the default `retryable`. */
export abstract class PodMotionError extends Error {
  abstract readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(message: string, options: PodMotionErrorOptions | undefined, retryableByDefault: boolean) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.retryable = options?.retryable ?? retryableByDefault;
  }
}

// `name` is set on each prototype (not as an instance field) so it is already in place when V8 formats the
// stack header inside the Error constructor, and stays out of the instance's own enumerable keys.

/** Bytes that are not a valid message: bad msgpack, over the size limit, or the wrong shape. */
export class DecodeError extends PodMotionError {
  static { this.prototype.name = 'DecodeError'; }
  readonly code = 'DECODE';
  constructor(message: string, options?: PodMotionErrorOptions) { super(message, options, false); }
}

/**
 * A value that does not match its schema. A subclass of {@link DecodeError} because every shape failure is a
 * failure to turn untrusted data into a typed value, so one `instanceof DecodeError` covers both layers.
 */
export class ShapeError extends DecodeError {
  static { this.prototype.name = 'ShapeError'; }
  /** Where the problem is, e.g. `spec.tags[2]`; empty for the value itself. */
  readonly path: string;
  constructor(message: string, options: PodMotionErrorOptions & { path: string }) {
    super(message, options);
    this.path = options.path;
  }
}

/** A wait ran out. Retryable: the other side may simply have been slow. */
export class TimeoutError extends PodMotionError {
  static { this.prototype.name = 'TimeoutError'; }
  readonly code = 'TIMEOUT';
  constructor(message: string, options?: PodMotionErrorOptions) { super(message, options, true); }
}

/** The pod, node or migration named does not exist. */
export class NotFoundError extends PodMotionError {
  static { this.prototype.name = 'NotFoundError'; }
  readonly code = 'NOT_FOUND';
  constructor(message: string, options?: PodMotionErrorOptions) { super(message, options, false); }
}

/** The caller asked for something that can never succeed as asked (bad argument, bad combination). */
export class InvalidRequestError extends PodMotionError {
  static { this.prototype.name = 'InvalidRequestError'; }
  readonly code = 'INVALID_REQUEST';
  constructor(message: string, options?: PodMotionErrorOptions) { super(message, options, false); }
}

/** The request clashes with work in progress, e.g. the pod is already migrating. */
export class ConflictError extends PodMotionError {
  static { this.prototype.name = 'ConflictError'; }
  readonly code = 'CONFLICT';
  constructor(message: string, options?: PodMotionErrorOptions) { super(message, options, false); }
}

/** The environment lacks something the operation needs, e.g. a kernel feature or root privileges. */
export class PreconditionError extends PodMotionError {
  static { this.prototype.name = 'PreconditionError'; }
  readonly code = 'PRECONDITION';
  constructor(message: string, options?: PodMotionErrorOptions) { super(message, options, false); }
}

/** CRIU failed a dump or restore; `logTail` holds the end of its dump.log/restore.log, which names the cause. */
export class CriuError extends PodMotionError {
  static { this.prototype.name = 'CriuError'; }
  readonly code = 'CRIU';
  readonly logTail: string | undefined;
  constructor(message: string, options?: PodMotionErrorOptions & { logTail?: string }) {
    super(message, options, false);
    this.logTail = options?.logTail === undefined ? undefined : options.logTail.slice(-MAX_LOG_TAIL_CHARS);
  }
}

/** A node-side operation (network namespace, eBPF, storage, runtime) failed. */
export class NodeOperationError extends PodMotionError {
  static { this.prototype.name = 'NodeOperationError'; }
  readonly code = 'NODE_OP';
  constructor(message: string, options?: PodMotionErrorOptions) { super(message, options, false); }
}

/** A bug or an unexpected failure: anything not covered by a more specific class. */
export class InternalError extends PodMotionError {
  static { this.prototype.name = 'InternalError'; }
  readonly code = 'INTERNAL';
  constructor(message: string, options?: PodMotionErrorOptions) { super(message, options, false); }
}

type Rebuild = (message: string, retryable: boolean, details: Record<string, string>) => PodMotionError;

// Record<ErrorCode, ...> makes the compiler insist on a rebuild for every code.
const REBUILD: Record<ErrorCode, Rebuild> = {
  DECODE: (m, retryable, d) =>
    d.path === undefined ? new DecodeError(m, { retryable }) : new ShapeError(m, { retryable, path: d.path }),
  TIMEOUT: (m, retryable) => new TimeoutError(m, { retryable }),
  NOT_FOUND: (m, retryable) => new NotFoundError(m, { retryable }),
  INVALID_REQUEST: (m, retryable) => new InvalidRequestError(m, { retryable }),
  CONFLICT: (m, retryable) => new ConflictError(m, { retryable }),
  PRECONDITION: (m, retryable) => new PreconditionError(m, { retryable }),
  CRIU: (m, retryable, d) => new CriuError(m, { retryable, logTail: d.logTail }),
  NODE_OP: (m, retryable) => new NodeOperationError(m, { retryable }),
  INTERNAL: (m, retryable) => new InternalError(m, { retryable }),
};

function isErrorCode(code: string): code is ErrorCode {
  // hasOwn, not `in`: a hostile code such as "constructor" must not reach Object.prototype.
  return Object.hasOwn(REBUILD, code);
}

function truncate(text: string, maxChars: number): string {
  return text.length <= maxChars ? text : `${text.slice(0, maxChars - 1)}…`;
}

/**
 * Turn any thrown value into its wire form. A PodMotionError keeps its code and retryable flag; anything else
 * becomes INTERNAL with its message, because the peer can do nothing more specific with it.
 */
export function toWire(err: unknown): WireError {
  if (!(err instanceof PodMotionError)) {
    const message = err instanceof Error ? err.message : String(err);
    return { code: 'INTERNAL', message: truncate(message, MAX_WIRE_MESSAGE_CHARS), retryable: false };
  }
  const wire: WireError = {
    code: err.code,
    message: truncate(err.message, MAX_WIRE_MESSAGE_CHARS),
    retryable: err.retryable,
  };
  if (err instanceof CriuError && err.logTail !== undefined) wire.details = { logTail: err.logTail };
  if (err instanceof ShapeError) wire.details = { path: err.path };
  return wire;
}

/**
 * Rebuild the error class a peer sent. The peer's `retryable` wins over the class default; an unknown code
 * (a newer peer) becomes an InternalError that names it, so nothing is silently dropped.
 */
export function fromWire(wire: WireError): PodMotionError {
  const details = wire.details ?? {};
  if (!isErrorCode(wire.code)) {
    const message = `peer error with unknown code ${JSON.stringify(truncate(wire.code, 64))}: ${wire.message}`;
    return new InternalError(message, { retryable: wire.retryable });
  }
  return REBUILD[wire.code](wire.message, wire.retryable, details);
}

/** Guards oneLine against cause cycles and absurd chains; three levels say enough for a terminal. */
const MAX_CAUSE_DEPTH = 3;

function describe(err: unknown): string {
  if (err instanceof PodMotionError) return err.message;
  // Foreign errors keep their name: "TypeError: x is not a function" says more than the message alone.
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

/**
 * A single line for CLI output: the message, then each cause's message not already contained in it; no stack,
 * and newlines (with the indentation around them) collapsed to one space.
 */
export function oneLine(err: unknown): string {
  let line = describe(err);
  let cause = err instanceof Error ? err.cause : undefined;
  for (let depth = 0; depth < MAX_CAUSE_DEPTH && cause !== undefined; depth++) {
    const text = cause instanceof Error ? cause.message : String(cause);
    if (text !== '' && !line.includes(text)) line = `${line}: ${describe(cause)}`;
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return line.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}
