/**
 * A volume's directory tree, copied node to node in rounds over a TLS-PSK connection (the key travels on
 * the authenticated bus, as for the image stream): volumes hold the pod's data, so they are encrypted too.
 *
 * One round: the receiver sends a manifest of what it holds; the sender sends every file that differs from
 * it (or may: see `mayHaveChanged`), every missing directory, and the paths to delete; each file carries
 * its SHA-256, and the receiver checks what it wrote against it before it confirms the round. Rounds run
 * while the pod serves (bulk), and a last one with the pod frozen carries what changed since.
 *
 * Frames after TLS, all lengths big-endian:
 *   receiver → sender: u32 manifest length, manifest JSON
 *   sender → receiver: 'D' u16 pathLen path u32 mode u32 uid u32 gid
 *                      'F' u16 pathLen path u32 mode f64 mtimeMs f64 copiedAtMs u64 size u32 uid u32 gid
 *                          bytes [32] sha256
 *                      'X' u16 pathLen path (delete)   'E' (end)
 *   receiver → sender: "ok" or the reason the round failed, then close
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants, type Dirent } from 'node:fs';
import { chmod, chown, lstat, mkdir, open, readdir, rename, rm, utimes } from 'node:fs/promises';
import path from 'node:path';
import type tls from 'node:tls';
import { NodeOperationError } from '../../bus/errors.js';
import { listenEphemeral, pskConnect, pskServer } from '../../criu-shim/transfer/psk.js';
import { Inbox } from '../../criu-shim/transfer/inbox.js';

const PSK_IDENTITY = 'podmotion-volume';
const CHUNK = 4 << 20;
const MAX_ENTRIES = 1_000_000;
const IDLE_TIMEOUT_MS = 30_000;
/**
 * File times are taken from a coarse clock: a write in the same tick as the copy leaves size and mtime as
 * they were. A file modified this close to (or after) the moment it was copied is sent again.
 */
const MTIME_SLACK_MS = 100;

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

/**
 * Walks a tree: directories and regular files. Anything else (a socket, a device, a symlink) cannot be
 * copied faithfully and is refused, naming it.
 */
