// Unit tests for bus/errors.ts: each class's identity, the wire round trip, and one-line CLI messages.
import test from 'ava';
import {
  ConflictError, CriuError, DecodeError, ERROR_CODES, fromWire, InternalError, InvalidRequestError,
  MAX_LOG_TAIL_CHARS, MAX_WIRE_MESSAGE_CHARS, NodeOperationError, NotFoundError, oneLine, PodMotionError,
  PreconditionError, ShapeError, TimeoutError, toWire, type ErrorCode, type PodMotionErrorOptions,
} from '../../bus/errors.js';

type Ctor = new (message: string, options?: PodMotionErrorOptions) => PodMotionError;
type Row = [ctor: Ctor, name: string, code: ErrorCode, retryable: boolean];

const shape: Ctor = class extends ShapeError {
  constructor(message: string, options?: PodMotionErrorOptions) { super(message, { ...options, path: 'spec.node' }); }
};

const rows: Row[] = [
  [DecodeError, 'DecodeError', 'DECODE', false],
  [shape, 'ShapeError', 'DECODE', false],
  [TimeoutError, 'TimeoutError', 'TIMEOUT', true],
  [NotFoundError, 'NotFoundError', 'NOT_FOUND', false],
  [InvalidRequestError, 'InvalidRequestError', 'INVALID_REQUEST', false],
  [ConflictError, 'ConflictError', 'CONFLICT', false],
  [PreconditionError, 'PreconditionError', 'PRECONDITION', false],
  [CriuError, 'CriuError', 'CRIU', false],
  [NodeOperationError, 'NodeOperationError', 'NODE_OP', false],
  [InternalError, 'InternalError', 'INTERNAL', false],
];

test('every error code has a class', (t) => {
  t.deepEqual(new Set(rows.map((r) => r[2])), new Set(ERROR_CODES));
});

for (const [Ctor, name, code, retryable] of rows) {
  test(`${name}: identity, default retryable and cause`, (t) => {
    const cause = new Error('root cause');
    const err = new Ctor('it broke', { cause });
    t.true(err instanceof Error);
    t.true(err instanceof PodMotionError);
    t.is(err.name, name);
    t.is(err.code, code);
    t.is(err.retryable, retryable);
    t.is(err.message, 'it broke');
    t.is(err.cause, cause);
    t.true(err.stack?.startsWith(`${name}: it broke\n`), err.stack);
    t.false(Object.keys(err).includes('name'));
    t.is(new Ctor('x', { retryable: !retryable }).retryable, !retryable);
    t.false(Object.hasOwn(new Ctor('no cause'), 'cause'));
  });

  for (const retryableOnWire of [true, false]) {
    test(`${name}: toWire/fromWire round trip (retryable ${retryableOnWire})`, (t) => {
      const sent = new Ctor('over the wire', { retryable: retryableOnWire });
      const wire = toWire(sent);
      t.is(wire.code, code);
      t.is(wire.retryable, retryableOnWire);
      const back = fromWire(JSON.parse(JSON.stringify(wire)) as typeof wire);
      t.is(back.constructor, sent instanceof ShapeError ? ShapeError : Ctor);
      t.is(back.name, name);
      t.is(back.code, code);
      t.is(back.message, 'over the wire');
      t.is(back.retryable, retryableOnWire);
    });
  }
}

test('CriuError carries its log tail across the wire, keeping the end of long logs', (t) => {
  const back = fromWire(toWire(new CriuError('dump failed', { logTail: 'line 1\nError: mnt ns\n' })));
  t.true(back instanceof CriuError);
  t.is((back as CriuError).logTail, 'line 1\nError: mnt ns\n');
  const long = `${'x'.repeat(MAX_LOG_TAIL_CHARS)}THE-END`;
  const tail = new CriuError('dump failed', { logTail: long }).logTail;
  t.is(tail?.length, MAX_LOG_TAIL_CHARS);
  t.true(tail?.endsWith('THE-END'));
  t.is(toWire(new CriuError('no log')).details, undefined);
  t.is((fromWire(toWire(new CriuError('no log'))) as CriuError).logTail, undefined);
});

test('ShapeError keeps its path across the wire, even the empty root path', (t) => {
  for (const path of ['spec.tags[2]', '']) {
    const back = fromWire(toWire(new ShapeError('bad', { path })));
    t.true(back instanceof ShapeError);
    t.is((back as ShapeError).path, path);
  }
  t.false(fromWire(toWire(new DecodeError('bad bytes'))) instanceof ShapeError);
});

test('toWire turns foreign errors and thrown values into INTERNAL', (t) => {
  t.deepEqual(toWire(new TypeError('x is not a function')), {
    code: 'INTERNAL', message: 'x is not a function', retryable: false,
  });
  t.deepEqual(toWire('just a string'), { code: 'INTERNAL', message: 'just a string', retryable: false });
  t.deepEqual(toWire(undefined), { code: 'INTERNAL', message: 'undefined', retryable: false });
  const long = toWire(new NotFoundError('y'.repeat(MAX_WIRE_MESSAGE_CHARS * 2)));
  t.is(long.message.length, MAX_WIRE_MESSAGE_CHARS);
  t.is(long.code, 'NOT_FOUND');
});

test('fromWire keeps unknown codes visible instead of guessing', (t) => {
  for (const code of ['QUOTA', 'constructor', '__proto__']) {
    const err = fromWire({ code, message: 'from the future', retryable: true });
    t.true(err instanceof InternalError, code);
    t.is(err.message, `peer error with unknown code ${JSON.stringify(code)}: from the future`);
    t.true(err.retryable);
  }
});

test('oneLine collapses newlines, appends new causes, and never shows a stack', (t) => {
  const cases: [string, unknown, string][] = [
    ['multi-line message', new PreconditionError('CRIU is missing\n  install criu >= 3.19\r\n'),
      'CRIU is missing install criu >= 3.19'],
    ['cause appended', new NodeOperationError('veth setup failed', { cause: new Error('EPERM') }),
      'veth setup failed: Error: EPERM'],
    ['cause already in message', new DecodeError('message x: bad (oops)', { cause: new Error('oops') }),
      'message x: bad (oops)'],
    ['foreign error keeps its name', new RangeError('too big'), 'RangeError: too big'],
    ['non-error value', 42, '42'],
    ['string cause', new InternalError('wrapped', { cause: 'disk full' }), 'wrapped: disk full'],
  ];
  for (const [title, err, expected] of cases) t.is(oneLine(err), expected, title);

  const a = new InternalError('a');
  const b = new InternalError('b', { cause: a });
  Object.defineProperty(a, 'cause', { value: b });
  const looped = oneLine(a);
  t.is(looped, 'a: b');
  t.false(oneLine(new TimeoutError('slow', { cause: new Error('deep') })).includes('    at '));
});
