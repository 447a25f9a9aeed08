/**
 * The migration statechart: 12 phases, then Cutover's point of no return; any failure, timeout, cancel or
 * coordinator restart before Cutover rolls back. Pure: every effect is a named promise actor the host
 * supplies with `migrationMachine.provide({ actors })`, and time comes from the actor's clock.
 *
 * Each phase: record its condition (entry) → `persistStatus` → its effect → record the result → next phase.
 * Every status the machine reaches on its way to an end, including the terminal one, is written through
 * `persistStatus` before anything acts on it: a terminal phase is first entered as `Finishing` (context.phase
 * already terminal), which persists and then stops in the final state of the same name.
 */
import { assign, fromPromise, setup, type Snapshot } from 'xstate';
import type { Clock } from '../common/clock.js';
import { TERMINAL_PHASES, type Phase, type TerminalPhase, type WorkPhase } from './phases.js';
import {
  finishCondition, initialStatus, isJsonObject, noteCondition, phaseTimeoutMs, skipMessage, startCondition,
  toPhaseError, type MigrationSpec, type MigrationStatus, type RollbackReason,
} from './status.js';

/** The effect actor each working phase invokes. */
export const PHASE_EFFECTS = {
  SocketInventory: 'socketInventory',
  Validating: 'validate',
  DestinationPrewarm: 'prewarmDestination',
  PreCopyMemory: 'preCopyMemory',
  ZeroWindowArm: 'armHold',
  FinalFreeze: 'freezeAndCapture',
  OverlayHandoff: 'handoffOverlay',
  Restore: 'restore',
  DisengageHold: 'disengageHold',
  TCPVerifying: 'verifyTcp',
  ServiceVerifying: 'verifyService',
  Cutover: 'cutover',
} as const satisfies Record<WorkPhase, string>;

/** Name of a phase's effect actor. */
export type EffectName = (typeof PHASE_EFFECTS)[WorkPhase];

/** Every actor a host must provide: the 12 effects, `persistStatus` and `rollback`. */
export type MigrationActorName = EffectName | 'persistStatus' | 'rollback';

/** What every actor the machine invokes receives: the status as it is when the actor starts. */
export interface EffectInput {
  status: MigrationStatus;
}

/** What a host passes to `createActor(migrationMachine, { input })`. */
export interface MigrationInput {
  spec: MigrationSpec;
  nowMs: number;
  /** The Pending status the migration waited in for admission (its Pending condition is kept). */
  pending?: MigrationStatus;
}

/** Stop the migration and roll back; ignored from Cutover on. */
export interface CancelEvent { type: 'CANCEL' }
/** Sent by a coordinator right after restoring the machine from a persisted snapshot. */
export interface ResumeAfterRestartEvent { type: 'RESUME_AFTER_RESTART' }
/** Events the migration machine accepts. */
export type MigrationEvent = CancelEvent | ResumeAfterRestartEvent;

/** First pause between Cutover attempts; each next one doubles, up to CUTOVER_MAX_RETRY_DELAY_MS. */
export const CUTOVER_RETRY_DELAY_MS = 5_000;
export const CUTOVER_MAX_RETRY_DELAY_MS = 60_000;
/**
 * Cutover is idempotent and there is no rolling back after it (the destination serves), so it outlasts a
 * node agent's restart or a partition: 12 attempts span about 8 minutes. Only then does it end Failed.
 */
export const MAX_CUTOVER_ATTEMPTS = 12;

/** The pause after the n-th failed Cutover attempt (n from 1). */
export function cutoverRetryDelayMs(failedAttempts: number): number {
  return Math.min(CUTOVER_MAX_RETRY_DELAY_MS, CUTOVER_RETRY_DELAY_MS * 2 ** Math.max(0, failedAttempts - 1));
}
/** How long the terminal status write may take before the machine stops anyway (it must never hang). */
export const FINAL_PERSIST_TIMEOUT_MS = 15_000;

/** XState's clock plus `now()`, which the machine reads for every timestamp (SimulatedClock has it). */
export interface MigrationClock {
  setTimeout(fn: (...args: unknown[]) => void, timeoutMs: number): unknown;
  clearTimeout(id: unknown): void;
  now(): number;
}

