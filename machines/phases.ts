/**
 * The migration's phases: one string union shared by the machine's states, the NATS status messages,
 * the PodMigration CR status and the CLI.
 */

/** The 12 working phases, in the order a migration runs them. */
export const PHASES = [
  'SocketInventory',
  'Validating',
  'DestinationPrewarm',
  'PreCopyMemory',
  'ZeroWindowArm',
  'FinalFreeze',
  'OverlayHandoff',
  'Restore',
  'DisengageHold',
  'TCPVerifying',
  'ServiceVerifying',
  'Cutover',
] as const;

/** One of the 12 working phases. */
export type WorkPhase = (typeof PHASES)[number];

/** Phases after which nothing more happens. */
export const TERMINAL_PHASES = ['Complete', 'Validated', 'RolledBack', 'Cancelled', 'Failed'] as const;

/** A phase the migration ends in. */
export type TerminalPhase = (typeof TERMINAL_PHASES)[number];

/**
 * Every phase a migration can be in:
 * - `Pending` — accepted, no machine has run yet;
 * - a working phase (see PHASES);
 * - `RollingBack` — undoing a migration that failed, timed out, was cancelled or lost its coordinator before Cutover;
 * - `Complete` — the pod serves from the destination and the source copy is gone;
 * - `Validated` — a dry run finished after Validating;
 * - `RolledBack` — the pod serves from the source again;
 * - `Cancelled` — rolled back because a user asked;
 * - `Failed` — a rollback or the cutover failed; `error` says which and what still runs.
 */
export type Phase = 'Pending' | WorkPhase | 'RollingBack' | TerminalPhase;

/** How memory moves to the destination. */
export type Strategy = 'PreCopy' | 'PostCopy' | 'Cold';

/** The strategies, for validating user input. */
export const STRATEGIES: readonly Strategy[] = ['PreCopy', 'PostCopy', 'Cold'];

const TERMINAL: ReadonlySet<Phase> = new Set<Phase>(TERMINAL_PHASES);
const WORK: ReadonlySet<Phase> = new Set<Phase>(PHASES);

/** Labels the CLI shows where a phase does more than its name says. */
const LABELS: Partial<Record<Phase, string>> = {
  FinalFreeze: 'FinalFreeze+StateCapture',
  Restore: 'Restore+SocketReattach',
  Cutover: 'Cutover+Complete',
};

/** True once nothing more will happen to the migration. */
export function isTerminal(phase: Phase): phase is TerminalPhase {
  return TERMINAL.has(phase);
}

/** True for the 12 working phases. */
export function isWorkPhase(phase: Phase): phase is WorkPhase {
  return WORK.has(phase);
}

/** The label the CLI prints for a phase. */
export function phaseLabel(phase: Phase): string {
  return LABELS[phase] ?? phase;
}

/** Position of a working phase in PHASES (0..11); -1 for Pending, RollingBack and terminal phases. */
export function phaseIndex(phase: Phase): number {
  return PHASES.indexOf(phase as WorkPhase);
}

/** True while a migration can still be cancelled and rolled back: Pending and the 11 phases before Cutover. */
export function isBeforeCutover(phase: Phase): boolean {
  return phase === 'Pending' || (isWorkPhase(phase) && phaseIndex(phase) < phaseIndex('Cutover'));
}
