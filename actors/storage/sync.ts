/**
 * A volume's directory tree, copied node to node in rounds over a TLS-PSK connection (the key travels on
 * the authenticated bus, as for the image stream): volumes hold the pod's data, so they are encrypted too.
 *
 * One round: the receiver sends a manifest of what it holds; the sender sends every file that differs from
 * it (or may: see `mayHaveChanged`), every missing directory, and the paths to delete. Files go in 64 KiB
 * blocks, each with its SHA-256, which the receiver checks before it writes it; to a receiver that holds
 * the copy this sender sent before, only the blocks whose checksum changed go (a patch). Rounds run while
 * the pod serves (bulk), and a last one with the pod frozen carries what changed since.
 *
 * Frames after TLS, all lengths big-endian:
 *   receiver → sender: u32 manifest length, manifest JSON
 *   sender → receiver: 'R' u32 mode u32 uid u32 gid (the volume's folder itself)
 *                      'D' u16 pathLen path u32 mode u32 uid u32 gid
 *                      'F' (whole) or 'P' (patch) u16 pathLen path u32 mode f64 mtimeMs f64 copiedAtMs u64 size
 *                          u32 uid u32 gid, then blocks: u32 index u32 len bytes [32] sha256, ended by index 0xffffffff
 *                      'X' u16 pathLen path (delete)   'E' (end)
 *   receiver → sender: "ok" or the reason the round failed, then close
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, constants, lstatSync, mkdirSync, readdirSync, renameSync, utimesSync, type Dirent } from 'node:fs';
import { chmod, chown, mkdir, open, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type tls from 'node:tls';
import { NodeOperationError } from '../../bus/errors.js';
import { listenEphemeral, pskConnect, pskServer } from '../../criu-shim/transfer/psk.js';
import { Inbox, writeAll } from '../../criu-shim/transfer/inbox.js';
import { NATIVE_DIR } from '../../node-runtime/constants.js';
import { run } from '../../node-runtime/exec.js';

const PSK_IDENTITY = 'podmotion-volume';
const CHUNK = 4 << 20;
/** Files are compared and patched in blocks of this size. */
const BLOCK = 64 << 10;
const END_OF_BLOCKS = 0xffffffff;
/** Block writes a receiver keeps going at once: 4 MiB of a file in the thread pool. */
const WRITES_IN_FLIGHT = 64;
const MAX_ENTRIES = 1_000_000;
const IDLE_TIMEOUT_MS = 30_000;
/**
 * File times are taken from a coarse clock: a write in the same tick as the copy leaves size and mtime as
 * they were. A file modified this close to (or after) the moment it was copied is sent again.
 */
const MTIME_SLACK_MS = 100;
/** Hashing a batch of files reads them once (a few GB/s); minutes mean trouble. */
const HASH_TIMEOUT_MS = 300_000;

/** What a side holds of one path. */
export interface Entry {
  type: 'dir' | 'file';
  mode: number;
  size: number;
  mtimeMs: number;
  uid: number;
  gid: number;
  /** Receiver side: when the sender read the copy it holds (sender's clock). */
  copiedAtMs?: number;
}
export type Manifest = Record<string, Entry>;

export interface RoundStats {
  files: number;
  bytes: number;
  dirs: number;
  deleted: number;
  ms: number;
}

/** A relative path from the wire: no absolute paths, no `..`, no empty or `.` segments. */
export function safeRelative(p: string): string {
  const parts = p.split('/');
  if (p.length === 0 || p.length > 4096 || p.includes('\0') || parts.some((s) => s === '' || s === '.' || s === '..')) {
    throw new NodeOperationError(`volume stream: refusing path ${JSON.stringify(p.slice(0, 80))}`);
  }
  return p;
}

/** A walk yields to the event loop after this many entries: a large tree must not stall the agent's bus traffic. */
const WALK_SLICE = 1000;

/**
 * Walks a tree: directories and regular files. Anything else (a socket, a device, a symlink) cannot be
 * copied faithfully and is refused, naming it. The last round walks with the pod frozen: the calls are
 * synchronous (one asynchronous stat per entry costs ~7 times as much: a thread-pool round trip and an
 * event-loop turn each), in slices of WALK_SLICE entries.
 */
