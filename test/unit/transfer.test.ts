/** Image streaming over TLS-PSK on loopback: contents arrive intact; a wrong key or bad name is refused. */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { newTransferKey, sendDirectory, startReceiver } from '../../criu-shim/transfer/index.js';

async function tmp(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'pm-transfer-'));
}
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('a directory of images arrives byte for byte, files private to root', async (t) => {
  const src = await tmp();
  const dst = path.join(await tmp(), 'images');
  // Small files (sent as one batch) on both sides of large ones (streamed), and one larger than the receiver
  // reads ahead, so that its backpressure is exercised.
  const files: Record<string, Buffer> = {
    'pages-1.img': randomBytes(3 * 1024 * 1024 + 17),
    'pages-2.img': randomBytes(40 * 1024 * 1024 + 5),
    'core-1.img': randomBytes(1000),
    'empty.img': Buffer.alloc(0),
  };
  for (let i = 0; i < 40; i++) files[`${i % 2 ? 'a' : 'z'}mm-${i}.img`] = randomBytes(1 + i * 997);
  for (const [n, b] of Object.entries(files)) await writeFile(path.join(src, n), b);
  const key = newTransferKey();
  const rx = await startReceiver({ host: '127.0.0.1', dir: dst, key, maxBytes: 128 << 20 });
  const sent = await sendDirectory({ host: rx.host, port: rx.port, key, dir: src });
  const got = await rx.done;
  t.is(sent.files, Object.keys(files).length);
  t.is(got.files, Object.keys(files).length);
  t.is(got.bytes, sent.bytes);
  t.deepEqual((await readdir(dst)).sort(), Object.keys(files).sort());
  for (const [n, b] of Object.entries(files)) {
    t.is(sha(await readFile(path.join(dst, n))), sha(b), n);
    t.is((await stat(path.join(dst, n))).mode & 0o777, 0o600);
  }
  t.is((await stat(dst)).mode & 0o777, 0o700);
  await rm(src, { recursive: true });
  await rm(path.dirname(dst), { recursive: true });
});

test('a sender with the wrong key cannot deliver anything', async (t) => {
  const src = await tmp();
  const dst = path.join(await tmp(), 'images');
  await writeFile(path.join(src, 'x.img'), 'secret');
  const rx = await startReceiver({ host: '127.0.0.1', dir: dst, key: newTransferKey(), maxBytes: 1 << 20 });
  await t.throwsAsync(sendDirectory({ host: rx.host, port: rx.port, key: newTransferKey(), dir: src }));
  t.deepEqual(await readdir(dst), []);
  rx.close();
  await t.throwsAsync(rx.done, { message: /closed before a stream arrived/ });
  await rm(src, { recursive: true });
  await rm(path.dirname(dst), { recursive: true });
});

test('a stream larger than the receiver allows is refused', async (t) => {
  const src = await tmp();
  const dst = path.join(await tmp(), 'images');
  await writeFile(path.join(src, 'big.img'), randomBytes(2 << 20));
  const key = newTransferKey();
  const rx = await startReceiver({ host: '127.0.0.1', dir: dst, key, maxBytes: 1 << 20 });
  const sending = sendDirectory({ host: rx.host, port: rx.port, key, dir: src });
  await t.throwsAsync(rx.done, { message: /more than 1048576 bytes/ });
  await t.throwsAsync(sending);
  await rm(src, { recursive: true });
  await rm(path.dirname(dst), { recursive: true });
});
