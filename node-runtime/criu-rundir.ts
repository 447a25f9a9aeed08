/** Private directories on world-writable tmpfs (CRIU's kernel-probe cache, checkpoint images): root's, 0700. */
import { chmod, lstat, mkdir, rm } from 'node:fs/promises';
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