export async function manifestOf(root: string, extra?: Map<string, number>): Promise<Manifest> {
  const out: Manifest = {};
  let count = 0;
  const gone = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT';
  const walk = async (rel: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = readdirSync(path.join(root, rel), { withFileTypes: true });
    } catch (e) {
      if (gone(e)) return; // removed while walking
      throw e;
    }
    for (const d of entries) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (++count > MAX_ENTRIES) throw new NodeOperationError(`volume ${root}: more than ${MAX_ENTRIES} entries`);
      if (count % WALK_SLICE === 0) await new Promise((resolve) => setImmediate(resolve));
      let st;
      try {
        st = lstatSync(path.join(root, r));
      } catch (e) {
        if (gone(e)) continue;
        throw e;
      }
      if (st.isDirectory()) {
        out[r] = { type: 'dir', mode: st.mode & 0o7777, size: 0, mtimeMs: st.mtimeMs, uid: st.uid, gid: st.gid };
        await walk(r);
      } else if (st.isFile()) {
        const copied = extra?.get(r);
        out[r] = { type: 'file', mode: st.mode & 0o7777, size: st.size, mtimeMs: st.mtimeMs, uid: st.uid, gid: st.gid, ...(copied !== undefined ? { copiedAtMs: copied } : {}) };
      } else {
        throw new NodeOperationError(`volume ${root}: ${r} is neither a file nor a directory; it cannot be copied`);
      }
    }
  };
  await walk('');
  return out;
}

/** True when the sender must send `mine` again because the receiver's copy may differ from it. */
export function mayHaveChanged(mine: Entry, theirs: Entry | undefined): boolean {
  if (!theirs || theirs.type !== 'file') return true;
  // Times cross as doubles and come back from the filesystem rounded: equal within a microsecond is equal.
  if (theirs.size !== mine.size || Math.abs(theirs.mtimeMs - mine.mtimeMs) > 0.001 || theirs.mode !== mine.mode) return true;
  if (theirs.uid !== mine.uid || theirs.gid !== mine.gid) return true;
  // Same size and time, but written in the tick it was copied in: a later write may hide behind that time.
  return theirs.copiedAtMs === undefined || mine.mtimeMs >= theirs.copiedAtMs - MTIME_SLACK_MS;
}

const write = (sock: tls.TLSSocket, b: Buffer) => writeAll(sock, b, 'volume');
const lstatOrUndefined = (p: string) => lstatSync(p, { throwIfNoEntry: false });
const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const pathFrame = (p: string) => { const b = Buffer.from(p, 'utf8'); return Buffer.concat([u16(b.length), b]); };

/**
 * Receives rounds into `root` (created 0700 if missing), one connection per round, until closed. Each
 * round's promise settles when its stream was written and checked.
 */
export interface VolumeReceiver {
  host: string;
  port: number;
  /** Rounds received so far, in order. */
  rounds: RoundStats[];
  /** The next round to arrive (rejects if it fails). */
  next(): Promise<RoundStats>;
  close(): void;
}

