// Unit tests for machines/phases.ts and machines/status.ts: the phase helpers and the pure status model.
import test from 'ava';
import {
  DEFAULT_TIMEOUTS_MS, MAX_ERROR_MESSAGE_CHARS, MAX_TIMEOUT_MS, PHASES, TERMINAL_PHASES, conditionOf, finishCondition,
  initialStatus, isBeforeCutover, isJsonObject, isTerminal, noteCondition, phaseIndex, phaseLabel, phaseTimeoutMs,
  skipMessage, startCondition, statusChanged, toPhaseError, type MigrationSpec, type Phase,
} from '../../machines/index.js';

const spec: MigrationSpec = {
  id: 'mig-1', pod: 'web', sourceNode: 'node-1', destinationNode: 'node-2', strategy: 'PreCopy',
  networkContinuity: true, dryRun: false,
};

test('PHASES holds the 12 working phases in order', (t) => {
  t.deepEqual([...PHASES], [
    'SocketInventory', 'Validating', 'DestinationPrewarm', 'PreCopyMemory', 'ZeroWindowArm', 'FinalFreeze',
    'OverlayHandoff', 'Restore', 'DisengageHold', 'TCPVerifying', 'ServiceVerifying', 'Cutover',
  ]);
  t.deepEqual(PHASES.map(phaseIndex), [...PHASES.keys()]);
  for (const phase of ['Pending', 'RollingBack', ...TERMINAL_PHASES] as Phase[]) t.is(phaseIndex(phase), -1, phase);
});

test('isTerminal is true for the five end phases only', (t) => {
  const terminal: Phase[] = ['Complete', 'Validated', 'RolledBack', 'Cancelled', 'Failed'];
  for (const phase of terminal) t.true(isTerminal(phase), phase);
  for (const phase of ['Pending', 'RollingBack', ...PHASES] as Phase[]) t.false(isTerminal(phase), phase);
});

test('isBeforeCutover covers Pending and the 11 phases before Cutover', (t) => {
  t.true(isBeforeCutover('Pending'));
  for (const phase of PHASES) t.is(isBeforeCutover(phase), phase !== 'Cutover', phase);
  for (const phase of ['RollingBack', ...TERMINAL_PHASES] as Phase[]) t.false(isBeforeCutover(phase), phase);
});

test('phaseLabel names what the combined phases do', (t) => {
  t.is(phaseLabel('FinalFreeze'), 'FinalFreeze+StateCapture');
  t.is(phaseLabel('Restore'), 'Restore+SocketReattach');
  t.is(phaseLabel('Cutover'), 'Cutover+Complete');
  t.is(phaseLabel('Validating'), 'Validating');
  t.is(phaseLabel('RolledBack'), 'RolledBack');
});

test('initialStatus is Pending with nothing recorded', (t) => {
  const s = initialStatus(spec, 1000);
  t.like(s, { phase: 'Pending', conditions: [], results: {}, cancelRequested: false, startedAtMs: 1000, updatedAtMs: 1000 });
  t.is(s.error, undefined);
  t.is(s.endedAtMs, undefined);
});

test('startCondition adds a phase condition once, Unknown and InProgress', (t) => {
  const s0 = initialStatus(spec, 1000);
  const s1 = startCondition(s0, 'Validating', 1500);
  t.deepEqual(s1.conditions, [{
    type: 'Validating', status: 'Unknown', reason: 'InProgress', message: 'Validating started',
    lastTransitionTimeMs: 1500, startedAtMs: 1500,
  }]);
  t.is(s1.updatedAtMs, 1500);
  t.deepEqual(s0.conditions, [], 'the input is not changed');
  t.is(startCondition(s1, 'Validating', 9000), s1);
  t.is(startCondition(s1, 'Restore', 1600).conditions.length, 2);
});

test('finishCondition sets status, reason, message, transition time and duration', (t) => {
  const started = startCondition(initialStatus(spec, 0), 'Restore', 1000);
  const ok = finishCondition(started, 'Restore', true, 'Succeeded', 'restored', 1250);
  t.like(conditionOf(ok, 'Restore'), {
    status: 'True', reason: 'Succeeded', message: 'restored', startedAtMs: 1000, lastTransitionTimeMs: 1250, durationMs: 250,
  });
  t.is(ok.updatedAtMs, 1250);
  t.is(finishCondition(ok, 'Restore', true, 'Succeeded', 'restored', 5000), ok, 'same outcome: same object');
  const failed = finishCondition(started, 'Restore', false, 'Failed', 'CRIU: no', 1400);
  t.like(conditionOf(failed, 'Restore'), { status: 'False', reason: 'Failed', durationMs: 400 });
});

test('finishCondition on a phase that never started adds it finished, in place order kept', (t) => {
  const s = startCondition(initialStatus(spec, 0), 'SocketInventory', 10);
  const skipped = finishCondition(s, 'PreCopyMemory', true, 'Skipped', 'cold', 20);
  t.deepEqual(skipped.conditions.map((c) => c.type), ['SocketInventory', 'PreCopyMemory']);
  t.like(conditionOf(skipped, 'PreCopyMemory'), { status: 'True', startedAtMs: 20, durationMs: 0 });
  const again = finishCondition(skipped, 'SocketInventory', true, 'Succeeded', 'ok', 30);
  t.deepEqual(again.conditions.map((c) => c.type), ['SocketInventory', 'PreCopyMemory']);
});