export async function manifestOf(root: string, extra?: Map<string, number>): Promise<Manifest> {
  const out: Manifest = {};
  let count = 0;
  const walk = async (rel: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await readdir(path.join(root, rel), { withFileTypes: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // removed while walking
      throw e;
    }
    for (const d of entries) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (++count > MAX_ENTRIES) throw new NodeOperationError(`volume ${root}: more than ${MAX_ENTRIES} entries`);
      let st;
      try {
        st = await lstat(path.join(root, r));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
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

/** A fresh key for one migration's volume streams. */
export function newVolumeKey(): Buffer {
  return randomBytes(32);
}

function write(sock: tls.TLSSocket, b: Buffer): Promise<void> {
  if (sock.destroyed) return Promise.reject(new NodeOperationError('volume receiver closed the stream'));
  if (sock.write(b)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onDrain = () => { sock.off('close', onClose); resolve(); };
    const onClose = () => { sock.off('drain', onDrain); reject(new NodeOperationError('volume stream closed while sending')); };
    sock.once('drain', onDrain);
    sock.once('close', onClose);
  });
}

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
  const readPath = async () => safeRelative((await rd.exact((await rd.exact(2)).readUInt16BE(0))).toString('utf8'));
  for (;;) {
    const type = String.fromCharCode((await rd.exact(1))[0]!);
    if (type === 'E') break;
    const rel = await readPath();
    const full = path.join(root, rel);
    if (type === 'X') {
      await rm(full, { recursive: true, force: true });
      copiedAt.delete(rel);
      stats.deleted++;
    } else if (type === 'D') {
      const h = await rd.exact(12);
      const mode = h.readUInt32BE(0) & 0o7777;
      const st = await lstat(full).catch(() => undefined);
      if (st && !st.isDirectory()) await rm(full, { recursive: true, force: true });
      await mkdir(full, { recursive: true, mode });
      await chown(full, h.readUInt32BE(4), h.readUInt32BE(8));
      await chmod(full, mode);
      stats.dirs++;
    } else if (type === 'F') {
      const h = await rd.exact(4 + 8 + 8 + 8 + 4 + 4);
      const mode = h.readUInt32BE(0) & 0o7777;
      const mtimeMs = h.readDoubleBE(4);
      const copied = h.readDoubleBE(12);
      const size = Number(h.readBigUInt64BE(20));
      const uid = h.readUInt32BE(28);
      const gid = h.readUInt32BE(32);
      await mkdir(path.dirname(full), { recursive: true, mode: 0o700 });
      const st = await lstat(full).catch(() => undefined);
      if (st && st.isDirectory()) await rm(full, { recursive: true, force: true });
      const tmp = `${full}.pm-sync-tmp`;
      const fh = await open(tmp, 'w', 0o600);
      const hash = createHash('sha256');
      try {
        let left = size;
        while (left > 0) {
          const piece = await rd.exact(Math.min(left, CHUNK));
          hash.update(piece);
          await fh.write(piece);
          left -= piece.length;
        }
      } finally {
        await fh.close();
      }
      const sent = await rd.exact(32);
      if (!hash.digest().equals(sent)) {
        await rm(tmp, { force: true });
        throw new NodeOperationError(`volume stream: ${rel} does not match its checksum`);
      }
      await chown(tmp, uid, gid);
      await chmod(tmp, mode);
      await utimes(tmp, Date.now() / 1000, mtimeMs / 1000);
      await rename(tmp, full);
      copiedAt.set(rel, copied);
      stats.files++;
      stats.bytes += size;
    } else {
      throw new NodeOperationError(`volume stream: unknown frame ${JSON.stringify(type)}`);
    }
  }
  stats.ms = performance.now() - t0;
  return stats;
}

/** Sends one round of `root` to a receiver; resolves once the receiver checked and confirmed it. */
export async function sendRound(o: { host: string; port: number; key: Buffer; root: string }): Promise<RoundStats> {
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
    for (const p of names) {
      const e = ours[p]!;
      if (e.type !== 'file' || !mayHaveChanged(e, theirs[p])) continue;
      const sent = await sendFile(sock, o.root, p);
      if (sent === undefined) continue; // removed since the walk: the next round deletes it
      stats.files++;
      stats.bytes += sent;
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
    stats.ms = performance.now() - t0;
    return stats;
  } finally {
    sock.destroy();
  }
}

/** One file frame: its state when opened, its bytes, their checksum. Undefined if it vanished. */
async function sendFile(sock: tls.TLSSocket, root: string, rel: string): Promise<number | undefined> {
  let fh;
  try {
    fh = await open(path.join(root, rel), constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const copiedAtMs = Date.now();
    const st = await fh.stat();
    const head = Buffer.alloc(4 + 8 + 8 + 8 + 4 + 4);
    head.writeUInt32BE(st.mode & 0o7777, 0);
    head.writeDoubleBE(st.mtimeMs, 4);
    head.writeDoubleBE(copiedAtMs, 12);
    head.writeBigUInt64BE(BigInt(st.size), 20);
    head.writeUInt32BE(st.uid, 28);
    head.writeUInt32BE(st.gid, 32);
    await write(sock, Buffer.concat([Buffer.from('F'), pathFrame(rel), head]));
    const hash = createHash('sha256');
    let off = 0;
    while (off < st.size) {
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, st.size - off));
      const { bytesRead } = await fh.read(buf, 0, buf.length, off);
      // A file that shrank while being read is sent zero-filled to its size; its times changed, so the
      // next round sends it again (the last one runs with the pod frozen).
      if (bytesRead < buf.length) buf.fill(0, bytesRead);
      hash.update(buf);
      await write(sock, buf);
      off += buf.length;
    }
    await write(sock, hash.digest());
    return st.size;
  } finally {
    await fh.close();
  }
}

/** Bytes and files under a tree (for status and checks). */
export async function treeSize(root: string): Promise<{ files: number; bytes: number }> {
  const m = await manifestOf(root);
  let files = 0;
  let bytes = 0;
  for (const e of Object.values(m)) if (e.type === 'file') { files++; bytes += e.size; }
  return { files, bytes };
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

