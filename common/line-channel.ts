/**
 * Commands to a helper process, one line each, answered one line each and in order (the native helpers
 * pm-wptrack, pm-pages and pm-page-source --store speak this way). A helper may also announce something
 * unasked, on a line of its own that starts with `@`: given `onNotice`, such lines go there, not to a command.
 */
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';

export class LineChannel {
  private waiting: Array<{ resolve(line: string): void; reject(e: Error): void }> = [];
  private ended: (() => Error) | undefined;

  constructor(input: Readable, private readonly output: Writable, onNotice?: (line: string) => void) {
    // A helper that dies mid-write makes EPIPE on its socket; readline re-emits the input's errors, and one
    // nobody listens to would take the whole agent down. Either way the channel ends: commands fail, one line each.
    const failed = (e: Error) => this.fail(e);
    // Its output closing ends it too; a moment later, so that whoever watches the helper's exit can say why first.
    const closed = () => setTimeout(() => this.end(() => new Error("the helper's channel closed")), 50).unref();
    const line = (l: string) => {
      if (onNotice && l.startsWith('@')) onNotice(l.slice(1));
      else this.waiting.shift()?.resolve(l);
    };
    createInterface({ input }).on('line', line).on('error', failed).on('close', closed);
    output.on('error', failed);
  }

  private fail(e: Error): void {
    this.end(() => new Error(`the helper's channel failed: ${e.message}`));
  }

  /** The helper is gone: every command waiting, and every later one, fails with `why()`. */
  end(why: () => Error): void {
    this.ended ??= why;
    for (const w of this.waiting.splice(0)) w.reject(why());
  }

  /** Sends a command; resolves with its answer. With `timeout`, fails (and calls `onTimeout`) past that. */
  send(line: string, timeout?: { ms: number; onTimeout(): Error }): Promise<string> {
    if (this.ended) return Promise.reject(this.ended());
    return new Promise<string>((resolve, reject) => {
      const timer = timeout && setTimeout(() => reject(timeout.onTimeout()), timeout.ms);
      const settle = () => { if (timer) clearTimeout(timer); };
      this.waiting.push({ resolve: (l) => { settle(); resolve(l); }, reject: (e) => { settle(); reject(e); } });
      this.output.write(`${line}\n`, (e) => { if (e) this.fail(e); });
    });
  }
}