export async function startVolumeReceiver(o: { host: string; root: string; key: Buffer }): Promise<VolumeReceiver> {
  await mkdir(o.root, { recursive: true, mode: 0o700 });
  // When each file's copy was read on the sender, by path: what a later round compares against.
  const copiedAt = new Map<string, number>();
  const rounds: RoundStats[] = [];
  const waiting: Array<{ resolve: (s: RoundStats) => void; reject: (e: Error) => void }> = [];
  const settled: Array<{ ok: RoundStats } | { err: Error }> = [];
  const deliver = (r: { ok: RoundStats } | { err: Error }) => {
    const w = waiting.shift();
    if (!w) return void settled.push(r);
    if ('ok' in r) w.resolve(r.ok);
    else w.reject(r.err);
  };
  let busy = false;
  const server = pskServer(PSK_IDENTITY, o.key, (sock) => {
    if (busy) return sock.destroy(); // one round at a time
    busy = true;
    sock.setNoDelay(true);
    sock.setTimeout(IDLE_TIMEOUT_MS, () => sock.destroy(new NodeOperationError('volume stream idle too long')));
    receiveRound(sock, o.root, copiedAt).then((s) => {
      rounds.push(s);
      sock.end('ok');
      deliver({ ok: s });
    }, (e: Error) => {
      sock.end(e.message.slice(0, 500));
      deliver({ err: e });
    }).finally(() => (busy = false));
  });
  const port = await listenEphemeral(server, o.host);
  return {
    host: o.host, port, rounds,
    next() {
      const r = settled.shift();
      if (r) return 'ok' in r ? Promise.resolve(r.ok) : Promise.reject(r.err);
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    },
    close() {
      server.close();
      for (const w of waiting.splice(0)) w.reject(new NodeOperationError('volume receiver closed'));
    },
  };
}

async function receiveRound(sock: tls.TLSSocket, root: string, copiedAt: Map<string, number>): Promise<RoundStats> {
  const t0 = performance.now();
  const manifest = await manifestOf(root, copiedAt);
  const body = Buffer.from(JSON.stringify(manifest), 'utf8');
  await write(sock, Buffer.concat([u32(body.length), body]));
  const rd = new Inbox(sock, 'volume stream');
  const stats: RoundStats = { files: 0, bytes: 0, dirs: 0, deleted: 0, ms: 0 };
  // When each file written this round was read on the sender: recorded once the round is complete.
  const pending = new Map<string, number>();
  const readPath = async () => safeRelative((await rd.exact((await rd.exact(2)).readUInt16BE(0))).toString('utf8'));
  for (;;) {
    const type = String.fromCharCode((await rd.exact(1))[0]!);
    if (type === 'E') break;
    if (type === 'R') {
      // The volume's own folder: its owner and mode (a pod running as another user must enter it).
      const h = await rd.exact(12);
      await chown(root, h.readUInt32BE(4), h.readUInt32BE(8));
      await chmod(root, h.readUInt32BE(0) & 0o7777);
      continue;
    }
    const rel = await readPath();
    const full = path.join(root, rel);
    if (type === 'X') {
      await rm(full, { recursive: true, force: true });
      copiedAt.delete(rel);
      stats.deleted++;
    } else if (type === 'D') {
      const h = await rd.exact(12);
      const mode = h.readUInt32BE(0) & 0o7777;
      const st = lstatOrUndefined(full);
      if (st && !st.isDirectory()) await rm(full, { recursive: true, force: true });
      mkdirSync(full, { recursive: true, mode });
      chownSync(full, h.readUInt32BE(4), h.readUInt32BE(8));
      chmodSync(full, mode);
      stats.dirs++;
    } else if (type === 'F' || type === 'P') {
      const h = await rd.exact(4 + 8 + 8 + 8 + 4 + 4);
      const mode = h.readUInt32BE(0) & 0o7777;
      const mtimeMs = h.readDoubleBE(4);
      const copied = h.readDoubleBE(12);
      const size = Number(h.readBigUInt64BE(20));
      const uid = h.readUInt32BE(28);
      const gid = h.readUInt32BE(32);
      // Metadata calls are synchronous here: microseconds each on a local filesystem, where a thread-pool
      // round trip apiece (a dozen per file) paces a last round of many files inside the freeze.
      mkdirSync(path.dirname(full), { recursive: true, mode: 0o700 });
      const st = lstatOrUndefined(full);
      if (st && st.isDirectory()) await rm(full, { recursive: true, force: true });
      // A whole file is written aside and renamed over; a patch goes into the copy held here, which the
      // sender knows block by block. Until the round is confirmed the copy counts as unknown (a failed
      // round leaves it to be sent whole).
      const patching = type === 'P' && st !== undefined && st.isFile();
      if (type === 'P' && !patching) throw new NodeOperationError(`volume stream: a patch for ${rel}, which is not here`);
      copiedAt.delete(rel);
      const dest = patching ? full : `${full}.pm-sync-tmp`;
      const fh = await open(dest, patching ? 'r+' : 'w', 0o600);
      let bytes = 0;
      // Blocks are written at their offsets without waiting for each (a thread-pool round trip apiece would
      // pace the last round, inside the freeze), at most WRITES_IN_FLIGHT at a time.
      const writing = new Set<Promise<unknown>>();
      let failed: Error | undefined;
      try {
        for (;;) {
          const bh = await rd.exact(8);
          const index = bh.readUInt32BE(0);
          if (index === END_OF_BLOCKS) break;
          const len = bh.readUInt32BE(4);
          if (len > BLOCK || index * BLOCK + len > size) throw new NodeOperationError(`volume stream: block ${index} of ${rel} out of bounds`);
          const data = await rd.exact(len);
          const sum = await rd.exact(32);
          if (!createHash('sha256').update(data).digest().equals(sum)) throw new NodeOperationError(`volume stream: block ${index} of ${rel} does not match its checksum`);
          if (failed) throw failed;
          const w: Promise<unknown> = fh.write(data, 0, len, index * BLOCK).then(
            (): void => { writing.delete(w); },
            (e: Error): void => { failed ??= e; writing.delete(w); });
          writing.add(w);
          if (writing.size >= WRITES_IN_FLIGHT) await Promise.race(writing);
          bytes += len;
        }
        await Promise.all(writing);
        if (failed) throw failed;
        await fh.truncate(size);
      } finally {
        await Promise.all(writing);
        await fh.close();
      }
      chownSync(dest, uid, gid);
      chmodSync(dest, mode);
      utimesSync(dest, Date.now() / 1000, mtimeMs / 1000);
      if (!patching) renameSync(dest, full);
      pending.set(rel, copied);
      stats.files++;
      stats.bytes += bytes;
    } else {
      throw new NodeOperationError(`volume stream: unknown frame ${JSON.stringify(type)}`);
    }
  }
  for (const [rel, at] of pending) copiedAt.set(rel, at);
  stats.ms = performance.now() - t0;
  return stats;
}

