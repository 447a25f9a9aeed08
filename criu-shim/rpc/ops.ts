/** The four CRIU operations PodMotion uses, as typed calls over runRpc. */
import { CriuError } from '../../bus/errors.js';
import { logPathOf, runRpc, type CriuBinaries, type CriuHooks } from './driver.js';
import type { CriuCgMode, CriuNetworkLock, CriuOpts, CriuVersion } from './proto.js';
import { defaultHelperPath, startSwrk, type InheritedFile, type SwrkSession } from './swrk.js';

/**
 * A dump writes every page of the pod while it is frozen; two minutes covers gigabytes to local disk, so
 * anything longer means CRIU is stuck (e.g. a task that cannot be seized).
 */
export const CRIU_DUMP_TIMEOUT_MS = 120_000;
/** A restore reads the same images back; the same bound as a dump. */
export const CRIU_RESTORE_TIMEOUT_MS = 120_000;
/** check and version only probe the kernel (about 250 ms of kerndat, a few seconds for check). */
export const CRIU_QUERY_TIMEOUT_MS = 30_000;
/** runc's choice too: the debug log is what explains a failure, and costs little next to the page copy. */
export const DEFAULT_CRIU_LOG_LEVEL = 4;

/** Where the helper puts the work dir for CRIU (work_dir_fd), and the first --inherit descriptor. */
const WORK_DIR_FD = 9;
const FIRST_INHERIT_FD = 10;

/** 0 messages only, 1 errors, 2 warnings (CRIU's default), 3 info, 4 debug. */
export type CriuLogLevel = 0 | 1 | 2 | 3 | 4;

/**
 * What happens to the dumped tree after a successful dump:
 * - `kill`: CRIU's default; the tree is SIGKILLed while its TCP sockets are still in repair mode (no RST).
 * - `stop`: leave_stopped; every task gets SIGSTOP and is detached, sockets stay in repair mode and CRIU
 *   sends no network-unlock. Resuming it needs SIGCONT *and* TCP_REPAIR off on each socket (README).
 * - `run`: leave_running; network-unlock, repair off, tasks resume (a checkpoint, not a migration).
 * On any failure CRIU resumes the tree whatever this says.
 */
export type DumpFinalState = 'kill' | 'stop' | 'run';

/** Options shared by dump and restore. */
interface ImageOptions extends CriuBinaries {
  /** Images directory (CRIU opens it by path: images_dir). */
  imagesDir: string;
  /** Where CRIU writes its log and temporary files; default imagesDir. Passed as work_dir_fd. */
  workDir?: string;
  /** Log file name inside the work dir; default dump.log / restore.log. */
  logFile?: string;
  /** Default DEFAULT_CRIU_LOG_LEVEL. */
  logLevel?: CriuLogLevel;
  /** Checkpoint/restore established TCP connections (TCP repair). */
  tcpEstablished?: boolean;
  /** `--external` keys, e.g. `net[<inode>]:extnet`. */
  external?: readonly string[];
  /** CRIU's own network lock; PodMotion holds traffic itself and uses SKIP. CRIU's default is IPTABLES. */
  networkLock?: CriuNetworkLock;
  /** Allow a root task that is not a session leader (a pod init started by `unshare --fork` is not). */
  shellJob?: boolean;
  fileLocks?: boolean;
  extUnixSk?: boolean;
  manageCgroupsMode?: CriuCgMode;
  /** A CRIU configuration file, for options the RPC has no field for (e.g. `file-validation filesize`). */
  configFile?: string;
}

export interface CriuDumpOptions extends ImageOptions {
  /** Root of the tree to dump. */
  pid: number;
  /** Default `kill`. */
  finalState?: DumpFinalState;
  tcpSkipInFlight?: boolean;
  orphanPtsMaster?: boolean;
  /**
   * Lazy dump (post-copy): private anonymous memory is not written to the images; once the dump is done
   * (post-dump) CRIU serves it page by page on a socket connected to this AF_UNIX listener, and the dump
   * call settles only when the peer ends that stream. The tree stays frozen until then. With finalState
   * `stop`, lazy pages stay in the tasks (patch 0004): CRIU then has none to serve, and the caller serves
   * them from the stopped tree (transfer/lazy.ts), ending CRIU's stream at once.
   */
  lazyPagesSocket?: string;
}

