/**
 * Pre-copy by content (pm-pages): rounds send pages the destination does not hold yet while the pod runs;
 * at the freeze the checkpoint's pages travel as references when the destination holds them already.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { NodeOperationError } from '../bus/errors.js';
import { LineChannel } from '../common/line-channel.js';
import { run } from './exec.js';
import { NATIVE_DIR } from './constants.js';

/** A round reads all of a pod's memory once (a few GB/s) and writes what changed; minutes mean trouble. */
const PAGES_TIMEOUT_MS = 300_000;
const bin = () => path.join(NATIVE_DIR, 'pm-pages');

export interface RoundStats {
  pages: number;
  /** Of `pages`, those of private writable mappings (the rest: shared memory, copied read-only pages). */
  privatePages: number;
  /** Processes of the pod read. */
  processes: number;
  newPages: number;
  bytes: number;
  knownPages: number;
  ms: number;
}

/**
 * Writes to `out` every page of the pod whose content the destination does not hold (per `state`). With
 * writes tracked, also every page's address and hash to `map` (what the destination restores from) and the
 * ranges read to `read`; with `only`, reads just those ranges (written since the last round), not all memory.
 */
export async function precopyRound(pid: number, state: string, out: string, tracked?: { map: string; read: string; only?: string }): Promise<RoundStats> {
  const r = await run(bin(), ['round', '--pid', String(pid), '--state', state, '--out', out,
    ...(tracked ? ['--map', tracked.map, '--read', tracked.read, ...(tracked.only ? ['--only', tracked.only] : [])] : [])], { timeoutMs: PAGES_TIMEOUT_MS });
  return JSON.parse(r.stdout) as RoundStats;
}

/**
 * With the pod stopped: writes to `out` the pages the destination cannot take from the rounds up to `round`
 * (written since, per the tracker's `clean` ranges, or never `read` by one), by address.
 */
export async function finalPages(pid: number, o: { read: string; clean: string; out: string; round: number }): Promise<{ pages: number; literal: number; referenced: number; ms: number }> {
  const r = await run(bin(), ['final', '--pid', String(pid), '--read', o.read, '--clean', o.clean, '--out', o.out, '--round', String(o.round)], { timeoutMs: PAGES_TIMEOUT_MS });
  return JSON.parse(r.stdout) as { pages: number; literal: number; referenced: number; ms: number };
}

/**
 * A pm-pages helper that takes commands on stdin and answers each with a JSON line (`onNotice` gets the lines
 * it announces unasked). A command fails with the helper's last stderr line, prefixed by `what`, if it exits,
 * and is killed after PAGES_TIMEOUT_MS.
 */
function startSession(args: string[], what: string, onNotice?: (line: string) => void) {
  const child = spawn(bin(), args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => { if (stderr.length < 4096) stderr += b.toString(); });
  const channel = new LineChannel(child.stdout, child.stdin, onNotice);
  const why = () => new NodeOperationError(`${what}: ${stderr.trim().split('\n').pop() || 'the helper exited'}`);
  child.once('close', () => setImmediate(() => channel.end(why)));
  child.once('error', () => channel.end(why));
  return {
    ask: async <T>(cmd: string): Promise<T> =>
      JSON.parse(await channel.send(cmd, { ms: PAGES_TIMEOUT_MS, onTimeout: () => { child.kill('SIGKILL'); return why(); } })) as T,
    kill: () => { child.stdin.end(); child.kill('SIGKILL'); },
  };
}

export interface EncodeStats {
  pages: number;
  referenced: number;
  literal: number;
  /** Spent encoding, in all. */
  ms: number;
  /** Spent after `finish`: what still followed the dump. */
  lastMs: number;
}

/** An encoder watching a checkpoint as CRIU writes it. */
export interface ImageEncoder {
  /** The dump is over: encodes what is left and resolves with the totals. */
  finish(): Promise<EncodeStats>;
  /** Gives up (the dump failed): the helper exits, the images are left as they are. */
  stop(): void;
}

/**
 * Replaces each pages-*.img CRIU writes into `dir` by a delta: references for pages in `state`, bytes for
 * the rest. Started before the dump: each is encoded as soon as CRIU closes it, while CRIU dumps the next
 * processes (pm-pages encode --watch), and `onEncoded` learns the delta's name (it is complete, and may be
 * sent). Resolves once it is watching.
 */
export async function watchAndEncode(dir: string, state: string, onEncoded?: (name: string) => void): Promise<ImageEncoder> {
  const helper = startSession(['encode', '--dir', dir, '--state', state, '--watch'], "encoding the checkpoint's pages", (notice) => {
    const name = /^encoded (pages-[^/]+\.pmdelta)$/.exec(notice)?.[1];
    if (name) onEncoded?.(name);
  });
  const ask = (cmd: string) => helper.ask<EncodeStats & { ok: boolean }>(cmd);
  try {
    await ask('ready');
  } catch (e) {
    helper.kill();
    throw e;
  }
  return {
    finish: async () => {
      const r = await ask('finish');
      return { pages: r.pages, referenced: r.referenced, literal: r.literal, ms: r.ms, lastMs: r.lastMs };
    },
    stop: helper.kill,
  };
}

export interface DecodeStats {
  pages: number;
  fromCache: number;
  /** Spent rebuilding, in all. */
  ms: number;
  /** Spent after the last image arrived (`finish`). */
  lastMs: number;
}

/** The destination's rebuilder of one migration's pages images (pm-pages decode --serve). */
export interface ImageDecoder {
  /** Indexes a pre-copy round's cache (its pages checked against their hashes): before the freeze. */
  addCache(file: string): Promise<void>;
  /** A delta of the images directory has arrived whole: rebuilds it while the rest is on its way. */
  decode(name: string): void;
  /** Every image is in: rebuilds the deltas left; fails if any rebuild failed. */
  finish(): Promise<DecodeStats>;
  kill(): void;
}

/**
 * Starts the rebuilder for the images that will arrive in `dir`: it lives from the first pre-copy round
 * (whose cache it indexes then) to the restore, so that the freeze is left with memory copies only.
 */
export function startDecoder(dir: string): ImageDecoder {
  const helper = startSession(['decode', '--dir', dir, '--serve'], "rebuilding the checkpoint's pages");
  const ask = (cmd: string) => helper.ask<DecodeStats>(cmd);
  // Deltas decoded as they arrive; the first failure is reported by finish.
  const decoding: Array<Promise<unknown>> = [];
  return {
    addCache: async (file) => { await ask(`cache ${file}`); },
    decode: (name) => {
      const p = ask(`decode ${name}`);
      p.catch(() => {});
      decoding.push(p);
    },
    finish: async () => {
      await Promise.all(decoding);
      return ask('finish');
    },
    kill: helper.kill,
  };
}

/** Rebuilds each pages-*.img from its delta and the pages the rounds delivered (`caches`). */
export async function decodeImages(dir: string, caches: readonly string[]): Promise<{ pages: number; fromCache: number; ms: number }> {
  const r = await run(bin(), ['decode', '--dir', dir, '--cache', ...caches], { timeoutMs: PAGES_TIMEOUT_MS });
  return JSON.parse(r.stdout) as { pages: number; fromCache: number; ms: number };
}
