// Unit tests for machines/migration.ts: every phase driven through success, failure, cancel, timeout and a
// coordinator restart, with fake promise actors and XState's SimulatedClock.
import test, { type ExecutionContext } from 'ava';
import { createActor, fromPromise, SimulatedClock, type Actor, type Snapshot } from 'xstate';
import {
  CUTOVER_RETRY_DELAY_MS, FINAL_PERSIST_TIMEOUT_MS, MAX_CUTOVER_ATTEMPTS, cutoverRetryDelayMs, PHASES, PHASE_EFFECTS, conditionOf, migrationMachine, phaseIndex,
  phaseOf, phaseTimeoutMs, snapshotForRestart, type EffectInput, type MigrationActorName, type MigrationMachine,
  type ConditionStatus, type MigrationSpec, type MigrationStatus, type Phase, type WorkPhase,
} from '../../machines/index.js';

const START_MS = 1_700_000_000_000;
/** Time each resolving fake lets pass, so durations are visible. */
const STEP_MS = 10;
const EFFECTS: readonly string[] = Object.values(PHASE_EFFECTS);
const ACTOR_NAMES: readonly MigrationActorName[] = ['persistStatus', 'rollback', ...Object.values(PHASE_EFFECTS)];
const BEFORE_CUTOVER = PHASES.filter((p) => p !== 'Cutover');

type Behaviour = 'ok' | 'fail' | 'hang' | 'invalid';
/** What each fake does; an array gives one behaviour per call, its last one repeating. */
type Plan = Partial<Record<MigrationActorName, Behaviour | Behaviour[]>>;

interface Call { name: MigrationActorName; status: MigrationStatus }
interface Rig {
  actor: Actor<MigrationMachine>;
  clock: SimulatedClock;
  /** Every actor invocation, in order, with the status it was given. */
  calls: Call[];
  /** Fakes whose AbortSignal fired while they hung. */
  aborted: MigrationActorName[];
}

function spec(over: Partial<MigrationSpec> = {}): MigrationSpec {
  return {
    id: 'mig-1', pod: 'web', sourceNode: 'node-1', destinationNode: 'node-2', strategy: 'PreCopy',
    networkContinuity: true, dryRun: false, ...over,
  };
}

/** Effects fail both ways the machine accepts: Errors with a code, and plain { code, message } objects. */
function failure(name: MigrationActorName): unknown {
  return ACTOR_NAMES.indexOf(name) % 2 === 0
    ? Object.assign(new Error(`${name} broke`), { code: 'NODE_OP' })
    : { code: 'CRIU', message: `${name} broke` };
}
const failureCode = (name: MigrationActorName) => (ACTOR_NAMES.indexOf(name) % 2 === 0 ? 'NODE_OP' : 'CRIU');

function rig(t: ExecutionContext, plan: Plan = {}, opts: { spec?: Partial<MigrationSpec>; snapshot?: Snapshot<unknown> } = {}): Rig {
  const clock = new SimulatedClock();
  clock.set(START_MS);
  const calls: Call[] = [];
  const aborted: MigrationActorName[] = [];
  const counts = new Map<MigrationActorName, number>();
  const fake = (name: MigrationActorName) => fromPromise<unknown, EffectInput>(async ({ input, signal }) => {
    const n = (counts.get(name) ?? 0) + 1;
    counts.set(name, n);
    calls.push({ name, status: input.status });
    const planned = plan[name] ?? 'ok';
    const behaviour = Array.isArray(planned) ? planned[Math.min(n, planned.length) - 1] : planned;
    if (behaviour === 'hang') {
      return new Promise((_resolve, reject) => signal.addEventListener('abort', () => {
        aborted.push(name);
        reject(new Error('aborted'));
      }));
    }
    await Promise.resolve();
    clock.increment(STEP_MS);
    if (behaviour === 'fail') throw failure(name);
    if (behaviour === 'invalid') return new Map([['not', 'json']]);
    return name === 'persistStatus' ? undefined : { effect: name, call: n };
  });
  const actors = Object.fromEntries(ACTOR_NAMES.map((name) => [name, fake(name)]));
  const machine = migrationMachine.provide({ actors });
  // XState's types want input even with a snapshot; it is ignored then.
  const input = { spec: spec(opts.spec), nowMs: START_MS };
  const actor = createActor(machine, { input, clock, ...(opts.snapshot ? { snapshot: opts.snapshot } : {}) });
  t.teardown(() => actor.stop());
  return { actor: actor.start(), clock, calls, aborted };
}

