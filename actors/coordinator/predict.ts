/**
 * Predicting a migration's freeze window from the ones of the same strategy this coordinator has seen
 * complete: a least squares line through (checkpoint bytes, freeze ms). Never a constant from elsewhere: without completed
 * migrations there is no prediction, and the basis says how far the prediction reaches.
 */
import type { MigrationStatus, Strategy } from '../../machines/index.js';

export interface Prediction {
  freezeMs?: number;
  basis: string;
}

interface Sample {
  bytes: number;
  freezeMs: number;
}

/** Completed migrations of one strategy with both figures recorded. */
export function samplesOf(statuses: readonly MigrationStatus[], strategy: Strategy): Sample[] {
  const out: Sample[] = [];
  for (const s of statuses) {
    if (s.phase !== 'Complete' || s.spec.strategy !== strategy) continue;
    const bytes = (s.results['FinalFreeze'] as { bytes?: number } | undefined)?.bytes;
    const freezeMs = (s.results['Restore'] as { freezeMs?: number } | undefined)?.freezeMs;
    if (typeof bytes === 'number' && typeof freezeMs === 'number') out.push({ bytes, freezeMs });
  }
  return out;
}

const mib = (b: number) => (b / (1 << 20)).toFixed(1);

/** Predicts the freeze for a checkpoint of about `bytes` (the pod's writable memory). */
export function predictFreeze(statuses: readonly MigrationStatus[], bytes: number, strategy: Strategy = 'Cold'): Prediction {
  const xs = samplesOf(statuses, strategy);
  if (xs.length < 2) return { basis: `no prediction yet: ${xs.length} completed ${strategy} migration(s) on this cluster, 2 needed` };
  const n = xs.length;
  const mx = xs.reduce((a, s) => a + s.bytes, 0) / n;
  const my = xs.reduce((a, s) => a + s.freezeMs, 0) / n;
  const sxx = xs.reduce((a, s) => a + (s.bytes - mx) ** 2, 0);
  const lo = Math.min(...xs.map((s) => s.bytes));
  const hi = Math.max(...xs.map((s) => s.bytes));
  const range = `checkpoints of ${mib(lo)}–${mib(hi)} MiB`;
  // All samples of about one size: the slope is unknown; their mean holds only near that size.
  if (sxx < (mx * 0.05) ** 2 * n) {
    return { freezeMs: Math.round(my), basis: `mean of ${n} completed migrations (${range}); size dependence not measured yet` };
  }
  const slope = xs.reduce((a, s) => a + (s.bytes - mx) * (s.freezeMs - my), 0) / sxx;
  const freezeMs = Math.max(0, Math.round(my + slope * (bytes - mx)));
  const outside = bytes < lo || bytes > hi ? ', extrapolated' : '';
  return { freezeMs, basis: `line through ${n} completed migrations (${range}${outside})` };
}
