/**
 * The post-copy page channel. A lazy dump leaves the pod's private anonymous memory out of the images
 * (PE_LAZY) and the tree stopped on the source; the destination's `criu lazy-pages` daemon asks for those
 * pages as the restored pod faults on them and prefetches the rest in the background.
 *
 * The source answers with pm-page-source (criu-shim/native/page-source.c), which reads each page from the
 * stopped tasks: nothing is copied inside the freeze, and the source keeps every page until the daemon
 * says it has them all (CLOSE). CRIU's own lazy server is not used: it keeps the pages in pipes it must
 * tee(), which this kernel refuses (EOPNOTSUPP). Its dump still needs a page socket (patch 0002), which
 * `endedPageSocket` answers with an immediate end: the lazy session closes at once, the tree stays stopped.
 *
 * Nothing listens on the network but the destination agent, with TLS-PSK and the migration's key (as the
 * image stream, transfer/index.ts). The daemon gets one end of a local socket (`--ps-socket 3`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { Duplex } from 'node:stream';
import type tls from 'node:tls';
import { NodeOperationError } from '../../bus/errors.js';
import { listenEphemeral, pskConnect, pskServer } from './psk.js';
import { LineChannel } from '../../common/line-channel.js';

/** Not the image stream's identity: a page channel cannot be mistaken for an image stream or the reverse. */
const PSK_IDENTITY = 'podmotion-pages';
/** A peer that connects but completes no handshake in this long is not a migration peer. */
const HANDSHAKE_TIMEOUT_MS = 30_000;
const MAX_STDERR_CHARS = 4096;
/**
 * Bytes a relay lets queue before it stops reading: a reply is at most 16 MiB and the daemon keeps about one
 * request per task in flight, so waiting for every 16 KiB to drain (the stream default) only adds turns.
 */
const MAX_QUEUED_BYTES = 8 << 20;

/**
 * An AF_UNIX listener for a lazy dump's page socket (pm-criu-swrk --connect): it ends each connection at
 * once, so CRIU's lazy server sees EOF before any request and the dump returns with the tree stopped.
 */
export async function endedPageSocket(socketPath: string): Promise<{ close(): void }> {
  await rm(socketPath, { force: true });
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return { close: () => { server.close(); void rm(socketPath, { force: true }); } };
}

export interface PageStreamStats {
  /** Bytes sent to the destination (reply headers and pages). */
  bytes: number;
  /** The destination's daemon ended the session (CLOSE): every page it wanted was delivered. */
  complete: boolean;
  ms: number;
  /** pm-page-source's last line: request and page counts, or its error. */
  summary: string;
}

export interface PageSource {
  /** Settles when the session is over. Never rejects. */
  done: Promise<PageStreamStats>;
  /** Ends the session (the destination will get no more pages). Idempotent. */
  end(reason: string): void;
  endReason(): string | undefined;
}

/**
 * Serves the lazy memory of the stopped tree rooted at `rootPid` to the destination's page channel.
 * Resolves once the channel is up; from then on the destination's daemon drives it.
 */
export async function servePages(o: { helperPath: string; rootPid: number; host: string; port: number; key: Buffer; bandwidthMbps?: number }): Promise<PageSource> {
  const t0 = performance.now();
  let ended: string | undefined;
  const sock = pskConnect({ host: o.host, port: o.port, key: o.key, identity: PSK_IDENTITY });
  sock.setNoDelay(true);
  sock.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { sock.destroy(); reject(new NodeOperationError('page channel: no TLS handshake with the destination')); }, HANDSHAKE_TIMEOUT_MS);
    sock.once('secureConnect', () => { clearTimeout(timer); resolve(); });
    sock.once('close', () => { clearTimeout(timer); reject(new NodeOperationError('page channel: the destination refused it')); });
  });
  const child = spawn(o.helperPath, ['--pid', String(o.rootPid)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-MAX_STDERR_CHARS)));
  child.stdin.on('error', () => {});
  let bytes = 0;
  // --bandwidth-mbps: bytes per millisecond is mbps * 125; the reader pauses while ahead of the cap.
  const bytesPerMs = o.bandwidthMbps === undefined ? undefined : o.bandwidthMbps * 125;
  child.stdout.on('data', (b: Buffer) => {
    bytes += b.length;
    sock.write(b);
    const full = sock.writableLength > MAX_QUEUED_BYTES;
    const ahead = bytesPerMs === undefined ? 0 : bytes / bytesPerMs - (performance.now() - t0);
    if (full || ahead > 1) {
      child.stdout.pause();
      // A timer only when ahead of the cap: even a 0 ms timer waits a millisecond, per 64 KiB read.
      const resume = () => (ahead > 1 ? setTimeout(() => child.stdout.resume(), ahead) : child.stdout.resume());
      if (full) sock.once('drain', resume);
      else resume();
    }
  });
  sock.pipe(child.stdin);
  const done = new Promise<PageStreamStats>((resolve) => {
    child.once('close', (code) => {
      const summary = stderr.trim().split('\n').at(-1) ?? '';
      // CLOSE is answered with a 4-byte status; the destination closes the channel once it has read it.
      if (code === 0) sock.end();
      else sock.destroy();
      resolve({ bytes, complete: code === 0, ms: performance.now() - t0, summary });
    });
  });
  sock.on('close', () => {
    ended ??= 'the destination closed the page channel';
    child.stdin.end();
  });
  return {
    done,
    endReason: () => ended,
    end(reason) {
      ended ??= reason;
      sock.destroy();
      if (child.exitCode === null) child.kill('SIGTERM');
    },
  };
}

