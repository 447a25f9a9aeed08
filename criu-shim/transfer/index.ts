/**
 * Checkpoint images travel from the source node's agent to the destination node's agent over one TLS
 * connection keyed by a per-migration pre-shared key (TLS-PSK): images hold process memory, so they are
 * encrypted and accepted only from the peer that knows the key, which only the bus (authenticated) carried.
 * Frame format, after TLS: per file `u16 nameLen | name | u64 size | bytes`, then a zero-length name.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, open, stat } from 'node:fs/promises';
import path from 'node:path';
import type tls from 'node:tls';
import { NodeOperationError } from '../../bus/errors.js';
import { listenEphemeral, pskConnect, pskServer } from './psk.js';
import { Inbox, writeAll } from './inbox.js';

const PSK_IDENTITY = 'podmotion-images';
/** Upper bounds on what a receiver accepts: a checkpoint is many files, but not unboundedly many. */
export const MAX_FILES = 100_000;
const MAX_NAME_BYTES = 255;
/** Read and write in 4 MiB pieces: few syscalls and event-loop turns per image, bounded memory. */
const SEND_CHUNK_BYTES = 4 << 20;
/** Received bytes are written in pieces of this size. */
const RECEIVE_BATCH_BYTES = 4 << 20;
/** Files up to this size are read and written whole, without waiting for each in turn. */
const SMALL_FILE_BYTES = 1 << 20;
/** A peer that connects but sends nothing for this long is not a migration peer. */
export const TRANSFER_IDLE_TIMEOUT_MS = 30_000;

/** A fresh 32-byte key for one migration's image stream. */
export function newTransferKey(): Buffer {
  return randomBytes(32);
}

export interface TransferStats {
  files: number;
  bytes: number;
  ms: number;
}

export interface Receiver {
  host: string;
  port: number;
  /** Resolves when one complete stream has been written to the directory. */
  done: Promise<TransferStats>;
  close(): void;
}

/** A file name from the wire: a bare name, no separators, no dot-dot. */
function safeName(name: string): string {
  if (name.length === 0 || name.includes('/') || name.includes('\0') || name === '.' || name === '..') {
    throw new NodeOperationError(`image stream: refusing file name ${JSON.stringify(name.slice(0, 80))}`);
  }
  return name;
}

async function receiveStream(sock: tls.TLSSocket, dir: string, maxBytes: number, onFile?: (name: string) => void): Promise<TransferStats> {
  const t0 = performance.now();
  const inbox = new Inbox(sock, 'image stream');
  let files = 0;
  let bytes = 0;
  for (;;) {
    const nameLen = (await inbox.exact(2)).readUInt16BE(0);
    if (nameLen === 0) break;
    if (nameLen > MAX_NAME_BYTES) throw new NodeOperationError(`image stream: file name of ${nameLen} bytes`);
    const name = safeName((await inbox.exact(nameLen)).toString('utf8'));
    const size = Number((await inbox.exact(8)).readBigUInt64BE(0));
    if (++files > MAX_FILES) throw new NodeOperationError(`image stream: more than ${MAX_FILES} files`);
    if ((bytes += size) > maxBytes) throw new NodeOperationError(`image stream: more than ${maxBytes} bytes`);
    if (size <= SMALL_FILE_BYTES) {
      // Small files (most of a checkpoint's, ~130 for PostgreSQL) are written synchronously: into the page
      // cache (a tmpfs in the local cluster) that is microseconds each, where three thread-pool round trips
      // apiece (open, write, close) took 8-11 ms for them all on an idle machine, inside the freeze.
      while (inbox.length < size) await inbox.more();
      writeFileSync(path.join(dir, name), size ? inbox.take(size) : Buffer.alloc(0), { flag: 'wx', mode: 0o600 });
      onFile?.(name);
      continue;
    }
    const out = await open(path.join(dir, name), 'wx', 0o600);
    let left = size;
    try {
      while (left > 0) {
        // Gather a large piece (or the rest of the file) before writing: one write per TLS record would make
        // the disk round trips, not the network, the limit.
        while (inbox.length < Math.min(left, RECEIVE_BATCH_BYTES)) await inbox.more();
        const take = inbox.take(Math.min(left, inbox.length, RECEIVE_BATCH_BYTES));
        left -= take.length;
        await out.write(take);
      }
    } finally {
      await out.close();
    }
    onFile?.(name);
  }
  sock.end('ok');
  return { files, bytes, ms: performance.now() - t0 };
}