/** Lets every pending promise settle (the fakes resolve through microtasks only). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Runs the machine until it stops, moving the clock only past Cutover's retry pauses; bounded. */
async function runToEnd(r: Rig): Promise<MigrationStatus> {
  for (let i = 0; i < 50 && r.actor.getSnapshot().status === 'active'; i++) {
    await settle();
    if (r.actor.getSnapshot().matches({ Cutover: 'waiting' })) r.clock.increment(cutoverRetryDelayMs(r.actor.getSnapshot().context.cutoverAttempts));
  }
  const snapshot = r.actor.getSnapshot();
  if (snapshot.status !== 'done') throw new Error(`machine did not stop: ${JSON.stringify(snapshot.value)}`);
  return snapshot.context;
}

const effectsRun = (r: Rig) => r.calls.filter((c) => EFFECTS.includes(c.name)).map((c) => c.name);
const countOf = (r: Rig, name: MigrationActorName) => r.calls.filter((c) => c.name === name).length;
const effectsUpTo = (phase: WorkPhase) => PHASES.slice(0, phaseIndex(phase) + 1).map((p) => PHASE_EFFECTS[p]);
const lastPersisted = (r: Rig) => r.calls.filter((c) => c.name === 'persistStatus').at(-1)?.status;

function assertCondition(
  t: ExecutionContext, status: MigrationStatus, phase: Phase, value: ConditionStatus, reason: string,
) {
  const c = conditionOf(status, phase);
  t.is(c?.status, value, `${phase} condition`);
  t.is(c?.reason, reason, `${phase} reason`);
}

test('happy path: the 12 phases run in order, each condition True with its result, and Complete is written', async (t) => {
  const r = rig(t);
  const status = await runToEnd(r);
  t.deepEqual(effectsRun(r), PHASES.map((p) => PHASE_EFFECTS[p]));
  t.is(r.actor.getSnapshot().value, 'Complete');
  t.is(phaseOf(r.actor.getSnapshot()), 'Complete');
  t.deepEqual(r.actor.getSnapshot().output, status);
  t.deepEqual(status.conditions.map((c) => c.type), [...PHASES]);
  for (const phase of PHASES) {
    assertCondition(t, status, phase, 'True', 'Succeeded');
    t.true((conditionOf(status, phase)?.durationMs ?? 0) >= STEP_MS, phase);
    t.deepEqual(status.results[phase], { effect: PHASE_EFFECTS[phase], call: 1 });
  }
  t.is(countOf(r, 'rollback'), 0);
  t.is(status.error, undefined);
  t.is(status.endedAtMs, conditionOf(status, 'Cutover')?.lastTransitionTimeMs);
  t.true((status.endedAtMs ?? 0) > START_MS);
  t.deepEqual(lastPersisted(r), status);
});

test('each phase persists its status, condition included, before its effect runs', async (t) => {
  const r = rig(t);
  await runToEnd(r);
  const expected = [...PHASES.flatMap((p) => [['persistStatus', p], [PHASE_EFFECTS[p], p]]), ['persistStatus', 'Complete']];
  t.deepEqual(r.calls.map((c) => [c.name, c.status.phase]), expected);
  for (const call of r.calls.filter((c) => c.name === 'persistStatus' && c.status.phase !== 'Complete')) {
    assertCondition(t, call.status, call.status.phase, 'Unknown', 'InProgress');
  }
});

for (const phase of BEFORE_CUTOVER) {
  const effect = PHASE_EFFECTS[phase];
  test(`failure in ${phase} rolls back once and runs no later phase`, async (t) => {
    const r = rig(t, { [effect]: 'fail' });
    const status = await runToEnd(r);
    t.is(status.phase, 'RolledBack');
    t.deepEqual(status.error, { phase, code: failureCode(effect), message: `${effect} broke` });
    t.is(status.rollbackReason, 'failure');
    t.is(countOf(r, 'rollback'), 1);
    t.is(r.calls.find((c) => c.name === 'rollback')?.status.phase, 'RollingBack');
    t.deepEqual(effectsRun(r), effectsUpTo(phase));
    assertCondition(t, status, phase, 'False', 'Failed');
    assertCondition(t, status, 'RollingBack', 'True', 'Succeeded');
    t.is(lastPersisted(r)?.phase, 'RolledBack');
  });
}

