/** Both ends of a TLS stream (the image stream's and the volume stream's): what a receiver has read ahead, and writes with backpressure. */
import type tls from 'node:tls';
import { NodeOperationError } from '../../bus/errors.js';

/** The receiver reads ahead at most this much before it stops the socket (backpressure). */
const INBOX_LIMIT_BYTES = 16 << 20;

/**
 * What has arrived from the socket, kept as a list of pieces: bytes are copied once, when taken, never
 * re-concatenated as more arrive. The socket flows (each TLS record is taken as it is decrypted, not one
 * 'readable' turn per 16 KiB) and is paused while more than INBOX_LIMIT_BYTES wait to be taken.
 */
export class Inbox {
  private parts: Buffer[] = [];
  length = 0;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  constructor(private readonly sock: tls.TLSSocket, label: string) {
    const rouse = () => {
      const w = this.wake;
      this.wake = undefined;
      w?.();
    };
    sock.on('data', (b: Buffer) => {
      this.parts.push(b);
      this.length += b.length;
      if (this.length > INBOX_LIMIT_BYTES) sock.pause();
      rouse();
    });
    sock.once('end', () => { this.failure ??= new NodeOperationError(`${label} ended early`); rouse(); });
    sock.once('error', (e: Error) => { this.failure ??= e; rouse(); });
    sock.once('close', () => { this.failure ??= new NodeOperationError(`${label} closed early`); rouse(); });
    sock.resume();
  }

  /** Waits until more bytes have arrived (or the stream ended: an error). */
  async more(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.sock.isPaused()) this.sock.resume();
    await new Promise<void>((resolve) => (this.wake = resolve));
    if (this.failure && this.length === 0) throw this.failure;
  }

  /** Removes and returns the first n bytes (n <= length). */
  take(n: number): Buffer {
    const out: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const head = this.parts[0]!;
      if (head.length <= need) {
        out.push(head);
        this.parts.shift();
        need -= head.length;
      } else {
        out.push(head.subarray(0, need));
        this.parts[0] = head.subarray(need);
        need = 0;
      }
    }
    this.length -= n;
    if (this.length <= INBOX_LIMIT_BYTES && this.sock.isPaused()) this.sock.resume();
    return out.length === 1 ? out[0]! : Buffer.concat(out, n);
  }

  /** Exactly n bytes (n is small: a frame header). */
  async exact(n: number): Promise<Buffer> {
    while (this.length < n) await this.more();
    return this.take(n);
  }
}

/** Writes to the socket, waiting for drain when its buffer is full (backpressure without a pipeline). */
export function writeAll(sock: tls.TLSSocket, buf: Buffer, label: string): Promise<void> {
  // A receiver that refused the stream has reset the connection: 'close' may already have fired.
  if (sock.destroyed) return Promise.reject(new NodeOperationError(`${label} receiver closed the stream`));
  if (sock.write(buf)) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const onDrain = () => { sock.off('close', onClose); resolve(); };
    const onClose = () => { sock.off('drain', onDrain); reject(new NodeOperationError(`${label} stream closed while sending`)); };
    sock.once('drain', onDrain);
    sock.once('close', onClose);
  });
}