/** The destination's end: one TLS connection from the source, joined to a lazy-pages daemon. */
export interface PageSink {
  host: string;
  port: number;
  /**
   * Starts `criu lazy-pages` on the images in `dir` (after they have all arrived, before the restore) with
   * its page-server socket joined to the source's stream. Resolves once the daemon runs.
   */
  startDaemon(o: DaemonOptions): Promise<LazyDaemon>;
  close(): void;
}

export interface LazyDaemon {
  /** Settles when the daemon exits: resolves if every lazy page was delivered, rejects otherwise. */
  finished: Promise<{ ms: number; bytes: number }>;
  kill(): void;
}

/** How the destination starts its `criu lazy-pages` daemon. */
export interface DaemonOptions {
  criuPath: string;
  connectExecPath: string;
  /** The images (all arrived): the daemon reads which pages are lazy from them. */
  dir: string;
  logLevel?: number;
}

export async function startPageSink(o: { host: string; key: Buffer; socketPath: string }): Promise<PageSink> {
  let conn: tls.TLSSocket | undefined;
  let arrived!: (s: tls.TLSSocket) => void;
  const connected = new Promise<tls.TLSSocket>((resolve) => (arrived = resolve));
  let daemon: ChildProcess | undefined;
  let closed = false;
  const server = pskServer(PSK_IDENTITY, o.key, (sock) => {
    if (conn) return sock.destroy();
    conn = sock;
    server.close();
    sock.pause();
    sock.setNoDelay(true);
    sock.on('error', () => {});
    arrived(sock);
  });
  const port = await listenEphemeral(server, o.host);

  return {
    host: o.host, port,
    close() {
      closed = true;
      server.close();
      conn?.destroy();
      if (daemon && daemon.exitCode === null) daemon.kill('SIGKILL');
    },
    async startDaemon(d) {
      if (closed) throw new NodeOperationError('page channel closed before the post-copy daemon started');
      return launchDaemon(d, o.socketPath, connected, (child) => {
        daemon = child;
        if (closed) child.kill('SIGKILL');
      }, () => conn?.destroy());
    },
  };
}

/**
 * The destination's page store for a pre-copy whose writes were tracked (pm-page-source --store): it indexes
 * each round's pages and map as they arrive, then the final pages in the freeze, and serves a
 * `criu lazy-pages` daemon: the restored pod's memory comes from what arrived before it resumed.
 */
export class PageStore {
  private stderr = '';
  private exited = false;
  private readonly control: LineChannel;

  private constructor(private readonly helper: ChildProcess) {
    helper.stderr!.on('data', (b: Buffer) => (this.stderr = (this.stderr + b.toString()).slice(-MAX_STDERR_CHARS)));
    helper.stdin!.on('error', () => {});
    const fd3 = helper.stdio[3] as Duplex;
    this.control = new LineChannel(fd3, fd3);
    helper.once('exit', () => {
      this.exited = true;
      this.control.end(() => this.failure());
    });
  }

  static start(helperPath: string): PageStore {
    return new PageStore(spawn(helperPath, ['--store'], { stdio: ['pipe', 'pipe', 'pipe', 'pipe'] }));
  }

  /** Indexes a round's page cache or map (in round order); settles once indexed. */
  add(kind: 'cache' | 'map', file: string): Promise<void> {
    return this.command(`${kind} ${file}`);
  }