/** Adapts PodMotion's Clock for `createActor(migrationMachine, { clock: migrationClock(clock) })`. */
export function migrationClock(clock: Clock): MigrationClock {
  return {
    now: () => clock.nowMs(),
    setTimeout: (fn, timeoutMs) => clock.setTimer(fn, timeoutMs),
    clearTimeout: (cancel) => {
      if (typeof cancel === 'function') cancel();
    },
  };
}

function nowMs(system: { _clock: unknown }): number {
  const clock = system._clock as Partial<MigrationClock>;
  if (typeof clock.now !== 'function') {
    throw new Error('migrationMachine needs a clock with now(): createActor(machine, { clock: migrationClock(c) })');
  }
  return clock.now();
}

/** The phase a running or persisted machine is in. */
export function phaseOf(snapshot: { context: MigrationStatus }): Phase {
  return snapshot.context.phase;
}

/**
 * A persisted snapshot without its running actors. XState restarts a restored snapshot's pending promise
 * actors; restoring this instead starts nothing until the host sends RESUME_AFTER_RESTART, which decides.
 */
export function snapshotForRestart<T extends Snapshot<unknown>>(persisted: T): T {
  return { ...persisted, children: {} };
}

const notProvided = (name: MigrationActorName) => fromPromise<unknown, EffectInput>(() =>
  Promise.reject(new Error(`${name} not provided: supply it with migrationMachine.provide({ actors })`)));

const invalidResult = (output: unknown) => ({
  code: 'INVALID_RESULT',
  message: `the effect resolved to ${output === null ? 'null' : typeof output}, not a JSON object`,
});

/** Leaves the current phase for RollingBack, recording why in its condition. */
function abandon(
  status: MigrationStatus, now: number, why: RollbackReason, reason: string, message: string,
): MigrationStatus {
  return { ...finishCondition(status, status.phase, false, reason, message, now), rollbackReason: why };
}

