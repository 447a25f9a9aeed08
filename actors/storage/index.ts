/**
 * The storage-tier actor: decides, per volume of a pod, how its data follows the pod, and performs that
 * move in step with the migration (validate before anything changes, prepare on the destination, cut over
 * inside the freeze, undo on rollback). A volume no tier can move is refused at Validating with a reason,
 * never discovered mid-migration. The node side is actors/node/volumes.ts; the copy, sync.ts.
 */

/** A volume as a pod declares it. */
export interface Volume {
  name: string;
  /** Directory on the pod's node, when it has one to name. */
  hostPath?: string;
  /** `shared`: the same directory is visible on both nodes; `local`: copied. */
  tier?: string;
}

/** One storage tier: how a kind of volume moves. */
export interface StorageTier {
  name: string;
  /** Why the tier cannot move this volume, or undefined when it can. */
  refuse(volume: Volume): string | undefined;
}

export interface VolumePlan {
  volume: string;
  tier: string;
}

/**
 * The tiers this build supports. `shared`: the same directory on both nodes, re-attached as it is. `local`:
 * a directory of the node, copied in rounds over the bus's secured channel, the last one in the freeze.
 */
export const TIERS: readonly StorageTier[] = [
  { name: 'shared', refuse: (v) => (v.tier === 'shared' ? undefined : 'not declared shared') },
  { name: 'local', refuse: (v) => (v.tier === undefined || v.tier === 'local' ? undefined : `not a local volume (tier ${v.tier})`) },
];

/**
 * Plans how each volume moves; throws with a user-readable reason for the first volume no tier accepts.
 * A pod without volumes needs nothing (an empty plan).
 */
export function planVolumes(pod: string, volumes: readonly Volume[], tiers: readonly StorageTier[] = TIERS): VolumePlan[] {
  return volumes.map((v) => {
    const reasons: string[] = [];
    for (const t of tiers.filter((x) => v.tier === undefined || x.name === v.tier)) {
      const why = t.refuse(v);
      if (why === undefined) return { volume: v.name, tier: t.name };
      reasons.push(`${t.name}: ${why}`);
    }
    const known = tiers.map((t) => t.name).join(', ') || 'none in this build';
    throw new Error(`pod ${pod}: volume ${v.name}${v.hostPath ? ` (${v.hostPath})` : ''} cannot move: ${reasons.join('; ') || `no storage tier for it (tiers: ${known})`}`);
  });
}
