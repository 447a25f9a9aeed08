/** Terminal output: aligned tables for people, JSON for scripts, one-line errors for everyone. */
import { oneLine, PodMotionError } from '../bus/errors.js';

/** A CLI usage mistake: printed as one line, exit code 2. */
export class UsageError extends Error {
  static { this.prototype.name = 'UsageError'; }
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Prints rows as a left-aligned table with a header row. */
export function printTable(header: string[], rows: Array<Array<string | number | boolean | undefined>>): void {
  const cells = [header, ...rows.map((r) => r.map((c) => (c === undefined ? '-' : String(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  for (const r of cells) {
    process.stdout.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd() + '\n');
  }
}

/** Exit code for an error: 2 for usage, 1 for everything else. */
export function exitCodeFor(err: unknown): number {
  return err instanceof UsageError ? 2 : 1;
}

/** One line on stderr, prefixed with the program name; JSON mode prints the wire form instead. */
export function printError(err: unknown, json: boolean): void {
  if (json) {
    const code = err instanceof PodMotionError ? err.code : err instanceof UsageError ? 'USAGE' : 'INTERNAL';
    process.stderr.write(JSON.stringify({ error: { code, message: oneLine(err) } }) + '\n');
  } else {
    const text = err instanceof UsageError ? err.message.replace(/\s*\n\s*/g, ' ') : oneLine(err);
    process.stderr.write(`podmotion: ${text}\n`);
  }
}