const machineSetup = setup({
  types: {
    context: {} as MigrationStatus,
    events: {} as MigrationEvent,
    input: {} as MigrationInput,
    output: {} as MigrationStatus,
  },
  actors: {
    persistStatus: notProvided('persistStatus'),
    rollback: notProvided('rollback'),
    socketInventory: notProvided('socketInventory'),
    validate: notProvided('validate'),
    prewarmDestination: notProvided('prewarmDestination'),
    preCopyMemory: notProvided('preCopyMemory'),
    armHold: notProvided('armHold'),
    freezeAndCapture: notProvided('freezeAndCapture'),
    handoffOverlay: notProvided('handoffOverlay'),
    restore: notProvided('restore'),
    disengageHold: notProvided('disengageHold'),
    verifyTcp: notProvided('verifyTcp'),
    verifyService: notProvided('verifyService'),
    cutover: notProvided('cutover'),
  },
  actions: {
    enterPhase: assign(({ context, system }, p: { phase: Phase }) => {
      const now = nowMs(system);
      return { ...startCondition(context, p.phase, now), phase: p.phase, updatedAtMs: now };
    }),
    completePhase: assign(({ context, system }, p: { output: unknown }) => ({
      ...finishCondition(context, context.phase, true, 'Succeeded', `${context.phase} succeeded`, nowMs(system)),
      results: { ...context.results, [context.phase]: p.output },
    })),
    skipPhase: assign(({ context, system }) => finishCondition(
      context, context.phase, true, 'Skipped', skipMessage(context.spec, context.phase) ?? 'skipped', nowMs(system),
    )),
    failPhase: assign(({ context, system }, p: { error: unknown }) => {
      const error = toPhaseError(context.phase, p.error);
      return { ...abandon(context, nowMs(system), 'failure', 'Failed', `${error.code}: ${error.message}`), error };
    }),
    timeOutPhase: assign(({ context, system }) => {
      const ms = phaseTimeoutMs(context.spec, context.phase);
      const error = { phase: context.phase, code: 'TIMEOUT', message: `${context.phase} took longer than ${ms} ms` };
      return { ...abandon(context, nowMs(system), 'timeout', 'TimedOut', error.message), error };
    }),
    cancelPhase: assign(({ context, system }) => ({
      ...abandon(context, nowMs(system), 'cancel', 'Cancelled', 'cancelled on request'),
      cancelRequested: true,
    })),
    interruptPhase: assign(({ context, system }) => abandon(
      context, nowMs(system), 'coordinator-restart', 'CoordinatorRestart', 'the coordinator restarted during this phase',
    )),
    countCutoverAttempt: assign(({ context }) => ({ cutoverAttempts: context.cutoverAttempts + 1 })),
    noteCutoverRetry: assign(({ context, system }, p: { error: unknown }) => {
      const e = toPhaseError('Cutover', p.error);
      const message = `attempt ${context.cutoverAttempts} of ${MAX_CUTOVER_ATTEMPTS} failed (${e.code}: ${e.message})`;
      return noteCondition(context, 'Cutover', 'Retrying', message, nowMs(system));
    }),
    failCutover: assign(({ context, system }, p: { error: unknown }) => {
      const e = toPhaseError('Cutover', p.error);
      const message = `${e.message}; the destination is serving and the source copy was not removed`;
      const error = { ...e, message };
      return { ...finishCondition(context, 'Cutover', false, 'Failed', message, nowMs(system)), error };
    }),
    finishRollback: assign(({ context, system }, p: { output: unknown }) => ({
      ...finishCondition(context, 'RollingBack', true, 'Succeeded', 'the pod serves from the source', nowMs(system)),
      results: isJsonObject(p.output) ? { ...context.results, RollingBack: p.output } : context.results,
    })),
    failRollback: assign(({ context, system }, p: { error: unknown; code?: string }) => {
      const e = toPhaseError('RollingBack', p.error, p.code);
      const error = { ...e, message: `rollback failed, the source may not be serving: ${e.message}` };
      return { ...finishCondition(context, 'RollingBack', false, 'Failed', error.message, nowMs(system)), error };
    }),
    enterTerminal: assign(({ system }, p: { phase: TerminalPhase }) => {
      const now = nowMs(system);
      return { phase: p.phase, endedAtMs: now, updatedAtMs: now };
    }),
  },
  guards: {
    isSkipped: ({ context }) => skipMessage(context.spec, context.phase) !== undefined,
    endsDryRun: ({ context }) => context.spec.dryRun,
    isJsonResult: (_, p: { output: unknown }) => isJsonObject(p.output),
    isInvalidResult: (_, p: { output: unknown }) => !isJsonObject(p.output),
    canRetryCutover: ({ context }) => context.cutoverAttempts < MAX_CUTOVER_ATTEMPTS,
    wasCancelled: ({ context }) => context.rollbackReason === 'cancel',
    phaseIs: ({ context }, p: { phase: Phase }) => context.phase === p.phase,
  },
  delays: {
    phaseTimeout: ({ context }) => phaseTimeoutMs(context.spec, context.phase),
    cutoverRetryDelay: ({ context }) => cutoverRetryDelayMs(context.cutoverAttempts),
    finalPersistTimeout: FINAL_PERSIST_TIMEOUT_MS,
  },
});

const statusInput = ({ context }: { context: MigrationStatus }): EffectInput => ({ status: context });
const terminal = (phase: TerminalPhase) => ({ type: 'enterTerminal', params: { phase } }) as const;
const outputParams = ({ event }: { event: { output: unknown } }) => ({ output: event.output });
const errorParams = ({ event }: { event: { error: unknown } }) => ({ error: event.error });

/** Where a working phase goes when its effect resolved: on, or to Validated at the end of a dry run. */
function advance(phase: WorkPhase, next: WorkPhase) {
  const onward = { target: `#migration.${next}`, actions: { type: 'completePhase', params: outputParams } } as const;
  if (phase !== 'Validating') return [onward];
  const dryRunEnd = {
    guard: 'endsDryRun', target: '#migration.Finishing',
    actions: [{ type: 'completePhase', params: outputParams }, terminal('Validated')],
  } as const;
  return [dryRunEnd, onward];
}