/**
 * What a sender remembers of the copies it sent: per file, when it read it and a hash per block (keyed: see
 * `blockHashes`). A later round reads and sends only the blocks whose hash changed, to a receiver that still
 * holds that copy.
 */
export class SendState {
  readonly key = randomBytes(32);
  readonly files = new Map<string, { copiedAtMs: number; sums: string[] }>();
}

/** Files hashed per helper run: its output (16 hex digits per block) stays well under what a command may print. */
const HASH_BATCH_BYTES = 2 * 1024 ** 3;

/**
 * The block hashes of files (pm-pages blocks: ~10 times less CPU than SHA-256 in this process, which matters
 * in the last round, inside the freeze, beside CRIU). Keyed with the state's key, so that a pod cannot make a
 * changed block hash like the one it replaces. A file gone is absent from the result.
 */
async function blockHashes(root: string, rels: readonly string[], sizes: (rel: string) => number, key: Buffer): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < rels.length;) {
    const batch: string[] = [];
    for (let bytes = 0; i < rels.length && (batch.length === 0 || bytes + sizes(rels[i]!) <= HASH_BATCH_BYTES); i++) {
      bytes += sizes(rels[i]!);
      batch.push(rels[i]!);
    }
    const input = `${key.toString('hex')}\n${batch.map((r) => `${path.join(root, r)}\0`).join('')}`;
    const lines = (await run(path.join(NATIVE_DIR, 'pm-pages'), ['blocks', '--block', String(BLOCK)], { input, timeoutMs: HASH_TIMEOUT_MS })).stdout.split('\n');
    batch.forEach((rel, j) => {
      const [size, hex = ''] = (lines[j] ?? '-').split(' ');
      if (size === '-' || size === undefined) return;
      out.set(rel, hex.match(/.{16}/g) ?? []);
    });
  }
  return out;
}

