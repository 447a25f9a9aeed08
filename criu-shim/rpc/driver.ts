/**
 * Runs one CRIU RPC request (dump, restore, check, version) through the swrk helper: sends the request,
 * answers each NOTIFY through the caller's async hook, and turns every failure into a CriuError with the
 * tail of CRIU's own log attached.
 */
import path from 'node:path';
import { CriuError, oneLine } from '../../bus/errors.js';
import { errorLine, isNoise, lastLines, readLogTail } from './log.js';
import { decodeCriuResp, encodeCriuReq, type CriuReq, type CriuResp } from './proto.js';
import { defaultHelperPath, HELPER_EXIT, startSwrk, type InheritedFile, type SwrkExit, type SwrkSession } from './swrk.js';

/** One notification CRIU sent (notify_scripts): the action-script point it reached. */
export interface CriuNotification {
  /** e.g. network-lock, post-dump, pre-restore, setup-namespaces, post-restore, network-unlock, post-resume. */
  script: string;
  /** Root pid of the tree, on setup-namespaces and post-restore only. */
  pid?: number;
}

/** How the caller takes part in a request; everything optional. */
export interface CriuHooks {
  /**
   * Called for each notification; CRIU waits until the promise settles. A rejection answers
   * notify_success=false, which makes CRIU abort (a dump then resumes the tree).
   */
  onNotify?: (notification: CriuNotification) => Promise<void>;
  /**
   * Aborting (like the timeout) makes CRIU unwind at its pending or next notification and resume the tree;
   * CRIU and the helper are killed if that takes over CRIU_ABORT_GRACE_MS, or at once without onNotify.
   */
  signal?: AbortSignal;
  /** Overrides the operation's default bound. */
  timeoutMs?: number;
}

/** Where the binaries are. `criuPath` is required so criu-shim never guesses the project layout of its callers. */
export interface CriuBinaries {
  criuPath: string;
  /** Default: <root>/dist/native/pm-criu-swrk (scripts/build-native.sh). */
  helperPath?: string;
}

/** What one request needs besides the message itself. */
export interface RpcCall {
  /** For messages: "dump", "restore", ... */
  op: string;
  /** Extra context for the one-line message, e.g. "of pid 42". */
  subject: string;
  request: CriuReq;
  binaries: CriuBinaries;
  inherit: readonly InheritedFile[];
  /** Extra environment for CRIU (e.g. CRIU_LAZY_PAGES_IN_TASKS, patch 0004). */
  env?: Readonly<Record<string, string>>;
  /** CRIU's log file, read for the error's logTail; undefined when CRIU logs to stderr (check, version). */
  logPath: string | undefined;
  timeoutMs: number;
  hooks: CriuHooks;
}

/** Cap on NOTIFY round trips per request: CRIU sends about ten, so more means a loop. */
const MAX_NOTIFICATIONS = 256;
/** After its final response CRIU only closes files and exits; a helper still running after this is stuck. */
export const CRIU_EXIT_AFTER_RESPONSE_MS = 10_000;

interface Outcome {
  response?: CriuResp;
  /** Why the exchange stopped early (abort, timeout, broken stream, hook failure), if it did. */
  problem?: string;
  cause?: unknown;
  exit: SwrkExit;
}

/** Why an exchange ends early. */
interface Stop {
  problem: string;
  cause?: unknown;
}

/**
 * How long CRIU may take to unwind after we answered a notification with failure (unlock the network, take
 * sockets out of repair, resume the tree) before it is SIGKILLed. Unwinding takes milliseconds, but an abort
 * that lands mid-dump must wait for CRIU's next notification, which comes after the memory is written.
 */
export const CRIU_ABORT_GRACE_MS = 5_000;

/**
 * The state of one exchange. An abort or timeout stops it gracefully when CRIU sends notifications: the
 * pending (or next) notification is answered with failure, so CRIU itself unlocks the network, turns TCP
 * repair off and resumes the tree; CRIU is SIGKILLed only if it has not finished after CRIU_ABORT_GRACE_MS.
 * Killed mid-dump, CRIU would leave established sockets in repair mode in a running tree (recv fails EPERM).
 */
class Exchange {
  private stop: Stop | undefined;
  private hookFailure: Stop | undefined;
  /** CRIU is blocked waiting for our answer to a notification. */
  private awaitingAnswer = false;
  private timers: NodeJS.Timeout[] = [];
  private wake: () => void = () => {};
  /** Settles when a stop is requested, so a running hook stops holding up the answer. */
  private readonly stopping = new Promise<void>((resolve) => (this.wake = resolve));
  private readonly graceful: boolean;

  constructor(private readonly call: RpcCall, private readonly session: SwrkSession) {
    this.graceful = call.request.opts?.notifyScripts === true;
  }

  private readonly onAbort = (): void => this.requestStop({ problem: 'aborted', cause: this.call.hooks.signal?.reason });

  private answer(ok: boolean): void {
    this.awaitingAnswer = false;
    this.session.send(encodeCriuReq({ type: 'NOTIFY', notifySuccess: ok }));
  }

  private requestStop(stop: Stop): void {
    if (this.stop) return;
    this.stop = stop;
    this.wake();
    if (!this.graceful) return this.session.kill();
    if (this.awaitingAnswer) this.answer(false);
    this.timers.push(setTimeout(() => this.session.kill(), CRIU_ABORT_GRACE_MS));
  }

  private async runHook(resp: CriuResp): Promise<Stop | undefined> {
    const notification: CriuNotification = { script: resp.notify?.script ?? '' };
    if (resp.notify?.pid !== undefined) notification.pid = resp.notify.pid;
    try {
      await this.call.hooks.onNotify?.(notification);
      return undefined;
    } catch (e) {
      return { problem: `the ${notification.script} hook failed: ${oneLine(e)}`, cause: e };
    }
  }