test('Cutover failure is retried, then ends Failed with the source copy kept and no rollback', async (t) => {
  const r = rig(t, { cutover: 'fail' });
  const status = await runToEnd(r);
  t.is(status.phase, 'Failed');
  t.is(countOf(r, 'cutover'), MAX_CUTOVER_ATTEMPTS);
  t.is(r.calls.filter((c) => c.name === 'persistStatus' && c.status.phase === 'Cutover').length, MAX_CUTOVER_ATTEMPTS);
  t.is(status.error?.phase, 'Cutover');
  t.is(status.error?.code, failureCode('cutover'));
  t.regex(status.error?.message ?? '', /source copy was not removed/);
  t.is(countOf(r, 'rollback'), 0);
  assertCondition(t, status, 'Cutover', 'False', 'Failed');
  t.is(lastPersisted(r)?.phase, 'Failed');
});

test('Cutover waits its retry delay between attempts and completes when a retry succeeds', async (t) => {
  const r = rig(t, { cutover: ['fail', 'fail', 'ok'] });
  await settle();
  t.true(r.actor.getSnapshot().matches({ Cutover: 'waiting' }));
  assertCondition(t, r.actor.getSnapshot().context, 'Cutover', 'Unknown', 'Retrying');
  r.clock.increment(CUTOVER_RETRY_DELAY_MS - 1);
  await settle();
  t.is(countOf(r, 'cutover'), 1);
  r.clock.increment(1);
  await settle();
  t.is(countOf(r, 'cutover'), 2);
  // The next pause is twice as long.
  r.clock.increment(2 * CUTOVER_RETRY_DELAY_MS - 1);
  await settle();
  t.is(countOf(r, 'cutover'), 2);
  r.clock.increment(1);
  await settle();
  t.is(countOf(r, 'cutover'), 3);
  const status = await runToEnd(r);
  t.is(status.phase, 'Complete');
  t.is(status.cutoverAttempts, 3);
  assertCondition(t, status, 'Cutover', 'True', 'Succeeded');
});

for (const phase of BEFORE_CUTOVER) {
  const effect = PHASE_EFFECTS[phase];
  test(`CANCEL in ${phase} aborts its effect and ends Cancelled`, async (t) => {
    const r = rig(t, { [effect]: 'hang' });
    await settle();
    t.is(phaseOf(r.actor.getSnapshot()), phase);
    r.actor.send({ type: 'CANCEL' });
    const status = await runToEnd(r);
    t.is(status.phase, 'Cancelled');
    t.true(status.cancelRequested);
    t.is(status.rollbackReason, 'cancel');
    t.is(status.error, undefined);
    t.deepEqual(r.aborted, [effect]);
    t.is(countOf(r, 'rollback'), 1);
    t.deepEqual(effectsRun(r), effectsUpTo(phase));
    assertCondition(t, status, phase, 'False', 'Cancelled');
  });
}

test('CANCEL during Cutover changes nothing and the migration completes', async (t) => {
  const r = rig(t, { cutover: ['hang', 'ok'] });
  await settle();
  const before = r.actor.getSnapshot();
  t.true(before.matches({ Cutover: { attempt: 'running' } }));
  r.actor.send({ type: 'CANCEL' });
  t.deepEqual(r.actor.getSnapshot().context, before.context);
  t.deepEqual(r.actor.getSnapshot().value, before.value);
  t.deepEqual(r.aborted, []);
  r.clock.increment(phaseTimeoutMs(before.context.spec, 'Cutover'));
  const status = await runToEnd(r);
  t.is(status.phase, 'Complete');
  t.false(status.cancelRequested);
  t.is(countOf(r, 'rollback'), 0);
});

/** Moves the clock to `ms` after the phase's condition started. */
function advanceInPhase(r: Rig, phase: Phase, ms: number) {
  const started = conditionOf(r.actor.getSnapshot().context, phase)?.startedAtMs ?? Number.NaN;
  r.clock.increment(started + ms - r.clock.now());
}

for (const phase of BEFORE_CUTOVER) {
  const effect = PHASE_EFFECTS[phase];
  test(`timeout in ${phase} rolls back with reason timeout`, async (t) => {
    const r = rig(t, { [effect]: 'hang' });
    await settle();
    const timeoutMs = phaseTimeoutMs(spec(), phase);
    advanceInPhase(r, phase, timeoutMs - 1);
    await settle();
    t.is(phaseOf(r.actor.getSnapshot()), phase);
    advanceInPhase(r, phase, timeoutMs);
    const status = await runToEnd(r);
    t.is(status.phase, 'RolledBack');
    t.is(status.rollbackReason, 'timeout');
    t.deepEqual(status.error, { phase, code: 'TIMEOUT', message: `${phase} took longer than ${timeoutMs} ms` });
    t.deepEqual(r.aborted, [effect]);
    assertCondition(t, status, phase, 'False', 'TimedOut');
  });
}

