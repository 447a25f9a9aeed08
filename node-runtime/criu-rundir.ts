/** Makes CRIU's kernel-feature cache directory safe to use: a real directory, root's, mode 0700. */
import { chmod, lstat, mkdir, rm } from 'node:fs/promises';
import { CRIU_KDAT_DIR } from './constants.js';

/**
 * /dev/shm is writable by every user: anything already at the path that is not root's own 0700 directory
 * (a symlink, a file, another owner) is removed before the directory is made, so no one else can plant
 * a kernel-feature cache for root's CRIU to trust.
 */
export async function ensureCriuRunDir(dir = CRIU_KDAT_DIR): Promise<void> {
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