/** Sends one round of `root` to a receiver; resolves once the receiver checked and confirmed it. */
export async function sendRound(o: { host: string; port: number; key: Buffer; root: string; state?: SendState }): Promise<RoundStats> {
  const t0 = performance.now();
  const sock = pskConnect({ host: o.host, port: o.port, key: o.key, identity: PSK_IDENTITY });
  sock.setNoDelay(true);
  sock.setTimeout(IDLE_TIMEOUT_MS, () => sock.destroy(new NodeOperationError(`volume stream stalled for ${IDLE_TIMEOUT_MS} ms`)));
  const mine = manifestOf(o.root);
  mine.catch(() => {});
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('secureConnect', () => resolve());
      sock.once('error', reject);
    });
    const rd = new Inbox(sock, 'volume stream');
    const theirs = JSON.parse((await rd.exact((await rd.exact(4)).readUInt32BE(0))).toString('utf8')) as Manifest;
    const ours = await mine;
    const stats: RoundStats = { files: 0, bytes: 0, dirs: 0, deleted: 0, ms: 0 };
    const top = await stat(o.root);
    await write(sock, Buffer.concat([Buffer.from('R'), u32(top.mode & 0o7777), u32(top.uid), u32(top.gid)]));
    // Deletions first (deepest first), so a file may replace a directory of the same name and vice versa.
    for (const p of Object.keys(theirs).sort().reverse()) {
      if (!ours[p] || ours[p]!.type !== theirs[p]!.type) {
        await write(sock, Buffer.concat([Buffer.from('X'), pathFrame(p)]));
        stats.deleted++;
      }
    }
    const names = Object.keys(ours).sort();
    for (const p of names) {
      const e = ours[p]!;
      if (e.type !== 'dir') continue;
      const t = theirs[p];
      if (t && t.type === 'dir' && t.mode === e.mode && t.uid === e.uid && t.gid === e.gid) continue;
      await write(sock, Buffer.concat([Buffer.from('D'), pathFrame(p), u32(e.mode), u32(e.uid), u32(e.gid)]));
      stats.dirs++;
    }
    const sentNow = new Map<string, { copiedAtMs: number; sums: string[] }>();
    // One read buffer for the round: a fresh 4 MiB per piece is external memory enough to start a major
    // collection (a bulk round reads every file whole; the last one, inside the freeze, the changed blocks).
    const readBuf = Buffer.allocUnsafe(CHUNK);
    const changed = names.filter((p) => ours[p]!.type === 'file' && mayHaveChanged(ours[p]!, theirs[p]));
    // With a state, blocks are compared by hash: taken first, so every file is "copied" no later than now.
    const hashedAtMs = Date.now();
    const hashes = o.state ? await blockHashes(o.root, changed, (p) => ours[p]!.size, o.state.key) : undefined;
    for (const p of changed) {
      const t = theirs[p];
      // A patch only against the very copy this sender sent (same read time on both sides).
      const known = o.state?.files.get(p);
      const base = known && t?.type === 'file' && t.copiedAtMs === known.copiedAtMs ? known.sums : undefined;
      const sent = await sendFile(sock, o.root, p, readBuf, hashes ? { sums: hashes.get(p) ?? [], atMs: hashedAtMs, base } : undefined);
      if (sent === undefined) continue; // removed since the walk: the next round deletes it
      sentNow.set(p, { copiedAtMs: sent.copiedAtMs, sums: sent.sums });
      stats.files++;
      stats.bytes += sent.bytes;
    }
    const verdict = new Promise<void>((resolve, reject) => {
      let reply = '';
      sock.removeAllListeners('data');
      sock.on('data', (b: Buffer) => (reply += b.toString()));
      const done = () => (reply === 'ok' ? resolve() : reject(new NodeOperationError(`volume round refused by the receiver: ${reply || 'connection closed'}`)));
      sock.once('end', done);
      sock.once('close', done);
    });
    await write(sock, Buffer.from('E'));
    await verdict;
    if (o.state) {
      for (const p of o.state.files.keys()) if (!ours[p]) o.state.files.delete(p);
      for (const [p, v] of sentNow) o.state.files.set(p, v);
    }
    stats.ms = performance.now() - t0;
    return stats;
  } finally {
    sock.destroy();
  }
}

