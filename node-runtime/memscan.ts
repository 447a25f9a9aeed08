/**
 * A pod's memory as a checkpoint sees it: private writable pages, and how fast they change. Measured by
 * hashing every page twice (pm-memscan), since this kernel has no soft-dirty tracking. Read-only: the pod
 * is neither stopped nor traced.
 */
import path from 'node:path';
import { run } from './exec.js';
import { NATIVE_DIR } from './constants.js';
import { NodeOperationError } from '../bus/errors.js';

export interface MemScan {
  processes: number;
  regions: number;
  pages: number;
  bytes: number;
  zeroPages: number;
  scanMs: number;
  intervalMs: number;
  changedPages: number;
  dirtyBytesPerSec: number;
}

/** Longest sampling interval accepted; a dirty rate needs a second or two, not minutes. */
export const MAX_SCAN_INTERVAL_MS = 60_000;

/** Scans the pod whose init is `pid`, twice `intervalMs` apart when intervalMs > 0. */
export async function scanMemory(pid: number, intervalMs: number): Promise<MemScan> {
  if (!Number.isInteger(intervalMs) || intervalMs < 0 || intervalMs > MAX_SCAN_INTERVAL_MS) {
    throw new NodeOperationError(`memory scan interval must be 0..${MAX_SCAN_INTERVAL_MS} ms (got ${intervalMs})`);
  }
  // Two passes over up to tens of GiB at a few GB/s, plus the interval.
  const r = await run(path.join(NATIVE_DIR, 'pm-memscan'), ['--pid', String(pid), '--interval-ms', String(intervalMs)],
    { timeoutMs: intervalMs + 120_000 });
  return JSON.parse(r.stdout) as MemScan;
}
