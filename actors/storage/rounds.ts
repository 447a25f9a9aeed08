/**
 * The storage tier's rounds while memory is pre-copied: a bulk round, then catch-up rounds until the freeze
 * is about to start, so that the round inside the freeze carries only what changed in the last one's time,
 * not since the bulk round (PostgreSQL under pgbench: the WAL and table files of ~9 s of pre-copy, up to
 * 44 MB, in a round that outlasted CRIU's dump).
 */
import { sleep, type Clock } from '../../common/clock.js';
import type { VolumeSyncReply } from '../../bus/node-migration.js';

/**
 * Before a catch-up round at least this long, and after one at least as long as it took: the rounds take
 * half of the time at most.
 */
export const VOLUME_ROUND_GAP_MS = 500;
/** A bound on catch-up rounds, whatever pre-copy does (one every ~0.5 s or more: a minute of them). */
export const VOLUME_MAX_ROUNDS = 120;

export interface VolumeRounds {
  /**
   * Starts no more rounds and resolves once the one in flight is over, with the bulk round, the number of
   * rounds that completed and the last one; rejects if the bulk round failed. A catch-up round that fails ends
   * the rounds (`failed` says why): the last round, inside the freeze, then carries what it did not, and it
   * fails the freeze if the cause persists.
   */
  stop(): Promise<{ bulk: VolumeSyncReply; rounds: number; last: VolumeSyncReply; failed?: string }>;
  /** Starts no more rounds (a rollback): the one in flight ends on its own. */
  cancel(): void;
}

export function startVolumeRounds(round: () => Promise<VolumeSyncReply>, clock: Clock): VolumeRounds {
  let stopping = false;
  const wake = new AbortController();
  const done = (async () => {
    const bulk = await round();
    let last = bulk;
    let rounds = 1;
    while (!stopping && rounds < VOLUME_MAX_ROUNDS) {
      // The bulk round copied everything and took its time: the first catch-up round follows it closely.
      await sleep(clock, rounds === 1 ? VOLUME_ROUND_GAP_MS : Math.max(VOLUME_ROUND_GAP_MS, last.ms), wake.signal).catch(() => {});
      if (stopping) break;
      try {
        last = await round();
      } catch (e) {
        return { bulk, rounds, last, failed: (e as Error).message };
      }
      rounds++;
    }
    return { bulk, rounds, last };
  })();
  done.catch(() => {});
  const halt = () => {
    stopping = true;
    wake.abort();
  };
  return {
    stop: () => {
      halt();
      return done;
    },
    cancel: halt,
  };
}
