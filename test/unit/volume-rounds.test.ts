/** The storage tier's catch-up rounds (actors/storage/rounds.ts), on virtual time. */
import test from 'ava';
import { startVolumeRounds, VOLUME_MAX_ROUNDS, VOLUME_ROUND_GAP_MS } from '../../actors/storage/rounds.js';
import { Scheduler, settle } from '../../simulations/scheduler.js';
import type { VolumeSyncReply } from '../../bus/node-migration.js';

const reply = (ms: number, bytes = 0): VolumeSyncReply => ({ volumes: 1, files: 0, bytes, deleted: 0, ms });

test('rounds follow the bulk one, spaced by the gap or the last round, until stopped; stop waits for the one in flight', async (t) => {
  const clock = new Scheduler(0);
  const started: number[] = [];
  let finishLast: (() => void) | undefined;
  const rounds = startVolumeRounds(() => {
    started.push(clock.nowMs());
    // The bulk round is long; catch-up rounds are quick (the third one longer than the gap); the fourth is
    // still running when stopped.
    if (started.length === 1) return new Promise((r) => clock.setTimer(() => r(reply(2000, 100)), 2000));
    if (started.length === 4) return new Promise((r) => { finishLast = () => r(reply(10, 3)); });
    const ms = started.length === 3 ? VOLUME_ROUND_GAP_MS + 300 : 10;
    return new Promise((r) => clock.setTimer(() => r(reply(ms, 1)), ms));
  }, clock);
  await clock.run({ until: () => started.length === 4, deadlineMs: 60_000 });
  // The first catch-up round follows the (2 s) bulk one after VOLUME_ROUND_GAP_MS; the next ones after the
  // gap or as long as the last one took, whichever is longer.
  const second = 2000 + VOLUME_ROUND_GAP_MS;
  const third = second + 10 + VOLUME_ROUND_GAP_MS;
  const longThird = VOLUME_ROUND_GAP_MS + 300;
  t.deepEqual(started, [0, second, third, third + 2 * longThird]);
  let stopped: { rounds: number; bulk: VolumeSyncReply; last: VolumeSyncReply } | undefined;
  void rounds.stop().then((r) => (stopped = r));
  await settle();
  t.is(stopped, undefined, 'stop waits for the round in flight');
  finishLast!();
  await settle();
  t.like(stopped, { rounds: 4, bulk: { bytes: 100 }, last: { bytes: 3 } });
  await clock.run({ deadlineMs: 120_000 });
  t.is(started.length, 4, 'no round starts after stop');
});

test('a failed catch-up round ends the rounds and is reported; a failed bulk round fails stop; cancel starts no more', async (t) => {
  const clock = new Scheduler(0);
  let n = 0;
  const failing = startVolumeRounds(async () => {
    if (++n === 3) throw new Error('receiver gone');
    return reply(1, n);
  }, clock);
  await clock.run({ deadlineMs: 10_000 });
  t.is(n, 3, 'no round after the failed one');
  t.like(await failing.stop(), { rounds: 2, last: { bytes: 2 }, failed: 'receiver gone' });

  const bulkFails = startVolumeRounds(async () => { throw new Error('no receiver'); }, clock);
  await t.throwsAsync(bulkFails.stop(), { message: 'no receiver' });

  let m = 0;
  const cancelled = startVolumeRounds(async () => { m++; return reply(1); }, clock);
  await settle();
  cancelled.cancel();
  await clock.run({ deadlineMs: 20_000 });
  t.is(m, 1);
});

test('rounds nobody stops end at VOLUME_MAX_ROUNDS', async (t) => {
  const clock = new Scheduler(0);
  let n = 0;
  const rounds = startVolumeRounds(async () => { n++; return reply(1); }, clock);
  await clock.run({ deadlineMs: 24 * 3600_000 });
  t.is(n, VOLUME_MAX_ROUNDS);
  t.is((await rounds.stop()).rounds, VOLUME_MAX_ROUNDS);
});
