/**
 * One hold episode against a running lab: arm, hold for holdMs, release (and maybe reopen), then measure what
 * the client saw. Variants:
 *   drop         drop both ways, release                         (what a plain packet-dropping hold does)
 *   zw           zero-window + kick until quiesced, + drop, release (peer waits for its next persist probe)
 *   zw-repair    as zw, then the pod's socket leaves TCP repair   (its window probe, as after a CRIU restore)
 *   zw-reopen    as zw, then pm-hold reopen (forged ACK)          (peer learns the open window at once)
 *   zw-elicit    as zw, then pm-hold reopen --elicit              (pod's own kernel sends the window update)
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HOLD_MODES, holdStats, reopen, setHoldMode, waitQuiesced, type HoldModeFlag } from '../../bpf/index.js';
import { ip, run } from '../../node-runtime/exec.js';
import { PYTHON, ROOT, type HoldLab } from './lab.js';
import type { PingPongClient } from './pingpong.js';

export const HOLD_VARIANTS = ['drop', 'zw', 'zw-repair', 'zw-reopen', 'zw-elicit'] as const;
export type HoldVariant = (typeof HOLD_VARIANTS)[number];

/** A plain drop of 500 ms can cost 2H + RTO plus one more backoff step; 5 s means the flow is dead. */
const RESUME_TIMEOUT_MS = 5_000;

export interface EpisodeResult {
  variant: HoldVariant;
  holdMs: number;
  /** Drop armed → released, from pm-hold's own timestamps. */
  heldMs: number;
  /** Zero-window armed → every flow quiesced (0 for drop). */
  quiesceMs: number;
  quiesced: boolean;
  /** The client's reply gap around the hold: what a user of the connection feels. */
  stallMs: number;
  /** Release → the client's first reply after it. */
  resumeAfterReleaseMs: number;
  droppedToPod: number;
  droppedFromPod: number;
  rsts: number;
}

/** Has the pod's server socket for `peer` send the TCP_REPAIR_OFF window probe (bench/hold/repair_probe.py). */
async function repairProbe(lab: HoldLab, peer: string): Promise<void> {
  const pid = (await ip(['netns', 'pids', lab.podNetns])).stdout.trim().split('\n')[0];
  if (!pid) throw new Error(`no process in ${lab.podNetns}`);
  await run(PYTHON, [path.join(ROOT, 'bench', 'hold', 'repair_probe.py'), pid, peer]);
}

export async function runEpisode(lab: HoldLab, client: PingPongClient, variant: HoldVariant, holdMs: number): Promise<EpisodeResult> {
  const before = await holdStats(lab.pin);
  let quiesceMs = 0;
  let quiesced = true;
  let freeze: readonly HoldModeFlag[] = ['drop-in', 'drop-out'];
  if (variant !== 'drop') {
    const armed = await setHoldMode(lab.pin, HOLD_MODES.quiesce);
    const q = await waitQuiesced(lab.pin, { kickNetns: lab.nodeNetns });
    quiesced = q.settled;
    quiesceMs = (q.stats.monoUs - armed.monoUs) / 1000;
    freeze = HOLD_MODES.freeze;
  }
  const frozen = await setHoldMode(lab.pin, freeze);
  await sleep(holdMs);
  const released = await setHoldMode(lab.pin, HOLD_MODES.none);
  if (variant === 'zw-reopen' || variant === 'zw-elicit') {
    await reopen({ netns: lab.nodeNetns, pin: lab.pin, elicit: variant === 'zw-elicit' });
  } else if (variant === 'zw-repair') {
    await repairProbe(lab, client.local);
  }
  const t = released.monoUs;
  const gap = await client.waitGap((g) => g.startUs < t && g.endUs > t, RESUME_TIMEOUT_MS);
  if (!gap) throw new Error(`${variant} ${holdMs} ms: no reply within ${RESUME_TIMEOUT_MS} ms of release (${JSON.stringify(client.failure)})`);
  const after = await holdStats(lab.pin);
  const c0 = before.counters;
  const c1 = after.counters;
  return {
    variant,
    holdMs,
    heldMs: (released.monoUs - frozen.monoUs) / 1000,
    quiesceMs,
    quiesced,
    stallMs: gap.ms,
    resumeAfterReleaseMs: (gap.endUs - t) / 1000,
    droppedToPod: c1.droppedToPod - c0.droppedToPod,
    droppedFromPod: c1.droppedFromPod - c0.droppedFromPod,
    rsts: c1.rstToPod + c1.rstFromPod - c0.rstToPod - c0.rstFromPod,
  };
}