/** A file the helper opens (read-only) and CRIU receives as `inherit_fd fd[N]:key`. */
export interface CriuInheritFile {
  key: string;
  /** e.g. /run/netns/NAME for an external network namespace dumped as `net[<inode>]:key`. */
  path: string;
}

export interface CriuRestoreOptions extends ImageOptions {
  inherit?: readonly CriuInheritFile[];
  /** Close restored TCP connections instead of repairing them. */
  tcpClose?: boolean;
  /** Fault lazy memory in from a `criu lazy-pages` daemon working in the same work dir (the images dir). */
  lazyPages?: boolean;
}

export interface CriuRestoreResult {
  /** Host pid of the restored root task. Its parent is CRIU, so it is reparented when CRIU exits. */
  pid: number;
}

function commonOpts(o: ImageOptions, defaultLog: string, notify: boolean): CriuOpts {
  return {
    imagesDir: o.imagesDir,
    ...(o.workDir === undefined ? {} : { workDirFd: WORK_DIR_FD }),
    logFile: o.logFile ?? defaultLog,
    logLevel: o.logLevel ?? DEFAULT_CRIU_LOG_LEVEL,
    notifyScripts: notify,
    tcpEstablished: o.tcpEstablished,
    external: o.external,
    networkLock: o.networkLock,
    shellJob: o.shellJob,
    fileLocks: o.fileLocks,
    extUnixSk: o.extUnixSk,
    manageCgroupsMode: o.manageCgroupsMode,
    configFile: o.configFile,
  };
}

function workDirInherit(o: { workDir?: string }): InheritedFile[] {
  return o.workDir === undefined ? [] : [{ path: o.workDir, fd: WORK_DIR_FD }];
}

/** The files a restore hands CRIU: its work dir, then each `inherit` file from FIRST_INHERIT_FD on. */
function restoreFiles(o: { workDir?: string; inherit?: readonly CriuInheritFile[] }): InheritedFile[] {
  return [...workDirInherit(o), ...(o.inherit ?? []).map((f, i) => ({ path: f.path, fd: FIRST_INHERIT_FD + i }))];
}

/**
 * Dumps the process tree rooted at `opts.pid` into `opts.imagesDir`. With `hooks.onNotify`, CRIU waits for
 * each notification's promise (network-lock while the tree is frozen, post-dump once the images are
 * written). Throws CriuError (with logTail) on any failure; the tree then keeps running.
 */
export async function criuDump(opts: CriuDumpOptions, hooks: CriuHooks = {}): Promise<void> {
  const logFile = opts.logFile ?? 'dump.log';
  const final = opts.finalState ?? 'kill';
  await runRpc({
    op: 'dump',
    subject: ` of pid ${opts.pid}`,
    request: {
      type: 'DUMP',
      opts: {
        ...commonOpts(opts, logFile, hooks.onNotify !== undefined),
        pid: opts.pid,
        leaveRunning: final === 'run' ? true : undefined,
        leaveStopped: final === 'stop' ? true : undefined,
        tcpSkipInFlight: opts.tcpSkipInFlight,
        orphanPtsMaster: opts.orphanPtsMaster,
        ...(opts.lazyPagesSocket === undefined ? {} : { lazyPages: true, ps: { fd: FIRST_INHERIT_FD } }),
      },
    },
    binaries: opts,
    inherit: [
      ...workDirInherit(opts),
      ...(opts.lazyPagesSocket === undefined ? [] : [{ path: opts.lazyPagesSocket, fd: FIRST_INHERIT_FD, connect: true }]),
    ],
    // The tree stays stopped, so its memory is where the lazy pages are served from: none is copied in the
    // freeze (patch 0004). Only with leave_stopped; CRIU ignores it otherwise.
    ...(opts.lazyPagesSocket !== undefined && final === 'stop' ? { env: { CRIU_LAZY_PAGES_IN_TASKS: '1' } } : {}),
    logPath: logPathOf(opts.imagesDir, opts.workDir, logFile),
    timeoutMs: hooks.timeoutMs ?? CRIU_DUMP_TIMEOUT_MS,
    hooks,
  });
}

