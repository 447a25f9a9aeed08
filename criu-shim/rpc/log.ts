/** CRIU's own log (dump.log / restore.log): its tail is what explains a failure. */
import { open } from 'node:fs/promises';

/** The cause of a CRIU failure is in its last lines; forty hold the error and the steps that led to it. */
export const LOG_TAIL_LINES = 40;
/** Read at most this much from the end: debug logs run to megabytes, but the tail needs only kilobytes. */
const LOG_TAIL_READ_BYTES = 64 * 1024;

/** The last `lines` lines of a file, or undefined if it cannot be read (e.g. CRIU never opened it). */
export async function readLogTail(file: string, lines = LOG_TAIL_LINES): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const { size } = await fh.stat();
    const start = Math.max(0, size - LOG_TAIL_READ_BYTES);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const all = buf.toString('utf8').split('\n');
    if (all[all.length - 1] === '') all.pop();
    // A read that started mid-file begins with a partial line: drop it.
    if (start > 0) all.shift();
    return all.slice(-lines).join('\n');
  } catch {
    return undefined;
  } finally {
    await fh.close();
  }
}

/** Keeps only the last `lines` lines of a text. */
export function lastLines(text: string, lines = LOG_TAIL_LINES): string {
  const all = text.split('\n');
  if (all[all.length - 1] === '') all.pop();
  return all.slice(-lines).join('\n');
}

/**
 * Error lines that never name the cause: the closing verdicts, and the rlimit complaint CRIU logs at every
 * start on machines without CAP_SYS_RESOURCE (docs/environment.md). CRIU's own cr_errmsg is the *first*
 * error it logged, which here is that rlimit line, so it cannot be trusted either.
 */
const NOISE = [/Dumping FAILED/, /Restoring FAILED/, /Can't setup RLIMIT_NOFILE for self/];

/** True for an error line that says nothing about why CRIU failed. */
export function isNoise(line: string): boolean {
  return NOISE.some((re) => re.test(line));
}

/**
 * The line that names the failure: the first "Error (file:line): ..." line of the tail that is not noise
 * (CRIU stops at the first real error; later ones are the unwinding), without timestamp and source position.
 * Falls back to the last non-empty line that is not noise.
 */
export function errorLine(tail: string | undefined): string | undefined {
  if (!tail) return undefined;
  const lines = tail.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !isNoise(l));
  const pick = lines.find((l) => /\bError \(/.test(l)) ?? lines[lines.length - 1];
  if (pick === undefined) return undefined;
  return pick.replace(/^\(\s*[\d.]+\)\s*/, '').replace(/^(?:pie: \d+: )?Error \([^)]*\):\s*/, '');
}
