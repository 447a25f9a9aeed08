/**
 * Pod volumes in the local cluster: the path a pod sees is a bind mount of the node's copy (`local`) or of
 * the cluster's shared directory (`shared`). Every node of the local cluster shares one mount namespace, so
 * only the copy of the node where the pod runs is mounted there; a migration re-points the mount inside
 * the freeze (the frozen source keeps its files open on the old mount, which stays alive detached).
 */
import { readFile, mkdir, chown } from 'node:fs/promises';
import { InvalidRequestError } from '../bus/errors.js';
import { nodeVolumeDir, podVolumePath, sharedVolumeDir } from './constants.js';
import { run } from './exec.js';

export type VolumeTier = 'local' | 'shared';
export const VOLUME_TIERS: readonly VolumeTier[] = ['local', 'shared'];

/** A pod's volume as its record keeps it. */
export interface PodVolume {
  name: string;
  tier: VolumeTier;
  /** Where the pod sees it. */
  path: string;
}

const VOLUME_NAME = /^[a-z][a-z0-9]{0,30}$/;

/** Parses `NAME[:TIER]` (the CLI's --volume). */
export function parseVolume(spec: string): { name: string; tier: string } {
  const [name = '', tier = 'local', ...rest] = spec.split(':');
  if (!VOLUME_NAME.test(name) || rest.length > 0) {
    throw new InvalidRequestError(`--volume ${JSON.stringify(spec)}: use NAME[:TIER], NAME lowercase letters and digits (at most 31)`);
  }
  return { name, tier };
}

/** The directory behind a volume on a node. */
export function volumeBacking(cluster: string, node: string, pod: string, v: { name: string; tier: string }): string {
  return v.tier === 'shared' ? sharedVolumeDir(cluster, pod, v.name) : nodeVolumeDir(cluster, node, pod, v.name);
}

/** The environment variable that tells the pod where a volume is: PODMOTION_VOLUME_<NAME>. */
export function volumeEnvName(volume: string): string {
  return `PODMOTION_VOLUME_${volume.toUpperCase()}`;
}

/** Creates a volume's directory on a node (owned by `owner` when given, mode 0700). */
export async function createBacking(dir: string, owner?: { uid: number; gid: number }): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (owner) await chown(dir, owner.uid, owner.gid);
}

/** Makes the pod's volume path show `backing`, replacing whatever was mounted there. */
export async function attachVolume(cluster: string, pod: string, volume: string, backing: string): Promise<void> {
  const target = podVolumePath(cluster, pod, volume);
  await mkdir(target, { recursive: true, mode: 0o700 });
  // One command: detach what is there (lazily: a frozen pod may hold files open on it), bind the new copy.
  await run('sh', ['-c', 'while mountpoint -q "$1"; do umount -l "$1" || exit 1; done; exec mount --bind "$2" "$1"', 'attach', target, backing]);
}

/** Removes every mount under `dir` (deepest first, lazily). */
export async function unmountUnder(dir: string): Promise<number> {
  let removed = 0;
  for (let pass = 0; pass < 10; pass++) {
    const points = (await mountPoints()).filter((m) => m === dir || m.startsWith(`${dir}/`)).sort((a, b) => b.length - a.length);
    if (points.length === 0) break;
    for (const m of points) {
      await run('umount', ['-l', m]).catch(() => {});
      removed++;
    }
  }
  return removed;
}

async function mountPoints(): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  // Field 5 is the mount point, with spaces and such escaped as octal.
  return text.split('\n').filter(Boolean).map((l) => l.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

/** uid and gid of a user name, from the system's user database. */
export async function userIds(user: string): Promise<{ uid: number; gid: number }> {
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(user)) throw new InvalidRequestError(`--user ${JSON.stringify(user)} is not a user name`);
  const r = await run('getent', ['passwd', user], { okCodes: [0, 2] });
  const f = r.stdout.trim().split(':');
  if (r.code !== 0 || f.length < 4) throw new InvalidRequestError(`user ${user} does not exist on this node`);
  return { uid: Number(f[2]), gid: Number(f[3]) };
}
