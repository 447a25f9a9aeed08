/**
 * Virtual time. The scheduler is the simulation's Clock: timers go into a queue ordered by (time, order of
 * scheduling) and run one at a time; after each, every promise continuation it started settles before time
 * moves on. Nothing reads the wall clock, so a run is the same every time.
 */
import type { Clock } from '../common/clock.js';

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** Lets every pending promise continuation run (they are microtasks; setImmediate runs after all of them). */
export const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

export class Scheduler implements Clock {
  private now = 0;
  private seq = 0;
  private heap: Timer[] = [];
  /** Timers run so far (a measure of the work a run did). */
  steps = 0;

  constructor(startMs: number) {
    this.now = startMs;
  }

  nowMs(): number {
    return this.now;
  }

  setTimer(fn: () => void, delayMs: number): () => void {
    const t: Timer = { at: this.now + Math.max(0, delayMs), seq: this.seq++, fn, cancelled: false };
    this.push(t);
    return () => {
      t.cancelled = true;
    };
  }

  /** Runs timers in order until `until()` holds, nothing is left, or virtual time passes `deadlineMs`. */
  async run(o: { until?: () => boolean; deadlineMs: number; afterStep?: () => void }): Promise<'until' | 'idle' | 'deadline'> {
    await settle();
    for (;;) {
      if (o.until?.()) return 'until';
      const t = this.pop();
      if (!t) return 'idle';
      if (t.at > o.deadlineMs) {
        this.push(t);
        this.now = o.deadlineMs;
        return 'deadline';
      }
      this.now = t.at;
      this.steps++;
      t.fn();
      await settle();
      o.afterStep?.();
    }
  }

  pending(): number {
    return this.heap.filter((t) => !t.cancelled).length;
  }

  private less(a: Timer, b: Timer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(t: Timer): void {
    const h = this.heap;
    h.push(t);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private pop(): Timer | undefined {
    const h = this.heap;
    for (;;) {
      if (h.length === 0) return undefined;
      const top = h[0]!;
      const last = h.pop()!;
      if (h.length > 0) {
        h[0] = last;
        let i = 0;
        for (;;) {
          const l = 2 * i + 1;
          const r = l + 1;
          let m = i;
          if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
          if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
          if (m === i) break;
          [h[i], h[m]] = [h[m]!, h[i]!];
          i = m;
        }
      }
      if (!top.cancelled) return top;
    }
  }
}