test('spec.timeouts replaces a phase default', async (t) => {
  const r = rig(t, { restore: 'hang' }, { spec: { timeouts: { Restore: 500 } } });
  await settle();
  advanceInPhase(r, 'Restore', 499);
  await settle();
  t.is(phaseOf(r.actor.getSnapshot()), 'Restore');
  advanceInPhase(r, 'Restore', 500);
  t.is((await runToEnd(r)).rollbackReason, 'timeout');
});

for (const strategy of ['PreCopy', 'PostCopy', 'Cold'] as const) {
  test(`strategy ${strategy} ${strategy === 'PreCopy' ? 'runs' : 'skips'} PreCopyMemory`, async (t) => {
    const r = rig(t, {}, { spec: { strategy } });
    const status = await runToEnd(r);
    t.is(status.phase, 'Complete');
    const skipped = strategy !== 'PreCopy';
    t.is(effectsRun(r).includes('preCopyMemory'), !skipped);
    t.is(r.calls.some((c) => c.status.phase === 'PreCopyMemory'), !skipped);
    assertCondition(t, status, 'PreCopyMemory', 'True', skipped ? 'Skipped' : 'Succeeded');
    t.is('PreCopyMemory' in status.results, !skipped);
  });
}

test('without network continuity the hold and TCP phases are skipped', async (t) => {
  const r = rig(t, {}, { spec: { networkContinuity: false } });
  const status = await runToEnd(r);
  const skipped: WorkPhase[] = ['ZeroWindowArm', 'DisengageHold', 'TCPVerifying'];
  t.is(status.phase, 'Complete');
  t.deepEqual(effectsRun(r), PHASES.filter((p) => !skipped.includes(p)).map((p) => PHASE_EFFECTS[p]));
  for (const phase of skipped) assertCondition(t, status, phase, 'True', 'Skipped');
  t.deepEqual(status.conditions.map((c) => c.type), [...PHASES]);
});

test('a dry run stops in Validated after Validating and changes nothing', async (t) => {
  const r = rig(t, {}, { spec: { dryRun: true } });
  const status = await runToEnd(r);
  t.is(r.actor.getSnapshot().value, 'Validated');
  t.is(status.phase, 'Validated');
  t.deepEqual(effectsRun(r), ['socketInventory', 'validate']);
  t.deepEqual(status.conditions.map((c) => [c.type, c.status]), [['SocketInventory', 'True'], ['Validating', 'True']]);
  t.is(countOf(r, 'rollback'), 0);
  t.is(lastPersisted(r)?.phase, 'Validated');
});

/** Runs a machine until `plan` makes it hang, then restores its persisted snapshot (through JSON, as the KV keeps it). */
async function restartWhileHanging(t: ExecutionContext, plan: Plan, expectPhase: Phase): Promise<Rig> {
  const first = rig(t, plan);
  await settle();
  t.is(phaseOf(first.actor.getSnapshot()), expectPhase);
  const persisted = JSON.parse(JSON.stringify(first.actor.getPersistedSnapshot())) as Snapshot<unknown>;
  first.actor.stop();
  const second = rig(t, {}, { snapshot: snapshotForRestart(persisted) });
  await settle();
  t.deepEqual(second.calls, [], 'nothing runs before RESUME_AFTER_RESTART');
  second.actor.send({ type: 'RESUME_AFTER_RESTART' });
  return second;
}

for (const phase of BEFORE_CUTOVER) {
  test(`a coordinator restart in ${phase} rolls back`, async (t) => {
    const r = await restartWhileHanging(t, { [PHASE_EFFECTS[phase]]: 'hang' }, phase);
    const status = await runToEnd(r);
    t.is(status.phase, 'RolledBack');
    t.is(status.rollbackReason, 'coordinator-restart');
    t.deepEqual(r.calls.map((c) => c.name), ['persistStatus', 'rollback', 'persistStatus']);
    assertCondition(t, status, phase, 'False', 'CoordinatorRestart');
  });
}

test('a coordinator restart in Cutover re-runs the cutover and completes', async (t) => {
  const r = await restartWhileHanging(t, { cutover: 'hang' }, 'Cutover');
  const status = await runToEnd(r);
  t.is(status.phase, 'Complete');
  t.deepEqual(r.calls.map((c) => [c.name, c.status.phase]), [
    ['persistStatus', 'Cutover'], ['cutover', 'Cutover'], ['persistStatus', 'Complete'],
  ]);
  t.is(status.cutoverAttempts, 2);
});

