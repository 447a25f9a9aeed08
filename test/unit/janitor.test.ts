// Which failed rollbacks the rollback janitor (actors/coordinator/janitor.ts) may finish.
import test from 'ava';
import { finishPlan, finishable, halfWay } from '../../actors/coordinator/janitor.js';
import { initialStatus, type MigrationStatus, type Phase } from '../../machines/index.js';

const spec = { id: 'm1', pod: 'web', sourceNode: 'node-1', destinationNode: 'node-2', strategy: 'Cold' as const, networkContinuity: true, dryRun: false };
function failed(errorPhase: Phase, reached: Phase[], servedFrom?: string): MigrationStatus {
  const s = initialStatus(spec, 0);
  return {
    ...s, phase: 'Failed',
    conditions: reached.map((type) => ({ type, status: 'True' as const, reason: 'Succeeded', message: '', lastTransitionTimeMs: 0 })) as never,
    error: { phase: errorPhase, code: 'TIMEOUT', message: 'RollingBack took longer than 300000 ms', ...(servedFrom ? { servedFrom } : {}) },
  };
}

const none = { present: false, running: false };
const frozen = { present: true, running: false };

test('a rollback that ran out of time before any restore began: the source resumes, the destination goes', (t) => {
  const s = failed('RollingBack', ['SocketInventory', 'Validating', 'FinalFreeze', 'OverlayHandoff']);
  t.true(finishable(s));
  t.deepEqual(finishPlan(s, frozen, none), { servedFrom: 'node-1', resumeSource: true, clean: 'destination' });
});

test('after a restore: a finished move back keeps the source copy and removes the stopped destination copy', (t) => {
  const s = failed('RollingBack', ['FinalFreeze', 'OverlayHandoff', 'Restore']);
  t.true(finishable(s));
  const back = { present: true, running: true, reclaimedBy: 'm1' };
  t.deepEqual(finishPlan(s, back, { present: true, running: false, incoming: 'm1' }), { servedFrom: 'node-1', resumeSource: false, clean: 'destination' });
  // A destination copy still running: two copies claim the pod, nobody can tell which is newer.
  t.is(finishPlan(s, back, { present: true, running: true, incoming: 'm1' }), undefined);
});

test('after a restore: a destination copy that resumed as the pod stays, the stale source copy goes', (t) => {
  const s = failed('RollingBack', ['FinalFreeze', 'OverlayHandoff', 'Restore']);
  t.deepEqual(finishPlan(s, frozen, { present: true, running: true }), { servedFrom: 'node-2', resumeSource: false, clean: 'source' });
});

test('after a restore: a move back stopped half way (source frozen, destination stopped) is finished, not guessed', (t) => {
  const s = failed('RollingBack', ['FinalFreeze', 'OverlayHandoff', 'Restore']);
  const stopped = { present: true, running: false, incoming: 'm1' };
  t.is(finishPlan(s, frozen, stopped), undefined);
  t.true(halfWay(s, frozen, stopped));
  t.false(halfWay(s, frozen, { ...stopped, running: true }), 'a running destination copy is not half way');
  t.false(halfWay(failed('RollingBack', ['FinalFreeze', 'OverlayHandoff']), frozen, stopped), 'no restore began');
  // The source copy running but not brought back by this migration: not this rollback's doing.
  t.is(finishPlan(s, { present: true, running: true }, { present: true, running: false, incoming: 'm1' }), undefined);
});

test('one whose pod is known to serve somewhere, or that failed outside the rollback, is left alone', (t) => {
  t.false(finishable(failed('RollingBack', ['FinalFreeze'], 'node-2')));
  t.false(finishable(failed('Cutover', ['FinalFreeze'])));
  t.false(finishable({ ...failed('RollingBack', ['FinalFreeze']), phase: 'RolledBack' }));
});