test('noteCondition changes reason and message but not status or transition time', (t) => {
  const s = startCondition(initialStatus(spec, 0), 'Cutover', 100);
  const noted = noteCondition(s, 'Cutover', 'Retrying', 'attempt 1 failed', 200);
  t.like(conditionOf(noted, 'Cutover'), { status: 'Unknown', reason: 'Retrying', lastTransitionTimeMs: 100 });
  t.is(noteCondition(noted, 'Cutover', 'Retrying', 'attempt 1 failed', 300), noted);
  t.is(noteCondition(s, 'Restore', 'Retrying', 'x', 300), s, 'no condition: nothing to note');
});

test('statusChanged ignores updatedAtMs and key order, and sees every real change', (t) => {
  const a = startCondition(initialStatus(spec, 0), 'Validating', 10);
  t.false(statusChanged(a, a));
  t.false(statusChanged(a, { ...a, updatedAtMs: 99 }));
  t.false(statusChanged(a, JSON.parse(JSON.stringify(a))));
  t.false(statusChanged({ ...a, results: { x: { b: 1, a: 2 } } }, { ...a, results: { x: { a: 2, b: 1 } } }));
  t.false(statusChanged(a, { ...a, error: undefined }), 'an undefined key is an absent key');
  t.true(statusChanged(a, finishCondition(a, 'Validating', true, 'Succeeded', 'ok', 20)));
  t.true(statusChanged(a, { ...a, phase: 'RollingBack' }));
  t.true(statusChanged(a, { ...a, results: { Validating: { ok: true } } }));
  t.true(statusChanged({ ...a, results: { v: [1, 2] } }, { ...a, results: { v: [2, 1] } }));
  t.true(statusChanged(a, { ...a, cancelRequested: true }));
});

test('toPhaseError keeps code and message from Errors and plain objects, and bounds the message', (t) => {
  t.deepEqual(toPhaseError('Restore', Object.assign(new Error('no'), { code: 'CRIU' })), {
    phase: 'Restore', code: 'CRIU', message: 'no',
  });
  t.deepEqual(toPhaseError('Restore', new TypeError('bad')), { phase: 'Restore', code: 'INTERNAL', message: 'bad' });
  t.deepEqual(toPhaseError('Restore', { code: 'NODE_OP', message: 'gone' }), {
    phase: 'Restore', code: 'NODE_OP', message: 'gone',
  });
  t.deepEqual(toPhaseError('Restore', 'plain'), { phase: 'Restore', code: 'INTERNAL', message: 'plain' });
  t.deepEqual(toPhaseError('Restore', undefined, 'TIMEOUT'), { phase: 'Restore', code: 'TIMEOUT', message: 'unknown error' });
  t.is(toPhaseError('Restore', new Error('x'.repeat(10_000))).message.length, MAX_ERROR_MESSAGE_CHARS);
  const cyclic: Record<string, unknown> = { code: 'X' };
  cyclic.self = cyclic;
  t.deepEqual(toPhaseError('Restore', cyclic), { phase: 'Restore', code: 'X', message: 'an error that cannot be shown as JSON' });
  t.deepEqual(toPhaseError('Restore', { detail: 1 }), { phase: 'Restore', code: 'INTERNAL', message: '{"detail":1}' });
});

test('isJsonObject accepts plain JSON objects only', (t) => {
  t.true(isJsonObject({}));
  t.true(isJsonObject({ sockets: [{ port: 80, state: 'ESTABLISHED' }], freezeMs: 12.5, note: null, ok: true }));
  for (const bad of [null, [], 'x', 3, new Map(), new Date(0), { n: Number.NaN }, { n: Infinity },
    { u: undefined }, { f: () => 1 }, { b: 1n }, { d: new Date(0) }]) {
    t.false(isJsonObject(bad), String(bad));
  }
  let deep: Record<string, unknown> = {};
  for (let i = 0; i < 100; i++) deep = { deep };
  t.false(isJsonObject(deep), 'nesting is bounded');
});

test('skipMessage: Cold skips PreCopyMemory; no network continuity skips the hold and TCP phases', (t) => {
  const hold: Phase[] = ['ZeroWindowArm', 'DisengageHold', 'TCPVerifying'];
  for (const phase of PHASES) {
    t.is(skipMessage(spec, phase), undefined, phase);
    t.is(skipMessage({ ...spec, strategy: 'Cold' }, phase) !== undefined, phase === 'PreCopyMemory', phase);
    t.is(skipMessage({ ...spec, networkContinuity: false }, phase) !== undefined, hold.includes(phase), phase);
  }
});

test('phaseTimeoutMs uses spec.timeouts when positive, bounded, else the default', (t) => {
  for (const phase of PHASES) t.is(phaseTimeoutMs(spec, phase), DEFAULT_TIMEOUTS_MS[phase], phase);
  const custom = { ...spec, timeouts: { Restore: 5000, Validating: 0, FinalFreeze: -1, TCPVerifying: Infinity } };
  t.is(phaseTimeoutMs(custom, 'Restore'), 5000);
  t.is(phaseTimeoutMs(custom, 'Validating'), DEFAULT_TIMEOUTS_MS.Validating);
  t.is(phaseTimeoutMs(custom, 'FinalFreeze'), DEFAULT_TIMEOUTS_MS.FinalFreeze);
  t.is(phaseTimeoutMs(custom, 'TCPVerifying'), MAX_TIMEOUT_MS);
  t.is(phaseTimeoutMs(spec, 'RollingBack'), DEFAULT_TIMEOUTS_MS.RollingBack);
});