/**
 * One file: its state when opened, then its blocks with a SHA-256 each (what the receiver checks) — all of
 * them, or (a patch, given the hashes of the copy the receiver holds and of the file now) only those that
 * differ, read alone. Undefined if the file vanished.
 */
async function sendFile(sock: tls.TLSSocket, root: string, rel: string, readBuf: Buffer,
  hashed?: { sums: string[]; atMs: number; base?: string[] }): Promise<{ bytes: number; copiedAtMs: number; sums: string[] } | undefined> {
  let fh;
  try {
    fh = await open(path.join(root, rel), constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const copiedAtMs = hashed?.atMs ?? Date.now();
    const st = await fh.stat();
    const base = hashed?.base;
    const head = Buffer.alloc(4 + 8 + 8 + 8 + 4 + 4);
    head.writeUInt32BE(st.mode & 0o7777, 0);
    head.writeDoubleBE(st.mtimeMs, 4);
    head.writeDoubleBE(copiedAtMs, 12);
    head.writeBigUInt64BE(BigInt(st.size), 20);
    head.writeUInt32BE(st.uid, 28);
    head.writeUInt32BE(st.gid, 32);
    await write(sock, Buffer.concat([Buffer.from(base ? 'P' : 'F'), pathFrame(rel), head]));
    const blocks = Math.ceil(st.size / BLOCK);
    // The hash of a block the helper did not see (the file grew since) is unknown: '' matches nothing.
    const sums = Array.from({ length: blocks }, (_, i) => hashed?.sums[i] ?? '');
    // Blocks to send: all, or those whose hash changed (a short last block always: its length may have).
    const send = (i: number) => !base || !sums[i] || base[i] !== sums[i] || (i + 1) * BLOCK > st.size;
    let bytes = 0;
    for (let first = 0; first < blocks;) {
      if (!send(first)) {
        first++;
        continue;
      }
      // A run of blocks to send, read at once (at most a buffer's worth).
      let end = first + 1;
      while (end < blocks && send(end) && (end - first + 1) * BLOCK <= CHUNK) end++;
      const off = first * BLOCK;
      // What goes on the wire is copied out of it (Buffer.concat below) before the next read.
      const buf = readBuf.subarray(0, Math.min(end * BLOCK, st.size) - off);
      const { bytesRead } = await fh.read(buf, 0, buf.length, off);
      // A file that shrank while being read is sent zero-filled to its size; its times changed, so the
      // next round sends it again (the last one runs with the pod frozen).
      if (bytesRead < buf.length) buf.fill(0, bytesRead);
      const out: Buffer[] = [];
      for (let b = 0; b < buf.length; b += BLOCK) {
        const data = buf.subarray(b, Math.min(buf.length, b + BLOCK));
        const bh = Buffer.alloc(8);
        bh.writeUInt32BE(first + b / BLOCK, 0);
        bh.writeUInt32BE(data.length, 4);
        out.push(bh, data, createHash('sha256').update(data).digest());
        bytes += data.length;
      }
      await write(sock, Buffer.concat(out));
      first = end;
    }
    await write(sock, Buffer.concat([u32(END_OF_BLOCKS), u32(0)]));
    return { bytes, copiedAtMs, sums };
  } finally {
    await fh.close();
  }
}

/** SHA-256 over every file's path and content, in path order: equal trees have equal digests. */
export async function treeDigest(root: string): Promise<string> {
  const m = await manifestOf(root);
  const h = createHash('sha256');
  for (const p of Object.keys(m).sort()) {
    const e = m[p]!;
    h.update(`${e.type} ${p} ${e.mode.toString(8)}\n`);
    if (e.type !== 'file') continue;
    const fh = await open(path.join(root, p), 'r');
    try {
      for await (const chunk of fh.createReadStream()) h.update(chunk as Buffer);
    } finally {
      await fh.close().catch(() => {});
    }
  }
  return h.digest('hex');
}

