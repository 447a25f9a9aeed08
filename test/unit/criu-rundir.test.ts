/** CRIU's cache directory is made root's own, replacing whatever else stood at its path. */
import test from 'ava';
import { lstat, mkdtemp, mkdir, rm, symlink, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ensurePrivateDir } from '../../node-runtime/criu-rundir.js';

const cases: Array<[string, (p: string, base: string) => Promise<void>]> = [
  ['nothing there', async () => {}],
  ['a file', (p) => writeFile(p, 'planted')],
  ['a symlink to another directory', async (p, base) => { await mkdir(path.join(base, 'elsewhere')); await symlink(path.join(base, 'elsewhere'), p); }],
  ['a directory open to everyone', async (p) => { await mkdir(p); await chmod(p, 0o777); await writeFile(path.join(p, 'criu.kdat'), 'x'); }],
];
for (const [label, plant] of cases) {
  test(`ensurePrivateDir over ${label}`, async (t) => {
    const base = await mkdtemp(path.join(tmpdir(), 'pm-kdat-'));
    const dir = path.join(base, 'podmotion-criu');
    await plant(dir, base);
    await ensurePrivateDir(dir);
    const st = await lstat(dir);
    t.true(st.isDirectory());
    t.false(st.isSymbolicLink());
    t.is(st.mode & 0o777, 0o700);
    t.is(st.uid, process.getuid!());
    await rm(base, { recursive: true, force: true });
  });
}