/** A working phase before Cutover: skip or persist, run its effect, and roll back on anything but success. */
function workPhase(phase: Exclude<WorkPhase, 'Cutover'>, next: WorkPhase) {
  return machineSetup.createStateConfig({
    entry: { type: 'enterPhase', params: { phase } },
    initial: 'gate',
    states: {
      /** Decides, before anything is written, whether this spec skips the phase. */
      gate: { always: [{ guard: 'isSkipped', target: 'skipped' }, { target: 'persisting' }] },
      /** Records the phase as True/Skipped and moves on without running its effect. */
      skipped: { always: { target: `#migration.${next}`, actions: 'skipPhase' } },
      /** Writes the status (with this phase's condition) before the phase acts. */
      persisting: {
        invoke: {
          src: 'persistStatus', input: statusInput, onDone: 'running',
          onError: { target: '#migration.RollingBack', actions: { type: 'failPhase', params: errorParams } },
        },
      },
      /** Runs the phase's effect. */
      running: {
        invoke: {
          src: PHASE_EFFECTS[phase], input: statusInput,
          onDone: [
            {
              guard: { type: 'isInvalidResult', params: outputParams }, target: '#migration.RollingBack',
              actions: { type: 'failPhase', params: ({ event }) => ({ error: invalidResult(event.output) }) },
            },
            ...advance(phase, next),
          ],
          onError: { target: '#migration.RollingBack', actions: { type: 'failPhase', params: errorParams } },
        },
      },
    },
    after: { phaseTimeout: { target: '#migration.RollingBack', actions: 'timeOutPhase' } },
    on: {
      CANCEL: { target: '#migration.RollingBack', actions: 'cancelPhase' },
      RESUME_AFTER_RESTART: { target: '#migration.RollingBack', actions: 'interruptPhase' },
    },
  });
}

/** After a failed Cutover attempt: wait and try again, or stop in Failed with the source copy kept. */
function retryOrFail<E>(params: (args: { context: MigrationStatus; event: E }) => { error: unknown }) {
  return [
    { guard: 'canRetryCutover', target: '#migration.Cutover.waiting', actions: { type: 'noteCutoverRetry', params } },
    { target: '#migration.Finishing', actions: [{ type: 'failCutover', params }, terminal('Failed')] },
  ] as const;
}

const cutoverTimeout = ({ context }: { context: MigrationStatus }) => ({
  error: { code: 'TIMEOUT', message: `a Cutover attempt took longer than ${phaseTimeoutMs(context.spec, 'Cutover')} ms` },
});
const rollbackTimeout = ({ context }: { context: MigrationStatus }) => ({
  error: `RollingBack took longer than ${phaseTimeoutMs(context.spec, 'RollingBack')} ms`, code: 'TIMEOUT',
});

const cutover = machineSetup.createStateConfig({
  entry: { type: 'enterPhase', params: { phase: 'Cutover' } },
  initial: 'attempt',
  states: {
    /** One try: write the status, then delete the source copy (idempotent). */
    attempt: {
      entry: 'countCutoverAttempt',
      initial: 'persisting',
      states: {
        /** Writes the status, with the attempt count, before the attempt acts. */
        persisting: {
          invoke: { src: 'persistStatus', input: statusInput, onDone: 'running', onError: retryOrFail(errorParams) },
        },
        /** Runs the cutover effect. */
        running: {
          invoke: {
            src: 'cutover', input: statusInput,
            onDone: [
              {
                guard: { type: 'isJsonResult', params: outputParams }, target: '#migration.Finishing',
                actions: [{ type: 'completePhase', params: outputParams }, terminal('Complete')],
              },
              ...retryOrFail(({ event }: { event: { output: unknown } }) => ({ error: invalidResult(event.output) })),
            ],
            onError: retryOrFail(errorParams),
          },
        },
      },
      after: { phaseTimeout: retryOrFail(cutoverTimeout) },
    },
    /** Waits before the next attempt. */
    waiting: { after: { cutoverRetryDelay: 'attempt' } },
  },
  on: { RESUME_AFTER_RESTART: { target: 'Cutover', reenter: true } },
});

