/**
 * Bus identities: one NKey per component, seeds on disk readable by root only, public keys and
 * per-identity permissions in the server's config. No password ever exists, in a file or a variable.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createUser, fromSeed } from '@nats-io/nkeys';

export interface Permissions {
  publish: string[];
  subscribe: string[];
  /** May reply to requests it received (without a publish grant on others' inboxes). */
  allowResponses?: boolean;
}

/** A restricted identity's own inbox prefix: it can read replies meant for it and no one else's. */
export function inboxPrefixOf(identity: string): string {
  return `_INBOX_${identity}`;
}

/** A named identity; `permissions` undefined means unrestricted (the operator/admin identity). */
export interface IdentitySpec {
  name: string;
  permissions?: Permissions;
}

export interface Identity extends IdentitySpec {
  publicKey: string;
  seedFile: string;
}

/** Creates (or reuses) the seed file of each identity under `dir` (mode 0700, seeds 0600). */
export async function ensureIdentities(dir: string, specs: readonly IdentitySpec[]): Promise<Identity[]> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const out: Identity[] = [];
  for (const spec of specs) {
    const seedFile = path.join(dir, `${spec.name}.nk`);
    let seed: Uint8Array;
    try {
      seed = new TextEncoder().encode((await readFile(seedFile, 'utf8')).trim());
    } catch {
      seed = createUser().getSeed();
      await writeFile(seedFile, new TextDecoder().decode(seed) + '\n', { mode: 0o600 });
    }
    out.push({ ...spec, seedFile, publicKey: fromSeed(seed).getPublicKey() });
  }
  return out;
}

/** Reads a seed file for the NATS nkey authenticator. */
export async function readSeed(seedFile: string): Promise<Uint8Array> {
  return new TextEncoder().encode((await readFile(seedFile, 'utf8')).trim());
}
