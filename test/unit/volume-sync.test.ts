/**
 * Volume rounds over TLS-PSK on loopback: the tree arrives identical, later rounds send only what changed
 * (including a same-size rewrite hidden behind an unchanged time), deletions follow, bad paths are refused.
 */
import test from 'ava';
import { chmod, mkdtemp, mkdir, open, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { mayHaveChanged, safeRelative, SendState, sendRound, startVolumeReceiver, treeDigest } from '../../actors/storage/sync.js';
import { newTransferKey } from '../../criu-shim/transfer/index.js';

test('rounds copy a tree, then only what changed, and the trees end identical', async (t) => {
  const base = await mkdtemp(path.join(tmpdir(), 'pm-volsync-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const src = path.join(base, 'src');
  const dst = path.join(base, 'dst');
  await mkdir(path.join(src, 'base', '1'), { recursive: true, mode: 0o700 });
  await chmod(src, 0o751);
  await mkdir(path.join(src, 'pg_wal'), { mode: 0o750 });
  for (let i = 0; i < 30; i++) await writeFile(path.join(src, 'base', '1', `rel${i}`), Buffer.alloc(8192 * (i + 1), i));
  await writeFile(path.join(src, 'pg_wal', 'seg'), Buffer.alloc(5 << 20, 7), { mode: 0o640 });
  await writeFile(path.join(src, 'gone'), 'bye');
  const key = newTransferKey();
  const rx = await startVolumeReceiver({ host: '127.0.0.1', root: dst, key });
  t.teardown(() => rx.close());
  const send = () => sendRound({ host: rx.host, port: rx.port, key, root: src });

  const bulk = await send();
  t.is(bulk.files, 32);
  t.is((await rx.next()).files, 32);
  t.is(await treeDigest(dst), await treeDigest(src));
  t.is((await stat(path.join(dst, 'pg_wal'))).mode & 0o7777, 0o750);
  t.is((await stat(dst)).mode & 0o7777, (await stat(src)).mode & 0o7777, 'the folder itself gets the mode of the source');
  t.is((await stat(path.join(dst, 'pg_wal', 'seg'))).mode & 0o7777, 0o640);

  // Old files (written well before they were copied) are not sent again.
  const old = new Date(Date.now() - 60_000);
  for (let i = 0; i < 30; i++) await utimes(path.join(src, 'base', '1', `rel${i}`), old, old);
  await utimes(path.join(src, 'pg_wal', 'seg'), old, old);
  await send();
  await rx.next();
  const quiet = await send();
  t.is(quiet.files, 0, 'nothing changed since the last round');
  await rx.next();

  // A same-size rewrite (its time moves, as a write's does), a deletion and a new directory tree.
  await writeFile(path.join(src, 'base', '1', 'rel3'), Buffer.alloc(8192 * 4, 99));
  await rm(path.join(src, 'gone'));
  await mkdir(path.join(src, 'new', 'deep'), { recursive: true });
  await writeFile(path.join(src, 'new', 'deep', 'f'), 'x');
  const last = await send();
  t.is(last.files, 2);
  t.is(last.deleted, 1);
  await rx.next();
  t.is(await treeDigest(dst), await treeDigest(src));
  t.deepEqual(await readFile(path.join(dst, 'base', '1', 'rel3')), Buffer.alloc(8192 * 4, 99));
});

test('a file written in the tick it was copied in is sent again', (t) => {
  const e = { type: 'file' as const, mode: 0o600, size: 10, mtimeMs: 1000, uid: 0, gid: 0 };
  t.false(mayHaveChanged(e, { ...e, copiedAtMs: 5000 }));
  t.true(mayHaveChanged(e, { ...e, copiedAtMs: 1050 }), 'modified 50 ms before the copy: a later write may hide');
  t.true(mayHaveChanged(e, { ...e }), 'no record of when it was copied');
  t.true(mayHaveChanged({ ...e, size: 11 }, { ...e, copiedAtMs: 5000 }));
  t.true(mayHaveChanged(e, undefined));
});

test('paths from the wire stay inside the volume', (t) => {
  for (const bad of ['', '/etc/passwd', '../x', 'a/../../x', 'a//b', './a', 'a/.', 'a\0b']) {
    t.throws(() => safeRelative(bad), { message: /refusing path/ }, JSON.stringify(bad));
  }
  t.is(safeRelative('base/1/2600'), 'base/1/2600');
});

test('a sender with the wrong key delivers nothing', async (t) => {
  const base = await mkdtemp(path.join(tmpdir(), 'pm-volsync-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  await mkdir(path.join(base, 'src'));
  await writeFile(path.join(base, 'src', 'secret'), 'data');
  const rx = await startVolumeReceiver({ host: '127.0.0.1', root: path.join(base, 'dst'), key: newTransferKey() });
  t.teardown(() => rx.close());
  await t.throwsAsync(sendRound({ host: rx.host, port: rx.port, key: newTransferKey(), root: path.join(base, 'src') }));
  await t.throwsAsync(stat(path.join(base, 'dst', 'secret')));
});

test('a file the receiver already holds travels as the blocks that changed', async (t) => {
  const base = await mkdtemp(path.join(tmpdir(), 'pm-volsync-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const src = path.join(base, 'src');
  await mkdir(src);
  const seg = path.join(src, 'wal');
  await writeFile(seg, Buffer.alloc(16 << 20, 1));
  const key = newTransferKey();
  const rx = await startVolumeReceiver({ host: '127.0.0.1', root: path.join(base, 'dst'), key });
  t.teardown(() => rx.close());
  const state = new SendState();
  const send = () => sendRound({ host: rx.host, port: rx.port, key, root: src, state });
  t.is((await send()).bytes, 16 << 20);
  // Two writes in the middle of the file, one of them across a block boundary, and the file grows a little.
  const fh = await open(seg, 'r+');
  await fh.write(Buffer.alloc(100, 7), 0, 100, 5 << 20);
  await fh.write(Buffer.alloc(200, 8), 0, 200, (8 << 20) - 100);
  await fh.write(Buffer.alloc(10, 9), 0, 10, 16 << 20);
  await fh.close();
  const patch = await send();
  t.is(patch.files, 1);
  t.is(patch.bytes, 3 * (64 << 10) + 10, 'three changed blocks and the new tail');
  t.is(await treeDigest(path.join(base, 'dst')), await treeDigest(src));
  // Without the sender's memory of what it sent, the file goes whole.
  await utimes(seg, new Date(), new Date());
  t.is((await sendRound({ host: rx.host, port: rx.port, key, root: src })).bytes, (16 << 20) + 10);
  t.is(await treeDigest(path.join(base, 'dst')), await treeDigest(src));
});

test('blocks are compared by a hash keyed per sender: the same content hashes apart under two keys', async (t) => {
  const base = await mkdtemp(path.join(tmpdir(), 'pm-volsync-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const src = path.join(base, 'src');
  await mkdir(src);
  await writeFile(path.join(src, 'f'), Buffer.alloc((1 << 20) + 5, 3));
  const key = newTransferKey();
  const sums: string[][] = [];
  for (const dst of ['a', 'b']) {
    const rx = await startVolumeReceiver({ host: '127.0.0.1', root: path.join(base, dst), key });
    t.teardown(() => rx.close());
    const state = new SendState();
    await sendRound({ host: rx.host, port: rx.port, key, root: src, state });
    sums.push(state.files.get('f')!.sums);
  }
  t.is(sums[0]!.length, 17, 'sixteen 64 KiB blocks and a short one');
  t.true(sums[0]!.every((s) => /^[0-9a-f]{16}$/.test(s)));
  t.is(new Set(sums[0]!.slice(0, 16)).size, 1, 'equal blocks hash alike under one key');
  t.not(sums[0]![0], sums[1]![0], 'and apart under another');
});