/**
 * Listens for exactly one image stream into `dir` (created 0700). Any connection that does not
 * complete the PSK handshake is dropped without touching the directory. `onFile` hears of each file once
 * it is written whole, while the stream goes on.
 */
export async function startReceiver(opts: { host: string; dir: string; key: Buffer; maxBytes: number; onFile?: (name: string) => void }): Promise<Receiver> {
  await mkdir(opts.dir, { recursive: true, mode: 0o700 });
  let settle!: { resolve: (s: TransferStats) => void; reject: (e: Error) => void };
  const done = new Promise<TransferStats>((resolve, reject) => (settle = { resolve, reject }));
  done.catch(() => {});
  let taken = false;
  const server = pskServer(PSK_IDENTITY, opts.key, (sock) => {
    if (taken) return sock.destroy();
    taken = true;
    server.close();
    sock.pause();
    // Inside a freeze every round trip counts: no Nagle delay on the confirmation.
    sock.setNoDelay(true);
    sock.setTimeout(TRANSFER_IDLE_TIMEOUT_MS, () => sock.destroy(new NodeOperationError('image stream idle too long')));
    receiveStream(sock, opts.dir, opts.maxBytes, opts.onFile).then(settle.resolve, (e: Error) => {
      sock.destroy();
      settle.reject(e);
    });
  });
  const port = await listenEphemeral(server, opts.host);
  return {
    host: opts.host, port, done,
    close() {
      server.close();
      if (!taken) settle.reject(new NodeOperationError('image receiver closed before a stream arrived'));
    },
  };
}

function header(name: string, size: number): Buffer {
  const n = Buffer.from(name, 'utf8');
  const h = Buffer.alloc(2 + n.length + 8);
  h.writeUInt16BE(n.length, 0);
  n.copy(h, 2);
  h.writeBigUInt64BE(BigInt(size), 2 + n.length);
  return h;
}

/** Paces a stream to a bandwidth cap: after each piece, waits until the average rate is back under it. */
class Pacer {
  private sent = 0;
  private readonly t0 = performance.now();
  constructor(private readonly bytesPerMs: number | undefined) {}
  async account(n: number): Promise<void> {
    this.sent += n;
    if (this.bytesPerMs === undefined) return;
    const due = this.sent / this.bytesPerMs - (performance.now() - this.t0);
    if (due > 1) await new Promise((r) => setTimeout(r, due));
  }
}

/** Sends one file in large reads: images are read once, in order, inside the freeze. */
async function sendFile(sock: tls.TLSSocket, file: string, size: number, pacer: Pacer): Promise<void> {
  const fh = await open(file, 'r');
  try {
    let left = size;
    while (left > 0) {
      const buf = Buffer.allocUnsafe(Math.min(SEND_CHUNK_BYTES, left));
      const { bytesRead } = await fh.read(buf, 0, buf.length, size - left);
      if (bytesRead === 0) throw new NodeOperationError(`image ${path.basename(file)} shrank while being sent`);
      left -= bytesRead;
      await writeAll(sock, buf.subarray(0, bytesRead), 'image');
      await pacer.account(bytesRead);
    }
  } finally {
    await fh.close();
  }
}

/** An image stream opened before the images are complete: files go as they are ready, the rest at `finish`. */
export interface ImageStream {
  /** Sends `name` of the directory next (a complete file that no longer changes); once only per name. */
  send(name: string): void;
  /** Sends every regular file of the directory not sent yet, ends the stream, resolves once it is confirmed. */
  finish(): Promise<TransferStats>;
  /** Gives up: the receiver sees the stream break and keeps nothing. */
  abort(): void;
}

/**
 * Opens a stream of `dir` to a receiver (the TLS handshake done here, not when the files are ready). Files
 * go in the order they are handed over; a failure shows at `finish`.
 */
