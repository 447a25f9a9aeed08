/**
 * Time as a dependency. Actors and machines take a Clock instead of reading the wall clock,
 * so a simulation can drive them with virtual time and replay a run exactly.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  nowMs(): number;
  /** Calls fn after delayMs; the returned function cancels it. */
  setTimer(fn: () => void, delayMs: number): () => void;
}

/** The real clock, for production processes. */
export const systemClock: Clock = {
  nowMs: () => Date.now(),
  setTimer(fn, delayMs) {
    const t = setTimeout(fn, delayMs);
    return () => clearTimeout(t);
  },
};

/** Resolves after delayMs on the given clock; rejects with the signal's reason when aborted. */
export function sleep(clock: Clock, delayMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      cancel();
      reject(signal?.reason);
    };
    const cancel = clock.setTimer(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Runs fn every intervalMs on the given clock, the first time after one interval; a run never overlaps the
 * previous one (the next waits until it settled). Returns the function that stops it.
 */
export function every(clock: Clock, intervalMs: number, fn: () => Promise<void>): () => void {
  let cancel: (() => void) | undefined;
  let stopped = false;
  const loop = () => {
    void fn().catch(() => {}).finally(() => {
      if (!stopped) cancel = clock.setTimer(loop, intervalMs);
    });
  };
  cancel = clock.setTimer(loop, intervalMs);
  return () => {
    stopped = true;
    cancel?.();
  };
}