/**
 * Restores the tree saved in `opts.imagesDir`, detached: the restored root outlives CRIU and the helper.
 * Each `opts.inherit` file reaches CRIU as `inherit_fd fd[N]:key`. Throws CriuError (with logTail).
 */
export async function criuRestore(opts: CriuRestoreOptions, hooks: CriuHooks = {}, prepared?: PreparedRestore): Promise<CriuRestoreResult> {
  const logFile = opts.logFile ?? 'restore.log';
  const inherited = (opts.inherit ?? []).map((f, i) => ({ ...f, fd: FIRST_INHERIT_FD + i }));
  const files = restoreFiles(opts);
  const started = prepared?.take(opts, files);
  const resp = await runRpc({
    op: 'restore',
    subject: ` from ${opts.imagesDir}`,
    request: {
      type: 'RESTORE',
      opts: {
        ...commonOpts(opts, logFile, hooks.onNotify !== undefined),
        inheritFd: inherited.map((f) => ({ key: f.key, fd: f.fd })),
        tcpClose: opts.tcpClose,
        lazyPages: opts.lazyPages,
      },
    },
    binaries: opts,
    inherit: files,
    logPath: logPathOf(opts.imagesDir, opts.workDir, logFile),
    timeoutMs: hooks.timeoutMs ?? CRIU_RESTORE_TIMEOUT_MS,
    hooks,
  }, started);
  if (resp.restore === undefined) throw new CriuError(`criu restore from ${opts.imagesDir} succeeded without a pid`);
  return { pid: resp.restore.pid };
}

/**
 * CRIU started for a restore ahead of time (the helper spawned, `criu swrk` waiting for its request), so that
 * a restore inside a freeze does not wait for the spawns (~15 ms here). Used by one criuRestore whose binaries
 * and inherited files are the same; otherwise discarded and a fresh CRIU started as usual.
 */
export interface PreparedRestore {
  /** The session, if it suits a restore with these binaries and files (and was not taken or discarded). */
  take(binaries: CriuBinaries, files: readonly InheritedFile[]): SwrkSession | undefined;
  /** Was it used by a restore? */
  readonly taken: boolean;
  /** Ends the waiting CRIU (idempotent; nothing to do once taken). */
  discard(): void;
}

export function prepareRestore(opts: CriuBinaries & { inherit?: readonly CriuInheritFile[]; workDir?: string }): PreparedRestore {
  const files = restoreFiles(opts);
  const helper = opts.helperPath ?? defaultHelperPath();
  let session: SwrkSession | undefined = startSwrk(helper, opts.criuPath, files);
  let taken = false;
  const key = (b: CriuBinaries, f: readonly InheritedFile[]) => JSON.stringify([b.criuPath, b.helperPath ?? defaultHelperPath(), f]);
  const mine = key(opts, files);
  return {
    take(binaries, wanted) {
      const s = session;
      session = undefined;
      if (!s) return undefined;
      if (key(binaries, wanted) !== mine) {
        s.kill();
        return undefined;
      }
      taken = true;
      return s;
    },
    get taken() {
      return taken;
    },
    discard() {
      session?.kill();
      session = undefined;
    },
  };
}

/** `criu check` over RPC: resolves if CRIU can work on this kernel; CriuError (stderr in logTail) if not. */
export async function criuCheck(binaries: CriuBinaries, hooks: CriuHooks = {}): Promise<void> {
  await runRpc({
    op: 'check', subject: '', request: { type: 'CHECK' }, binaries, inherit: [], logPath: undefined,
    timeoutMs: hooks.timeoutMs ?? CRIU_QUERY_TIMEOUT_MS, hooks,
  });
}

/** The version of the CRIU binary, as it reports it over RPC. */
export async function criuVersion(binaries: CriuBinaries, hooks: CriuHooks = {}): Promise<CriuVersion> {
  const resp = await runRpc({
    op: 'version', subject: '', request: { type: 'VERSION' }, binaries, inherit: [], logPath: undefined,
    timeoutMs: hooks.timeoutMs ?? CRIU_QUERY_TIMEOUT_MS, hooks,
  });
  if (resp.version === undefined) throw new CriuError('criu version: the response carries no version');
  return resp.version;
}
