/**
 * Pre-copy by content (pm-pages): rounds send pages the destination does not hold yet while the pod runs;
 * at the freeze the checkpoint's pages travel as references when the destination holds them already.
 */
import path from 'node:path';
import { run } from './exec.js';
import { NATIVE_DIR } from './constants.js';

/** A round reads all of a pod's memory once (a few GB/s) and writes what changed; minutes mean trouble. */
const PAGES_TIMEOUT_MS = 300_000;
const bin = () => path.join(NATIVE_DIR, 'pm-pages');

export interface RoundStats {
  pages: number;
  newPages: number;
  bytes: number;
  knownPages: number;
  ms: number;
}

/**
 * Writes to `out` every page of the pod whose content the destination does not hold (per `state`). With
 * writes tracked, also every page's address and hash to `map` (what the destination restores from) and the
 * ranges read to `read`; with `only`, reads just those ranges (written since the last round), not all memory.
 */
export async function precopyRound(pid: number, state: string, out: string, tracked?: { map: string; read: string; only?: string }): Promise<RoundStats> {
  const r = await run(bin(), ['round', '--pid', String(pid), '--state', state, '--out', out,
    ...(tracked ? ['--map', tracked.map, '--read', tracked.read, ...(tracked.only ? ['--only', tracked.only] : [])] : [])], { timeoutMs: PAGES_TIMEOUT_MS });
  return JSON.parse(r.stdout) as RoundStats;
}

/**
 * With the pod stopped: writes to `out` the pages the destination cannot take from the rounds up to `round`
 * (written since, per the tracker's `clean` ranges, or never `read` by one), by address.
 */
export async function finalPages(pid: number, o: { read: string; clean: string; out: string; round: number }): Promise<{ pages: number; literal: number; referenced: number; ms: number }> {
  const r = await run(bin(), ['final', '--pid', String(pid), '--read', o.read, '--clean', o.clean, '--out', o.out, '--round', String(o.round)], { timeoutMs: PAGES_TIMEOUT_MS });
  return JSON.parse(r.stdout) as { pages: number; literal: number; referenced: number; ms: number };
}

/** Replaces each pages-*.img of a checkpoint by a delta: references for pages in `state`, bytes for the rest. */
export async function encodeImages(dir: string, state: string): Promise<{ pages: number; referenced: number; literal: number; ms: number }> {
  const r = await run(bin(), ['encode', '--dir', dir, '--state', state], { timeoutMs: PAGES_TIMEOUT_MS });
  return JSON.parse(r.stdout) as { pages: number; referenced: number; literal: number; ms: number };
}

/** Rebuilds each pages-*.img from its delta and the pages the rounds delivered (`caches`). */
export async function decodeImages(dir: string, caches: readonly string[]): Promise<{ pages: number; fromCache: number; ms: number }> {
  const r = await run(bin(), ['decode', '--dir', dir, '--cache', ...caches], { timeoutMs: PAGES_TIMEOUT_MS });
  return JSON.parse(r.stdout) as { pages: number; fromCache: number; ms: number };
}
