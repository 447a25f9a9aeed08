/**
 * The storage-tier actor: decides, per volume of a pod, how its data follows the pod, and performs that
 * move in step with the migration (validate before anything changes, prepare on the destination, cut over
 * inside the freeze, undo on rollback). Pods of the local cluster have no volumes yet; a pod that declares
 * any is refused at Validating with a reason, never discovered mid-migration.
 */

/** A volume as a pod declares it. */
export interface Volume {
  name: string;
  /** Directory on the pod's node. */
  hostPath: string;
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

/** The tiers this build supports; an empty list means only pods without volumes can move. */
export const TIERS: readonly StorageTier[] = [];

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
    throw new Error(`pod ${pod}: volume ${v.name} (${v.hostPath}) cannot move: ${reasons.join('; ') || `no storage tier for it (tiers: ${known})`}`);
  });
}
