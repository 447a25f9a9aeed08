/** The pure migration statecharts: phases, the status model and the migration machine. */
export {
  PHASES, STRATEGIES, TERMINAL_PHASES, isBeforeCutover, isTerminal, isWorkPhase, phaseIndex, phaseLabel,
  type Phase, type Strategy, type TerminalPhase, type WorkPhase,
} from './phases.js';
export {
  DEFAULT_TIMEOUTS_MS, MAX_ERROR_MESSAGE_CHARS, MAX_TIMEOUT_MS, conditionOf, finishCondition, initialStatus,
  admittedStatus, cancelledWhilePending, isJsonObject, noteCondition, outcomeOf, queuedStatus, phaseTimeoutMs, skipMessage, startCondition, statusChanged, toPhaseError,
  type Condition, type ConditionStatus, type MigrationSpec, type MigrationStatus, type Outcome, type PhaseError,
  type RollbackReason, type TimedPhase,
} from './status.js';
export {
  CUTOVER_RETRY_DELAY_MS, FINAL_PERSIST_TIMEOUT_MS, MAX_CUTOVER_ATTEMPTS, cutoverRetryDelayMs, PHASE_EFFECTS, migrationClock,
  migrationMachine, phaseOf, snapshotForRestart,
  type CancelEvent, type EffectInput, type EffectName, type MigrationActorName, type MigrationClock,
  type MigrationEvent, type MigrationInput, type MigrationMachine, type ResumeAfterRestartEvent,
} from './migration.js';
