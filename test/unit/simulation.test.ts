/**
 * The deterministic simulation (simulations/): a seed replays exactly, and every seed that once broke an
 * invariant stays fixed. Each regression seed names what it found.
 */
import test from 'ava';
import { knobsFor, runSeed, type Knobs } from '../../simulations/world.js';

/**
 * Seeds found before the coordinator had admission limits and users cancelled: replayed as they ran then
 * (no limit that matters, no cancels), so each still plays the scenario it found.
 */
const before = (seed: number): Knobs => ({ ...knobsFor(seed, { perNode: 1_000, perCluster: 1_000 }), cancels: 0 });

const REGRESSIONS: Array<[seed: number, found: string, knobs?: (seed: number) => Knobs]> = [
  [3, 'a transient failure of the destination cleanup left its namespace and images behind', before],
  [4, 'a cutover whose source agent was down for 20 s gave up: source copy leaked, migration Failed; a node missing a handoff kept a stale route', before],
  [6, 'a destination agent down during Restore: the rollback gave up at once and left the pod frozen; a lost route request held the rollback for its whole phase', before],
  [7, 'a rollback whose source agent was restarting failed at its first route request', before],
  [25, 'a lost rollback request waited out the whole RollingBack phase, leaving the pod frozen', before],
  [61, 'a repeated move-back request killed the copy the first one had restored: the pod was lost', before],
  [167, 'a repeated move-back request left two copies running', before],
  [387, 'a node brought up to date while a pod migrated never got that pod\'s route afterwards', before],
  [1917, 'a move back that failed after its images arrived left them (the pod\'s memory) on the source', before],
  [153, 'a cancel during Restore: a restore request arriving after the rollback\'s "restored?" query made a second copy'],
  [205, 'a rollback that timed out after its move back had finished left the stopped destination copy and its images'],
  [3628, 'a cancel during FinalFreeze: a freeze request arriving after the rollback resumed the pod left it frozen'],
  [5964, 'a move back stopped half way (both copies stopped) left the pod serving nowhere'],
  [7860, 'after a coordinator restart, a node was marked in sync although a route to a restarting node was skipped'],
  [10817, 'the janitor finished a move back stopped half way, but no node was told to route the pod back'],
  [15854, 'checker: a cancel admitted the next migration before the cancel itself was recorded'],
];

for (const [seed, found, knobs] of REGRESSIONS) {
  test(`seed ${seed} holds every invariant (found: ${found})`, async (t) => {
    const r = await runSeed(knobs ? knobs(seed) : knobsFor(seed));
    t.deepEqual(r.violations, [], r.trace.slice(-40).join('\n'));
    t.true(r.migrations > 0);
  });
}

test('a seed replays exactly: same trace, same outcomes', async (t) => {
  const a = await runSeed(knobsFor(1234));
  const b = await runSeed(knobsFor(1234));
  t.deepEqual(a.trace, b.trace);
  t.deepEqual(a.outcomes, b.outcomes);
  t.is(a.steps, b.steps);
});

test('knobs are drawn from the seed alone', (t) => {
  t.deepEqual(knobsFor(99), knobsFor(99));
  t.notDeepEqual(knobsFor(99), knobsFor(100));
});
