// Which failed rollbacks the rollback janitor (actors/coordinator/janitor.ts) may finish.
import test from 'ava';
import { finishable } from '../../actors/coordinator/janitor.js';
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

test('a rollback that ran out of time before any restore began is finished', (t) => {
  t.true(finishable(failed('RollingBack', ['SocketInventory', 'Validating', 'FinalFreeze', 'OverlayHandoff'])));
});

test('one that failed after a restore began is left alone: either copy may hold the newest state', (t) => {
  t.false(finishable(failed('RollingBack', ['FinalFreeze', 'OverlayHandoff', 'Restore'])));
});

test('one whose pod is known to serve somewhere, or that failed outside the rollback, is left alone', (t) => {
  t.false(finishable(failed('RollingBack', ['FinalFreeze'], 'node-2')));
  t.false(finishable(failed('Cutover', ['FinalFreeze'])));
  t.false(finishable({ ...failed('RollingBack', ['FinalFreeze']), phase: 'RolledBack' }));
});
