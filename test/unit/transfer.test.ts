/** Image streaming over TLS-PSK on loopback: contents arrive intact; a wrong key or bad name is refused. */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { newTransferKey, openImageStream, sendDirectory, startReceiver } from '../../criu-shim/transfer/index.js';

async function tmp(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'pm-transfer-'));
}
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A source directory, a receiver's directory (removed after the test) and a key. */
async function pair(t: ExecutionContext): Promise<{ src: string; dst: string; key: Buffer }> {
  const src = await tmp();
  const dst = path.join(await tmp(), 'images');
  t.teardown(async () => {
    await rm(src, { recursive: true, force: true });
    await rm(path.dirname(dst), { recursive: true, force: true });
  });
  return { src, dst, key: newTransferKey() };
}

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

test('an early stream sends files as they are handed over, the rest at finish; the receiver hears of each', async (t) => {
  const { src, dst, key } = await pair(t);
  const heard: string[] = [];
  const rx = await startReceiver({ host: '127.0.0.1', dir: dst, key, maxBytes: 64 << 20, onFile: (n) => heard.push(n) });
  const early = randomBytes(2 * 1024 * 1024 + 3);
  await writeFile(path.join(src, 'pages-1.img.pmdelta'), early);
  const stream = await openImageStream({ host: rx.host, port: rx.port, key, dir: src });
  stream.send('pages-1.img.pmdelta');
  stream.send('pages-1.img.pmdelta'); // once per name
  // It arrives whole (and is announced) while the sender has not finished: the other files do not exist yet.
  for (let i = 0; i < 200 && !heard.includes('pages-1.img.pmdelta'); i++) await new Promise((r) => setTimeout(r, 10));
  t.deepEqual(heard, ['pages-1.img.pmdelta']);
  t.is(sha(await readFile(path.join(dst, 'pages-1.img.pmdelta'))), sha(early));
  await writeFile(path.join(src, 'core-1.img'), 'core');
  await writeFile(path.join(src, 'pages-2.img.pmdelta'), randomBytes(5000));
  const sent = await stream.finish();
  const got = await rx.done;
  t.is(sent.files, 3);
  t.is(got.files, 3);
  t.is(got.bytes, sent.bytes);
  t.deepEqual(heard.slice().sort(), ['core-1.img', 'pages-1.img.pmdelta', 'pages-2.img.pmdelta']);
  t.deepEqual((await readdir(dst)).sort(), ['core-1.img', 'pages-1.img.pmdelta', 'pages-2.img.pmdelta']);
});

test('an early stream given up breaks at the receiver: it keeps nothing confirmed', async (t) => {
  const { src, dst, key } = await pair(t);
  const rx = await startReceiver({ host: '127.0.0.1', dir: dst, key, maxBytes: 1 << 20 });
  const stream = await openImageStream({ host: rx.host, port: rx.port, key, dir: src });
  stream.abort();
  await t.throwsAsync(rx.done);
});
