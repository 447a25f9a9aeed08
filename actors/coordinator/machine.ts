/**
 * The migration machine with the coordinator's effects provided: shared by the coordinator and by the
 * deterministic simulation (simulations/), which runs the same machine and effects against simulated parts.
 */
import { fromPromise } from 'xstate';
import { migrationMachine, type EffectInput, type MigrationStatus, type Phase } from '../../machines/index.js';
import type { Effect, createEffects } from './effects.js';

/** Runs after a phase's real work, before its result counts (test hooks: fail or pause there). */
export type AfterPhase = (phase: Phase, status: MigrationStatus, signal: AbortSignal) => Promise<void>;

export function provideEffects(effects: ReturnType<typeof createEffects>, persist: (status: MigrationStatus) => Promise<void>, after?: AfterPhase) {
  const withHook = (phase: Phase, effect: Effect) =>
    fromPromise<Record<string, unknown>, EffectInput>(async ({ input, signal }) => {
      const out = await effect(input.status, signal);
      if (after) await after(phase, input.status, signal);
      return out;
    });
  return migrationMachine.provide({
    actors: {
      persistStatus: fromPromise<Record<string, unknown>, EffectInput>(async ({ input }) => {
        await persist(input.status);
        return {};
      }),
      socketInventory: withHook('SocketInventory', effects.socketInventory),
      validate: withHook('Validating', effects.validate),
      prewarmDestination: withHook('DestinationPrewarm', effects.prewarmDestination),
      preCopyMemory: withHook('PreCopyMemory', effects.preCopyMemory),
      armHold: withHook('ZeroWindowArm', effects.armHold),
      freezeAndCapture: withHook('FinalFreeze', effects.freezeAndCapture),
      handoffOverlay: withHook('OverlayHandoff', effects.handoffOverlay),
      restore: withHook('Restore', effects.restore),
      disengageHold: withHook('DisengageHold', effects.disengageHold),
      verifyTcp: withHook('TCPVerifying', effects.verifyTcp),
      verifyService: withHook('ServiceVerifying', effects.verifyService),
      cutover: withHook('Cutover', effects.cutover),
      rollback: fromPromise<Record<string, unknown>, EffectInput>(({ input, signal }) => effects.rollback(input.status, signal)),
    } as never,
  });
}