  /** Indexes the final pages, then starts the daemon on the images in `d.dir`, served from this store. */
  async finish(finalFile: string, d: DaemonOptions & { socketPath: string }): Promise<LazyDaemon> {
    await this.command(`final ${finalFile}`);
    const upstream = Duplex.from({ readable: this.helper.stdout!, writable: this.helper.stdin! });
    upstream.on('error', () => {});
    const daemon = await launchDaemon(d, d.socketPath, Promise.resolve(upstream), () => {}, () => this.kill());
    const finished = daemon.finished.catch((e: Error) => {
      const why = this.stderr.trim().split('\n').at(-1);
      throw new NodeOperationError(`${e.message}${why ? `; page store: ${why}` : ''}`);
    });
    finished.catch(() => {});
    return { finished, kill: () => { daemon.kill(); this.kill(); } };
  }

  kill(): void {
    if (!this.exited) this.helper.kill('SIGKILL');
  }

  private failure(): Error {
    const why = this.stderr.trim().split('\n').at(-1);
    return new NodeOperationError(`page store: ${why || 'exited'}`);
  }

  private async command(line: string): Promise<void> {
    await this.control.send(line);
  }
}

/**
 * Starts `criu lazy-pages` on the images in `d.dir` with its page-server socket joined to `upstream` (the
 * source's stream, or a local store); resolves once the daemon listens for the restore.
 */
async function launchDaemon(d: DaemonOptions, socketPath: string, upstream: Promise<Duplex>, started: (child: ChildProcess) => void,
  onExit: () => void): Promise<LazyDaemon> {
  // The daemon's page-server socket: pm-connect-exec connects it (blocking, as CRIU expects) to a
  // listener in a root-only directory and hands it over as fd 3.
  await rm(socketPath, { force: true });
  const local = net.createServer();
  await new Promise<void>((resolve, reject) => {
    local.once('error', reject);
    local.listen(socketPath, () => resolve());
  });
  const accepted = new Promise<net.Socket>((resolve) => local.once('connection', resolve));
  const t0 = performance.now();
  const child = spawn(d.connectExecPath, [
    socketPath, '3', d.criuPath, 'lazy-pages', '--page-server', '--ps-socket', '3', '-D', d.dir, '-W', d.dir,
    '-o', 'lazy-pages.log', `-v${d.logLevel ?? 2}`, '--status-fd', '4',
  ], { stdio: ['ignore', 'ignore', 'pipe', 'ignore', 'pipe'] });
  started(child);
  /** The agent's end of the daemon's page-server socket, once the daemon has connected. */
  const link: { sock?: net.Socket } = {};
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4096)));
  let bytes = 0;
  const finished = new Promise<{ ms: number; bytes: number }>((resolve, reject) => {
    child.once('error', (e) => reject(new NodeOperationError(`criu lazy-pages: ${e.message}`)));
    child.once('exit', (code, signal) => {
      link.sock?.destroy();
      onExit();
      if (code === 0) resolve({ ms: performance.now() - t0, bytes });
      else reject(new NodeOperationError(`criu lazy-pages ${signal ? `killed by ${signal}` : `exited ${code}`} before every page arrived${stderr.trim() ? `: ${stderr.trim().split('\n').at(-1)}` : ''} (see lazy-pages.log)`));
    });
  });
  link.sock = await Promise.race([accepted, finished.then(() => undefined, () => undefined)]);
  local.close();
  await rm(socketPath, { force: true });
  finished.catch(() => {});
  const toDaemon = link.sock;
  if (!toDaemon) {
    await finished;
    throw new NodeOperationError('criu lazy-pages exited before it was ready');
  }
  toDaemon.on('error', () => {});
  void upstream.then((sock) => {
    sock.on('data', (b: Buffer) => {
      bytes += b.length;
      toDaemon.write(b);
      if (toDaemon.writableLength > MAX_QUEUED_BYTES) {
        sock.pause();
        toDaemon.once('drain', () => sock.resume());
      }
    });
    // The stream from the source ended: whatever the daemon still waits for will not come.
    sock.on('close', () => toDaemon.end());
    toDaemon.on('data', (b: Buffer) => sock.write(b));
    toDaemon.on('end', () => sock.end());
    sock.resume();
  });
  // The daemon writes one byte to its status fd once lazy-pages.socket listens: the restore may start.
  const status = child.stdio[4] as NodeJS.ReadableStream;
  await Promise.race([
    new Promise<void>((resolve) => status.once('data', () => resolve())),
    finished.then(() => { throw new NodeOperationError('criu lazy-pages exited before it was ready'); }),
  ]);
  return { finished, kill: () => { if (child.exitCode === null) child.kill('SIGKILL'); } };
}