test('a coordinator restart in RollingBack re-runs the rollback', async (t) => {
  const r = await restartWhileHanging(t, { restore: 'fail', rollback: 'hang' }, 'RollingBack');
  const status = await runToEnd(r);
  t.is(status.phase, 'RolledBack');
  t.is(status.rollbackReason, 'failure');
  t.is(status.error?.phase, 'Restore');
  t.deepEqual(r.calls.map((c) => c.name), ['persistStatus', 'rollback', 'persistStatus']);
});

test('restoring a raw persisted snapshot restarts the pending effect, which snapshotForRestart prevents', async (t) => {
  const first = rig(t, { restore: 'hang' });
  await settle();
  const persisted = first.actor.getPersistedSnapshot();
  first.actor.stop();
  const raw = rig(t, { restore: 'hang' }, { snapshot: persisted });
  await settle();
  t.deepEqual(raw.calls.map((c) => c.name), ['restore']);
});

test('a failed rollback ends Failed with the rollback error', async (t) => {
  const r = rig(t, { validate: 'fail', rollback: 'fail' });
  const status = await runToEnd(r);
  t.is(status.phase, 'Failed');
  t.is(status.error?.phase, 'RollingBack');
  t.is(status.error?.code, failureCode('rollback'));
  t.regex(status.error?.message ?? '', /^rollback failed, the source may not be serving: rollback broke$/);
  assertCondition(t, status, 'Validating', 'False', 'Failed');
  assertCondition(t, status, 'RollingBack', 'False', 'Failed');
  t.is(lastPersisted(r)?.phase, 'Failed');
});

test('a rollback that outlives its timeout ends Failed', async (t) => {
  const r = rig(t, { validate: 'fail', rollback: 'hang' });
  await settle();
  advanceInPhase(r, 'RollingBack', phaseTimeoutMs(spec(), 'RollingBack'));
  const status = await runToEnd(r);
  t.is(status.phase, 'Failed');
  t.deepEqual(status.error, {
    phase: 'RollingBack', code: 'TIMEOUT',
    message: `rollback failed, the source may not be serving: RollingBack took longer than ${phaseTimeoutMs(spec(), 'RollingBack')} ms`,
  });
  t.deepEqual(r.aborted, ['rollback']);
});

test('a status write that fails stops the phase before its effect runs', async (t) => {
  const r = rig(t, { persistStatus: ['ok', 'ok', 'fail', 'ok'] });
  const status = await runToEnd(r);
  t.is(status.phase, 'RolledBack');
  t.is(status.error?.phase, 'DestinationPrewarm');
  t.deepEqual(effectsRun(r), ['socketInventory', 'validate']);
});

test('a store that refuses every write still gets the pod rolled back', async (t) => {
  const r = rig(t, { persistStatus: 'fail' });
  const status = await runToEnd(r);
  t.is(status.phase, 'RolledBack');
  t.is(status.error?.phase, 'SocketInventory');
  t.deepEqual(effectsRun(r), []);
  t.is(countOf(r, 'rollback'), 1);
});

test('a terminal status write that hangs does not keep the machine from stopping', async (t) => {
  const r = rig(t, { persistStatus: ['ok', 'ok', 'hang'] }, { spec: { dryRun: true } });
  await settle();
  t.is(r.actor.getSnapshot().value, 'Finishing');
  r.clock.increment(FINAL_PERSIST_TIMEOUT_MS);
  t.is((await runToEnd(r)).phase, 'Validated');
  t.deepEqual(r.aborted, ['persistStatus']);
});

test('an effect result that is not a JSON object fails the phase', async (t) => {
  const r = rig(t, { handoffOverlay: 'invalid' });
  const status = await runToEnd(r);
  t.is(status.phase, 'RolledBack');
  t.is(status.error?.code, 'INVALID_RESULT');
  t.false('OverlayHandoff' in status.results);
});

test('actors the host did not provide fail the migration instead of hanging', async (t) => {
  const clock = new SimulatedClock();
  const actor = createActor(migrationMachine, { input: { spec: spec(), nowMs: 0 }, clock }).start();
  t.teardown(() => actor.stop());
  await settle();
  t.is(actor.getSnapshot().status, 'done');
  t.is(actor.getSnapshot().context.phase, 'Failed');
  t.regex(actor.getSnapshot().context.error?.message ?? '', /rollback not provided/);
  t.regex(conditionOf(actor.getSnapshot().context, 'SocketInventory')?.message ?? '', /persistStatus not provided/);
});

test('a clock without now() is refused', (t) => {
  const actor = createActor(migrationMachine, { input: { spec: spec(), nowMs: 0 } });
  t.is(actor.getSnapshot().status, 'error');
  t.regex(String(actor.getSnapshot().error), /needs a clock with now\(\)/);
});
