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
  const child = spawn(bin(), ['encode', '--dir', dir, '--state', state, '--watch'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => { if (stderr.length < 4096) stderr += b.toString(); });
  const channel = new LineChannel(child.stdout, child.stdin, (notice) => {
    const name = /^encoded (pages-[^/]+\.pmdelta)$/.exec(notice)?.[1];
    if (name) onEncoded?.(name);
  });
  const why = () => new NodeOperationError(`encoding the checkpoint's pages: ${stderr.trim().split('\n').pop() || 'the helper exited'}`);
  child.once('close', () => setImmediate(() => channel.end(why)));
  child.once('error', () => channel.end(why));
  const ask = async (cmd: string) => {
    const line = await channel.send(cmd, { ms: PAGES_TIMEOUT_MS, onTimeout: () => { child.kill('SIGKILL'); return why(); } });
    return JSON.parse(line) as EncodeStats & { ok: boolean };
  };
  try {
    await ask('ready');
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return {
    finish: async () => {
      const r = await ask('finish');
      return { pages: r.pages, referenced: r.referenced, literal: r.literal, ms: r.ms, lastMs: r.lastMs };
    },
    stop: () => { child.stdin.end(); child.kill('SIGKILL'); },
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
  const child = spawn(bin(), ['decode', '--dir', dir, '--serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => { if (stderr.length < 4096) stderr += b.toString(); });
  const channel = new LineChannel(child.stdout, child.stdin);
  const why = () => new NodeOperationError(`rebuilding the checkpoint's pages: ${stderr.trim().split('\n').pop() || 'the helper exited'}`);
  child.once('close', () => setImmediate(() => channel.end(why)));
  child.once('error', () => channel.end(why));
  const ask = async (cmd: string) => JSON.parse(await channel.send(cmd, { ms: PAGES_TIMEOUT_MS, onTimeout: () => { child.kill('SIGKILL'); return why(); } })) as DecodeStats;
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
    kill: () => { child.stdin.end(); child.kill('SIGKILL'); },
  };
}

/** Rebuilds each pages-*.img from its delta and the pages the rounds delivered (`caches`). */
export async function decodeImages(dir: string, caches: readonly string[]): Promise<{ pages: number; fromCache: number; ms: number }> {
  const r = await run(bin(), ['decode', '--dir', dir, '--cache', ...caches], { timeoutMs: PAGES_TIMEOUT_MS });
  return JSON.parse(r.stdout) as { pages: number; fromCache: number; ms: number };
}
