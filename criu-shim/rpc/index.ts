/**
 * CRIU over its RPC interface (`criu swrk`), through the pm-criu-swrk helper. The public surface of
 * criu-shim/rpc: four operations, their options, and the constants that bound them.
 */
export {
  criuCheck,
  criuDump,
  criuRestore,
  criuVersion,
  CRIU_DUMP_TIMEOUT_MS,
  CRIU_QUERY_TIMEOUT_MS,
  CRIU_RESTORE_TIMEOUT_MS,
  DEFAULT_CRIU_LOG_LEVEL,
  prepareRestore,
  type PreparedRestore,
  type CriuDumpOptions,
  type CriuInheritFile,
  type CriuLogLevel,
  type CriuRestoreOptions,
  type CriuRestoreResult,
  type DumpFinalState,
} from './ops.js';
export { type CriuBinaries, type CriuHooks, type CriuNotification } from './driver.js';
export { type CriuCgMode, type CriuNetworkLock, type CriuVersion } from './proto.js';
export { defaultHelperPath } from './swrk.js';
export { LOG_TAIL_LINES } from './log.js';
