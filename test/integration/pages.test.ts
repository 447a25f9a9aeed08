/**
 * pm-pages rounds on a real process: what a round reads is what CRIU will dump. Pages a process copied from a
 * file and then made read-only (a library's RELRO) are dumped by CRIU; a round must carry them so that the
 * freeze sends them as references, while the file's own pages (never copied) stay out.
 */
import test, { type ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { access, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { precopyRound, startDecoder, watchAndEncode } from '../../node-runtime/pages.js';
import { childrenOf } from '../../node-runtime/procs.js';
import { PYTHON } from '../../cli/load.js';

const PAGE = 4096;

/** Maps `file` privately, rewrites its first two pages, makes the mapping read-only, then waits. */
const COPY_THEN_PROTECT = `
import ctypes, mmap, sys, time
f = open(sys.argv[1], 'rb')
m = mmap.mmap(f.fileno(), 4 * 4096, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
m[0:4096] = b'R' * 4096
m[4096:8192] = b'O' * 4096
assert m[8192] == ord('F')  # faulted in: a present page of the file's own
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(addr, 4 * 4096, mmap.PROT_READ) == 0
print('ready', flush=True)
time.sleep(60)
`;

async function startProtected(t: ExecutionContext, file: string): Promise<number> {
  // Its own pid namespace: a round reads every process of the namespace of the pid it is given.
  const holder = spawn('unshare', ['--pid', '--fork', '--kill-child', PYTHON, '-c', COPY_THEN_PROTECT, file], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    holder.stdout.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
    holder.once('exit', (code) => reject(new Error(`the process exited (${code})`)));
  });
  const pid = (await childrenOf(holder.pid!))[0];
  t.truthy(pid);
  return pid!;
}

/** node-runtime/native/pagehash.h's hash_page, for a state file written by hand. */
function hashPage(page: Buffer): bigint {
  const M = (1n << 64n) - 1n;
  const mix = (h: bigint, w: bigint) => {
    let k = (w * 0xbf58476d1ce4e5b9n) & M;
    k ^= k >> 31n;
    return ((h ^ k) * 0x94d049bb133111ebn) & M;
  };
  const lanes = [0n, 1n, 2n, 3n].map((i) => 0x9e3779b97f4a7c15n + i);
  for (let i = 0; i < PAGE; i += 8) lanes[(i / 8) % 4] = mix(lanes[(i / 8) % 4]!, page.readBigUInt64LE(i));
  let h = mix(mix(mix(lanes[0]!, lanes[1]!), lanes[2]!), lanes[3]!);
  h ^= h >> 29n;
  return h === 0n ? 1n : h;
}

/** A scratch folder removed after the test, with an empty `images` folder in it. */
async function scratch(t: ExecutionContext): Promise<{ dir: string; images: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pm-pages-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const images = path.join(dir, 'images');
  await mkdir(images);
  return { dir, images };
}

/** The page contents a round wrote: records of [u64 hash][4096 bytes]. */
function roundPages(out: Buffer): Buffer[] {
  const pages: Buffer[] = [];
  for (let at = 0; at + 8 + PAGE <= out.length; at += 8 + PAGE) pages.push(out.subarray(at + 8, at + 8 + PAGE));
  return pages;
}

test('a round reads the copied pages of a read-only private mapping, not the file\'s own', async (t) => {
  const { dir } = await scratch(t);
  const file = path.join(dir, 'lib.bin');
  await writeFile(file, Buffer.concat([Buffer.alloc(2 * PAGE, 'a'), Buffer.alloc(PAGE, 'F'), Buffer.alloc(PAGE, 'G')]));
  const pid = await startProtected(t, file);
  const state = path.join(dir, 'state');
  await writeFile(state, '');
  const out = path.join(dir, 'round-1');
  const r = await precopyRound(pid, state, out);
  const pages = roundPages(await readFile(out));
  t.is(pages.length, r.newPages);
  t.true(pages.some((p) => p.equals(Buffer.alloc(PAGE, 'R'))), 'the first copied page is in the round');
  t.true(pages.some((p) => p.equals(Buffer.alloc(PAGE, 'O'))), 'the second copied page is in the round');
  t.false(pages.some((p) => p.equals(Buffer.alloc(PAGE, 'F')) || p.equals(Buffer.alloc(PAGE, 'G'))), 'the file\'s own pages are not');
  // A second round finds them known: they go by reference from now on.
  const again = await precopyRound(pid, state, path.join(dir, 'round-2'));
  t.false(roundPages(await readFile(path.join(dir, 'round-2'))).some((p) => p.equals(Buffer.alloc(PAGE, 'R'))));
  t.true(again.knownPages >= r.knownPages);
});

test('the encoder encodes each pages image as soon as it is closed, the rest at finish; stop leaves them', async (t) => {
  const { dir, images } = await scratch(t);
  // The state (what the destination holds) knows the 'K' page: a round over a process holding it wrote it.
  const known = Buffer.alloc(PAGE, 'K');
  const state = path.join(dir, 'state');
  const h = Buffer.alloc(8);
  h.writeBigUInt64LE(hashPage(known));
  await writeFile(state, h);
  await writeFile(path.join(images, 'pages-1.img'), Buffer.concat([known, Buffer.alloc(PAGE, 'n')])); // before: left for finish
  const announced: string[] = [];
  const enc = await watchAndEncode(images, state, (name) => announced.push(name));
  await writeFile(path.join(images, 'pages-2.img'), Buffer.concat([known, known, Buffer.alloc(PAGE, 'm')]));
  await writeFile(path.join(images, 'inventory.img'), 'not pages');
  // Closed while "CRIU dumps on": encoded without waiting for finish, and announced (it may be sent at once).
  for (let i = 0; i < 100 && announced.length === 0; i++) await sleep(10);
  t.false((await readdir(images)).includes('pages-2.img'), 'pages-2.img was encoded before finish');
  t.deepEqual(announced, ['pages-2.img.pmdelta']);
  t.is((await readFile(path.join(images, 'pages-2.img.pmdelta'))).length, 3 * 9 + PAGE, 'whole when announced');
  const r = await enc.finish();
  t.deepEqual({ pages: r.pages, referenced: r.referenced, literal: r.literal }, { pages: 5, referenced: 3, literal: 2 });
  t.deepEqual((await readdir(images)).sort(), ['.encoded', 'inventory.img', 'pages-1.img.pmdelta', 'pages-2.img.pmdelta']);
  // The images themselves wait in .encoded (their memory is freed after the freeze, with the folder).
  t.deepEqual((await readdir(path.join(images, '.encoded'))).sort(), ['pages-1.img', 'pages-2.img']);
  // pages-2: ref K, ref K, literal m = 9 + 9 + 9 + 4096 bytes.
  t.is((await readFile(path.join(images, 'pages-2.img.pmdelta'))).length, 3 * 9 + PAGE);

  // A dump that failed: stop() ends the helper and leaves the images as CRIU wrote them.
  const again = await watchAndEncode(images, state);
  again.stop();
  await writeFile(path.join(images, 'pages-3.img'), known);
  await sleep(100);
  await t.notThrowsAsync(access(path.join(images, 'pages-3.img')));
});

/** A round's cache file: records [u64 hash][4096 bytes]. */
function cacheOf(pages: Buffer[], corrupt = false): Buffer {
  return Buffer.concat(pages.flatMap((p) => {
    const h = Buffer.alloc(8);
    h.writeBigUInt64LE(hashPage(p) ^ (corrupt ? 1n : 0n));
    return [h, p];
  }));
}

/** A delta: [u8 0][u64 hash] for a reference, [u8 1][u64 hash][page] for a literal. */
function deltaOf(entries: Array<{ ref?: Buffer; literal?: Buffer }>): Buffer {
  return Buffer.concat(entries.flatMap((e) => {
    const p = (e.ref ?? e.literal)!;
    const h = Buffer.alloc(8);
    h.writeBigUInt64LE(hashPage(p));
    return e.ref ? [Buffer.from([0]), h] : [Buffer.from([1]), h, p];
  }));
}

test('the rebuilder indexes caches before the freeze, rebuilds each delta as it arrives and the rest at finish', async (t) => {
  const { dir, images } = await scratch(t);
  const a = Buffer.alloc(PAGE, 'a'), b = Buffer.alloc(PAGE, 'b'), c = Buffer.alloc(PAGE, 'c'), n = Buffer.alloc(PAGE, 'n');
  await writeFile(path.join(dir, 'cache-1'), cacheOf([a, b]));
  await writeFile(path.join(dir, 'cache-2'), cacheOf([c]));
  const dec = startDecoder(images);
  t.teardown(() => dec.kill());
  await dec.addCache(path.join(dir, 'cache-1'));
  await dec.addCache(path.join(dir, 'cache-2'));
  // References into both caches, a literal between them: adjacent cache pages are written as one piece.
  await writeFile(path.join(images, 'pages-1.img.pmdelta'), deltaOf([{ ref: a }, { ref: b }, { literal: n }, { ref: c }, { ref: a }]));
  dec.decode('pages-1.img.pmdelta');
  for (let i = 0; i < 100 && (await readdir(images)).includes('pages-1.img.pmdelta'); i++) await sleep(10);
  t.deepEqual(await readFile(path.join(images, 'pages-1.img')), Buffer.concat([a, b, n, c, a]), 'rebuilt before finish');
  t.is((await stat(path.join(images, 'pages-1.img'))).mode & 0o777, 0o600);
  await writeFile(path.join(images, 'pages-2.img.pmdelta'), deltaOf([{ ref: c }]));
  const r = await dec.finish();
  t.like(r, { pages: 6, fromCache: 5 });
  t.true(r.lastMs <= r.ms);
  t.deepEqual(await readFile(path.join(images, 'pages-2.img')), c);
  t.deepEqual((await readdir(images)).sort(), ['pages-1.img', 'pages-2.img']);
});

test('the rebuilder refuses a cache whose page does not match its hash, and a reference it does not hold', async (t) => {
  const { dir, images } = await scratch(t);
  const a = Buffer.alloc(PAGE, 'a');
  await writeFile(path.join(dir, 'bad'), cacheOf([a], true));
  const bad = startDecoder(images);
  t.teardown(() => bad.kill());
  await t.throwsAsync(bad.addCache(path.join(dir, 'bad')), { message: /does not match its hash/ });

  const dec = startDecoder(images);
  t.teardown(() => dec.kill());
  await writeFile(path.join(images, 'pages-1.img.pmdelta'), deltaOf([{ ref: a }]));
  dec.decode('pages-1.img.pmdelta');
  await t.throwsAsync(dec.finish(), { message: /not in the page cache/ });
});