export async function openImageStream(opts: { host: string; port: number; key: Buffer; dir: string; signal?: AbortSignal; bandwidthMbps?: number }): Promise<ImageStream> {
  const t0 = performance.now();
  const sock = pskConnect({ host: opts.host, port: opts.port, key: opts.key, identity: PSK_IDENTITY });
  // Small frames (file headers, the last piece of a file, the end mark) go at once, not behind an ACK.
  sock.setNoDelay(true);
  // A receiver that stops reading (its node went away) must fail the freeze in bounded time, not in minutes
  // of kernel TCP retries while the pod stays frozen.
  sock.setTimeout(TRANSFER_IDLE_TIMEOUT_MS, () => sock.destroy(new NodeOperationError(`image stream stalled for ${TRANSFER_IDLE_TIMEOUT_MS} ms`)));
  const onAbort = () => sock.destroy(new NodeOperationError('image stream aborted'));
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  let failure: Error | undefined;
  sock.on('error', (e) => (failure ??= e));
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('secureConnect', () => resolve());
      sock.once('error', reject);
    });
  } catch (e) {
    opts.signal?.removeEventListener('abort', onAbort);
    sock.destroy();
    throw e;
  }
  let files = 0;
  let bytes = 0;
  const sent = new Set<string>();
  // --bandwidth-mbps: megabits per second, so bytes per millisecond is mbps * 1e6 / 8 / 1000.
  const pacer = new Pacer(opts.bandwidthMbps === undefined ? undefined : opts.bandwidthMbps * 125);
  // One file after another on the socket: each hand-over chains on the previous one.
  let queue: Promise<void> = Promise.resolve();
  const sendOne = async (name: string) => {
    const file = path.join(opts.dir, name);
    const st = await stat(file);
    await writeAll(sock, header(name, st.size), 'image');
    await sendFile(sock, file, st.size, pacer);
    files++;
    bytes += st.size;
  };
  const close = () => {
    opts.signal?.removeEventListener('abort', onAbort);
    sock.destroy();
  };
  return {
    send(name) {
      if (sent.has(name)) return;
      sent.add(name);
      queue = queue.then(() => (failure ? undefined : sendOne(name)));
      queue.catch((e: Error) => (failure ??= e));
    },
    async finish() {
      try {
        await queue;
        if (failure) throw failure;
        const names = readdirSync(opts.dir).sort().filter((n) => !sent.has(n));
        // Small files are read at once, synchronously (see receiveStream: the same tmpfs, the same freeze);
        // large ones are streamed in turn.
        const entries = names.map((name) => {
          const file = path.join(opts.dir, name);
          const st = statSync(file);
          const data = st.isFile() && st.size <= SMALL_FILE_BYTES ? readFileSync(file) : undefined;
          return { name, file, st, data };
        });
        // Consecutive small files go as one write: waiting for the socket to drain after each would cost an
        // event-loop turn per file inside the freeze.
        let batch: Buffer[] = [];
        let batched = 0;
        const flush = async () => {
          if (batch.length === 0) return;
          const out = Buffer.concat(batch);
          batch = [];
          batched = 0;
          await writeAll(sock, out, 'image');
          await pacer.account(out.length);
        };
        for (const e of entries) {
          if (!e.st.isFile()) continue;
          if (e.data && e.data.length !== e.st.size) throw new NodeOperationError(`image ${e.name} changed while being sent`);
          if (e.data) {
            batch.push(header(e.name, e.st.size), e.data);
            if ((batched += e.data.length) >= SEND_CHUNK_BYTES) await flush();
          } else {
            await flush();
            await writeAll(sock, header(e.name, e.st.size), 'image');
            await sendFile(sock, e.file, e.st.size, pacer);
          }
          files++;
          bytes += e.st.size;
        }
        await flush();
        const ack = new Promise<void>((resolve, reject) => {
          let reply = '';
          sock.on('data', (b: Buffer) => (reply += b.toString()));
          const verdict = () => (reply === 'ok' ? resolve() : reject(new NodeOperationError('image receiver did not confirm the stream')));
          sock.once('end', verdict);
          // A receiver that refuses the stream resets the connection: 'close' may come without 'end'.
          sock.once('close', verdict);
          sock.once('error', reject);
        });
        sock.write(Buffer.from([0, 0]));
        await ack;
        if (failure) throw failure;
        return { files, bytes, ms: performance.now() - t0 };
      } finally {
        close();
      }
    },
    abort: close,
  };
}

/** Streams every regular file of `dir` to a receiver; resolves once the receiver confirmed the stream. */
export async function sendDirectory(opts: { host: string; port: number; key: Buffer; dir: string; signal?: AbortSignal; bandwidthMbps?: number }): Promise<TransferStats> {
  return (await openImageStream(opts)).finish();
}