const rollingBack = machineSetup.createStateConfig({
  entry: { type: 'enterPhase', params: { phase: 'RollingBack' } },
  initial: 'persisting',
  states: {
    /** Writes the status; a failed write does not hold up the rollback, which is the safe way out. */
    persisting: { invoke: { src: 'persistStatus', input: statusInput, onDone: 'running', onError: 'running' } },
    /** Runs the rollback: discard the destination copy, return routes, release the hold, resume the source. */
    running: {
      invoke: {
        src: 'rollback', input: statusInput,
        onDone: [
          {
            guard: 'wasCancelled', target: '#migration.Finishing',
            actions: [{ type: 'finishRollback', params: outputParams }, terminal('Cancelled')],
          },
          {
            target: '#migration.Finishing',
            actions: [{ type: 'finishRollback', params: outputParams }, terminal('RolledBack')],
          },
        ],
        onError: {
          target: '#migration.Finishing',
          actions: [{ type: 'failRollback', params: errorParams }, terminal('Failed')],
        },
      },
    },
  },
  after: {
    phaseTimeout: {
      target: '#migration.Finishing',
      actions: [{ type: 'failRollback', params: rollbackTimeout }, terminal('Failed')],
    },
  },
  on: { RESUME_AFTER_RESTART: { target: 'RollingBack', reenter: true } },
});

/** From Finishing to the final state named by context.phase. */
const toTerminal = TERMINAL_PHASES.map((phase) => ({
  guard: { type: 'phaseIs', params: { phase } }, target: `#migration.${phase}`,
}) as const);

/** The migration machine; provide every actor in MigrationActorName before running it. */
export const migrationMachine = machineSetup.createMachine({
  id: 'migration',
  context: ({ input }) => input.pending ?? initialStatus(input.spec, input.nowMs),
  initial: 'SocketInventory',
  output: ({ context }) => context,
  states: {
    /** Lists the pod's TCP sockets on the source. */
    SocketInventory: workPhase('SocketInventory', 'Validating'),
    /** Checks the destination, kernel and CRIU features, volumes and strategy. */
    Validating: workPhase('Validating', 'DestinationPrewarm'),
    /** Prepares namespaces, the pod's IP and MAC (link down) and storage on the destination. */
    DestinationPrewarm: workPhase('DestinationPrewarm', 'PreCopyMemory'),
    /** Streams memory while the pod keeps serving; skipped for Cold. */
    PreCopyMemory: workPhase('PreCopyMemory', 'ZeroWindowArm'),
    /** Arms the traffic hold; skipped without network continuity. */
    ZeroWindowArm: workPhase('ZeroWindowArm', 'FinalFreeze'),
    /** Freezes the pod and captures its remaining state. */
    FinalFreeze: workPhase('FinalFreeze', 'OverlayHandoff'),
    /** Moves the pod IP's routes and FDB entries to the destination. */
    OverlayHandoff: workPhase('OverlayHandoff', 'Restore'),
    /** Restores the pod on the destination, sockets in repair mode. */
    Restore: workPhase('Restore', 'DisengageHold'),
    /** Releases held traffic toward the restored pod; skipped without network continuity. */
    DisengageHold: workPhase('DisengageHold', 'TCPVerifying'),
    /** Checks each connection's 4-tuple and sequence numbers; skipped without network continuity. */
    TCPVerifying: workPhase('TCPVerifying', 'ServiceVerifying'),
    /** Probes the application on the destination. */
    ServiceVerifying: workPhase('ServiceVerifying', 'Cutover'),
    /** Deletes the source copy; retried, never rolled back. */
    Cutover: cutover,
    /** Undoes a migration stopped before Cutover. */
    RollingBack: rollingBack,
    /** Writes the terminal status (context.phase is already terminal), then stops. */
    Finishing: {
      invoke: { src: 'persistStatus', input: statusInput, onDone: toTerminal, onError: toTerminal },
      after: { finalPersistTimeout: toTerminal },
      on: { RESUME_AFTER_RESTART: { target: 'Finishing', reenter: true } },
    },
    /** The pod serves from the destination; the source copy is gone. */
    Complete: { type: 'final' },
    /** The dry run passed Validating. */
    Validated: { type: 'final' },
    /** The pod serves from the source again. */
    RolledBack: { type: 'final' },
    /** Rolled back on request; the pod serves from the source. */
    Cancelled: { type: 'final' },
    /** Rollback or Cutover failed; `error` says which and what still runs. */
    Failed: { type: 'final' },
  },
});

/** The migration machine's type, for hosts that hold actors of it. */
export type MigrationMachine = typeof migrationMachine;
