/**
 * Pod volumes in the local cluster. Every node of it shares one filesystem, so "the same path on each
 * node, each node's own data" is kept by renames: the copy of the node the pod runs on sits at the path the
 * pod sees, the others in each node's `.disks` folder, and a marker beside the path names whose copy is
 * there. A restore puts the destination's copy in place inside the freeze (a rename: the frozen source
 * keeps its files open, by inode, wherever its copy goes); a rollback puts the source's back. No mount is
 * involved, so the files of a pod stay on the filesystem CRIU knows through every move.
 */
import { chmod, chown, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InvalidRequestError, NodeOperationError } from '../bus/errors.js';
import { nodeVolumeDir, podVolumePath } from './constants.js';
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

/** The environment variable that tells the pod where a volume is: PODMOTION_VOLUME_<NAME>. */
export function volumeEnvName(volume: string): string {
  return `PODMOTION_VOLUME_${volume.toUpperCase()}`;
}

const markerOf = (cluster: string, pod: string, volume: string) => path.join(path.dirname(podVolumePath(cluster, pod, volume)), `.${volume}.node`);

/** The node whose copy of a `local` volume is at the pod's path (undefined: none is). */
async function placedNode(cluster: string, pod: string, volume: string): Promise<string | undefined> {
  const node = (await readFile(markerOf(cluster, pod, volume), 'utf8').catch(() => '')).trim();
  return node && (await exists(podVolumePath(cluster, pod, volume))) ? node : undefined;
}

const exists = (p: string) => stat(p).then(() => true, () => false);

/** Where a node's copy of a volume is now: at the pod's path if it is the placed one. */
export async function copyDir(cluster: string, node: string, pod: string, v: { name: string; tier: string }): Promise<string> {
  if (v.tier === 'shared') return podVolumePath(cluster, pod, v.name);
  return (await placedNode(cluster, pod, v.name)) === node ? podVolumePath(cluster, pod, v.name) : nodeVolumeDir(cluster, node, pod, v.name);
}

/**
 * Creates a new pod's volume on `node` at the pod's path (owned by `owner` when given, mode 0700) — or,
 * for a `local` volume whose copy this node already holds (data brought here for it, a drained pod's),
 * puts that copy in place. A `shared` volume that exists is kept.
 */
export async function createVolume(cluster: string, node: string, pod: string, v: { name: string; tier: string }, owner?: { uid: number; gid: number }): Promise<PodVolume & { adopted?: boolean }> {
  const target = podVolumePath(cluster, pod, v.name);
  const volume: PodVolume = { name: v.name, tier: v.tier as VolumeTier, path: target };
  // The folders above it let anyone pass (0711) and list nothing: the pod may run as any user.
  for (let d = path.dirname(target), i = 0; i < 3; d = path.dirname(d), i++) {
    await mkdir(d, { recursive: true, mode: 0o711 });
    await chmod(d, 0o711);
  }
  if (v.tier === 'local' && ((await placedNode(cluster, pod, v.name)) === node || (await exists(nodeVolumeDir(cluster, node, pod, v.name))))) {
    await placeCopy(cluster, node, pod, v.name, { discardDisplaced: true });
    return { ...volume, adopted: true };
  }
  if (v.tier === 'shared' && (await exists(target))) return { ...volume, adopted: true };
  await rm(target, { recursive: true, force: true });
  await mkdir(target, { mode: 0o700 });
  if (owner) await chown(target, owner.uid, owner.gid);
  if (v.tier === 'local') await writeFile(markerOf(cluster, pod, v.name), `${node}\n`, { mode: 0o600 });
  return volume;
}

/**
 * Puts `node`'s copy of a `local` volume at the pod's path. The copy that was there goes back to its node's
 * folder, or is deleted with `discardDisplaced` (a rollback: the displaced copy is the destination's).
 */
export async function placeCopy(cluster: string, node: string, pod: string, volume: string, o: { discardDisplaced?: boolean } = {}): Promise<void> {
  const target = podVolumePath(cluster, pod, volume);
  const current = await placedNode(cluster, pod, volume);
  if (current === node) return;
  const incoming = nodeVolumeDir(cluster, node, pod, volume);
  if (!(await exists(incoming))) throw new NodeOperationError(`volume ${volume} of pod ${pod}: ${node} has no copy of it`);
  if (current !== undefined) {
    const home = nodeVolumeDir(cluster, current, pod, volume);
    const away = o.discardDisplaced ? `${home}.discarded` : home;
    await rm(home, { recursive: true, force: true });
    if (away !== home) await rm(away, { recursive: true, force: true });
    await mkdir(path.dirname(home), { recursive: true, mode: 0o700 });
    await rename(target, away);
    if (o.discardDisplaced) await rm(away, { recursive: true, force: true });
  } else {
    await rm(target, { recursive: true, force: true });
  }
  await rename(incoming, target);
  await writeFile(markerOf(cluster, pod, volume), `${node}\n`, { mode: 0o600 });
}

/** Deletes a node's copy of a `local` volume, unless it is the one at the pod's path. */
export async function removeNodeCopy(cluster: string, node: string, pod: string, volume: string): Promise<void> {
  await rm(nodeVolumeDir(cluster, node, pod, volume), { recursive: true, force: true });
}

/** Deletes every copy of a pod's volumes: the one in place and those waiting on any node's disk. */
export async function removePodVolumes(cluster: string, pod: string): Promise<void> {
  const disks = path.dirname(path.dirname(path.dirname(nodeVolumeDir(cluster, 'n', pod, 'x'))));
  for (const node of await readdir(disks).catch(() => [] as string[])) {
    await rm(path.join(disks, node, pod), { recursive: true, force: true });
  }
  await rm(path.dirname(podVolumePath(cluster, pod, 'x')), { recursive: true, force: true });
}

/** uid and gid of a user name, from the system's user database. */
export async function userIds(user: string): Promise<{ uid: number; gid: number }> {
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(user)) throw new InvalidRequestError(`--user ${JSON.stringify(user)} is not a user name`);
  const r = await run('getent', ['passwd', user], { okCodes: [0, 2] });
  const f = r.stdout.trim().split(':');
  if (r.code !== 0 || f.length < 4) throw new InvalidRequestError(`user ${user} does not exist on this node`);
  return { uid: Number(f[2]), gid: Number(f[3]) };
}
