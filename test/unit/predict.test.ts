/** Freeze predictions come only from completed migrations, and say what they rest on. */
import test from 'ava';
import { predictFreeze } from '../../actors/coordinator/predict.js';
import type { MigrationStatus } from '../../machines/index.js';

function done(bytes: number, freezeMs: number, phase: MigrationStatus['phase'] = 'Complete'): MigrationStatus {
  return {
    spec: { id: 'x', pod: 'p', sourceNode: 'a', destinationNode: 'b', strategy: 'Cold', networkContinuity: true, dryRun: false },
    phase, conditions: [], results: { FinalFreeze: { bytes }, Restore: { freezeMs } }, cancelRequested: false,
    cutoverAttempts: 1, startedAtMs: 0, updatedAtMs: 0,
  };
}

test('no completed migrations, no prediction', (t) => {
  const p = predictFreeze([done(1e6, 100, 'RolledBack')], 1e6);
  t.is(p.freezeMs, undefined);
  t.regex(p.basis, /^no prediction yet: 0 completed Cold/);
  t.regex(predictFreeze([done(1e6, 100), done(2e6, 150)], 1e6, 'PreCopy').basis, /^no prediction yet: 0 completed PreCopy/);
});

test('same-size samples give their mean and say the size dependence is unknown', (t) => {
  const p = predictFreeze([done(4e6, 100), done(4e6, 140)], 4e6);
  t.is(p.freezeMs, 120);
  t.regex(p.basis, /mean of 2 completed migrations .*size dependence not measured/);
});

test('samples of different sizes give a line, and extrapolation is flagged', (t) => {
  const xs = [done(1 << 20, 100), done(2 << 20, 150), done(3 << 20, 200)];
  const inside = predictFreeze(xs, 2.5 * (1 << 20));
  t.is(inside.freezeMs, 175);
  t.regex(inside.basis, /^line through 3 completed migrations \(checkpoints of 1\.0–3\.0 MiB\)$/);
  const outside = predictFreeze(xs, 10 << 20);
  t.is(outside.freezeMs, 550);
  t.regex(outside.basis, /extrapolated/);
});