  private result(response: CriuResp | undefined): Omit<Outcome, 'exit'> {
    const why = this.stop ?? this.hookFailure;
    const broken = this.session.failure ? { problem: this.session.failure.message, cause: this.session.failure } : {};
    return { ...(response ? { response } : {}), ...(why ?? broken) };
  }

  /** The request/notify loop: CRIU's final response, or why there is none. Never throws. */
  async run(): Promise<Omit<Outcome, 'exit'>> {
    const { signal } = this.call.hooks;
    signal?.addEventListener('abort', this.onAbort, { once: true });
    this.timers.push(setTimeout(() => this.requestStop({ problem: `timed out after ${this.call.timeoutMs} ms` }), this.call.timeoutMs));
    try {
      this.session.send(encodeCriuReq(this.call.request));
      for (let i = 0; i <= MAX_NOTIFICATIONS; i++) {
        // Always settles: CRIU answers, exits, or is killed by requestStop's timers.
        const bytes = await this.session.next();
        if (bytes === undefined) return this.result(undefined);
        const resp = decodeCriuResp(bytes);
        if (resp.type !== 'NOTIFY') return this.result(resp);
        this.awaitingAnswer = true;
        if (this.stop) {
          this.answer(false);
          continue;
        }
        // After a failed hook CRIU is unwinding: its network-unlock still reaches the caller's hook.
        const failed = await Promise.race([this.runHook(resp), this.stopping.then(() => undefined)]);
        this.hookFailure = this.hookFailure ?? failed;
        if (this.awaitingAnswer) this.answer(failed === undefined);
      }
      this.session.kill();
      return { problem: `more than ${MAX_NOTIFICATIONS} notifications` };
    } catch (e) {
      this.session.kill();
      return { problem: `bad message from criu: ${oneLine(e)}`, cause: e };
    } finally {
      for (const t of this.timers) clearTimeout(t);
      signal?.removeEventListener('abort', this.onAbort);
    }
  }
}

function describeExit(exit: SwrkExit): string {
  if (exit.spawnError) return `cannot start the swrk helper (built by scripts/build-native.sh): ${exit.spawnError.message}`;
  if (exit.signal) return `helper killed by ${exit.signal}`;
  if (exit.code === HELPER_EXIT.helperFailed) return 'the swrk helper failed';
  if (exit.code === HELPER_EXIT.criuNotExecutable) return 'criu could not be executed';
  if (exit.code !== null && exit.code > 128) return `criu killed by signal ${exit.code - 128}`;
  return `criu exited with code ${exit.code}`;
}

async function failure(call: RpcCall, session: SwrkSession, outcome: Outcome): Promise<CriuError> {
  const fromLog = call.logPath === undefined ? undefined : await readLogTail(call.logPath);
  const stderr = lastLines(session.stderr()).trim();
  // One bound for both sources: the log's end, then what reached stderr (usually nothing).
  const logTail = lastLines([fromLog, stderr === '' ? undefined : `[helper stderr]\n${stderr}`].filter((s) => s).join('\n'));
  const r = outcome.response;
  const crErrmsg = r?.crErrmsg !== undefined && !isNoise(r.crErrmsg) ? r.crErrmsg : undefined;
  const exitWhy = [describeExit(outcome.exit), errorLine(stderr)].filter((x) => x !== undefined).join(': ');
  const why =
    outcome.problem ??
    errorLine(fromLog) ??
    crErrmsg ??
    // Before its log file is open, CRIU writes to stderr (e.g. a missing images dir).
    (r ? errorLine(stderr) ?? `criu reported failure${r.crErrno ? ` (errno ${r.crErrno})` : ''}` : exitWhy);
  const where = fromLog === undefined ? '' : ` (log: ${call.logPath})`;
  const message = oneLine(`criu ${call.op}${call.subject} failed: ${why}${where}`);
  return new CriuError(message, { cause: outcome.cause, ...(logTail === '' ? {} : { logTail }) });
}

async function exitedWithin(session: SwrkSession, ms: number): Promise<SwrkExit> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  const exit = await Promise.race([session.exited, late]);
  clearTimeout(timer);
  if (exit !== undefined) return exit;
  session.kill();
  return session.exited;
}

/**
 * Runs one request and returns CRIU's successful response. Throws CriuError if CRIU fails, exits without
 * answering, the hook rejects, the call times out or is aborted.
 */
export async function runRpc(call: RpcCall, started?: SwrkSession): Promise<CriuResp> {
  if (call.hooks.signal?.aborted) {
    started?.kill();
    throw new CriuError(`criu ${call.op}${call.subject} aborted before it started`, { cause: call.hooks.signal.reason });
  }
  const helper = call.binaries.helperPath ?? defaultHelperPath();
  // A session started ahead (started with the same binaries and files) is used once; one that died is not.
  const session = started && !started.ended() ? started : startSwrk(helper, call.binaries.criuPath, call.inherit, call.env);
  const partial = await new Exchange(call, session).run();
  const exit = await exitedWithin(session, CRIU_EXIT_AFTER_RESPONSE_MS);
  const outcome: Outcome = { ...partial, exit };
  const ok = outcome.problem === undefined && outcome.response?.success === true && exit.code === 0;
  if (ok) return outcome.response!;
  throw await failure(call, session, outcome);
}

/** The log file CRIU writes in its work dir (which is the images dir unless a work dir is given). */
export function logPathOf(imagesDir: string, workDir: string | undefined, logFile: string): string {
  return path.join(workDir ?? imagesDir, logFile);
}
