/** Private directories on world-writable tmpfs (CRIU's kernel-probe cache, checkpoint images): root's, 0700. */
import { chmod, lstat, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CRIU_KDAT_DIR, IMAGES_ROOT } from './constants.js';

/**
 * /dev/shm is writable by every user: anything already at the path that is not root's own 0700 directory
 * (a symlink, a file, another owner) is removed before the directory is made, so no one else can plant
 * a kernel-feature cache for root's CRIU to trust.
 */
export async function ensurePrivateDir(dir: string): Promise<void> {
  try {
    const st = await lstat(dir);
    if (st.isDirectory() && !st.isSymbolicLink() && st.uid === 0 && (st.mode & 0o777) === 0o700) return;
    await rm(dir, { recursive: true, force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  await mkdir(dir, { mode: 0o700 });
  await chmod(dir, 0o700);
}

/** CRIU's kernel-feature cache directory (compiled into the CRIU build). */
export function ensureCriuRunDir(): Promise<void> {
  return ensurePrivateDir(CRIU_KDAT_DIR);
}

/** Where checkpoint images live: process memory, so nobody but root may see, plant or swap them. */
export function ensureImagesRoot(): Promise<void> {
  return ensurePrivateDir(IMAGES_ROOT);
}

/**
 * CRIU options its RPC has no field for. `file-validation filesize`: a mapped file is checked by its size
 * only, not also by the ELF build-id CRIU otherwise reads from every mapped library on dump and again on
 * restore (PostgreSQL: ~40 libraries in each of 15 processes; freeze median 742 -> 677 ms over 6 moves each,
 * A/B interleaved). The destination runs the same container image, so a library of equal size and another
 * build would be one the image itself changed.
 */
const CRIU_CONFIG = 'file-validation filesize\n';

/**
 * The CRIU configuration file for dumps and restores, (re)written when missing or changed. It lives in root's
 * private images root: a CRIU configuration can name action scripts, so no one else may write it, and it
 * never travels with images (a destination must not take CRIU options from a source).
 */
export async function criuConfigFile(): Promise<string> {
  const file = path.join(IMAGES_ROOT, 'criu.conf');
  if (await readFile(file, 'utf8').then((c) => c === CRIU_CONFIG, () => false)) return file;
  await ensureImagesRoot();
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, CRIU_CONFIG, { mode: 0o600 });
  await rename(tmp, file);
  return file;
}
