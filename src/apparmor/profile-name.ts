import { createHash } from 'node:crypto';

/**
 * Prefix of every profile that Sigil generates. The agent replaces and removes only loaded
 * profiles whose name starts with it, so it never touches a profile that it did not create.
 */
export const PROFILE_PREFIX = 'sigil.';

/**
 * Maximum profile name length. AppArmor limits child profile names to 974 characters; Sigil
 * stays well below so that the name also fits a file name (255 bytes on ext4).
 */
export const MAX_PROFILE_NAME_LENGTH = 200;

const HASH_LENGTH = 12;

/**
 * Derives a profile name from a SPIFFE ID: the prefix, the trust domain and the path segments
 * joined by `.`. Characters outside `[A-Za-z0-9._-]` become `_`. The SPIFFE ID grammar allows
 * none of them, so this only guards the caller. Such a name cannot start with `:`, `&` or `.`
 * and has no `/`, which AppArmor reads as a namespace, a stack or a child profile.
 */
export function baseProfileName(spiffeId: string): string {
  const withoutScheme = spiffeId.replace(/^spiffe:\/\//, '');
  const body = withoutScheme
    .split('/')
    .join('.')
    .replace(/[^A-Za-z0-9._-]/g, '_');
  const name = `${PROFILE_PREFIX}${body}`;
  if (name.length <= MAX_PROFILE_NAME_LENGTH) return name;
  return `${name.slice(0, MAX_PROFILE_NAME_LENGTH - HASH_LENGTH - 1)}-${idHash(spiffeId)}`;
}

function idHash(spiffeId: string): string {
  return createHash('sha256').update(spiffeId).digest('hex').slice(0, HASH_LENGTH);
}

/**
 * Assigns a profile name to each SPIFFE ID. Two IDs whose base names are equal (such as
 * `/a/b` and `/a.b`) both get a suffix from the SHA-256 of their ID, so a name never depends on
 * which other IDs are in the set except for such a collision. Throws `Error` when names still
 * collide, which needs a SHA-256 prefix collision.
 */
export function assignProfileNames(spiffeIds: readonly string[]): Map<string, string> {
  const byBase = new Map<string, string[]>();
  for (const spiffeId of spiffeIds) {
    const base = baseProfileName(spiffeId);
    byBase.set(base, [...(byBase.get(base) ?? []), spiffeId]);
  }
  const names = new Map<string, string>();
  const owners = new Map<string, string>();
  for (const [base, ids] of byBase) {
    for (const spiffeId of ids) {
      const name =
        ids.length === 1
          ? base
          : `${base.slice(0, MAX_PROFILE_NAME_LENGTH - HASH_LENGTH - 1)}-${idHash(spiffeId)}`;
      const owner = owners.get(name);
      if (owner !== undefined && owner !== spiffeId) {
        throw new Error(
          `SPIFFE IDs ${owner} and ${spiffeId} map to the same AppArmor profile name ${name}`,
        );
      }
      owners.set(name, spiffeId);
      names.set(spiffeId, name);
    }
  }
  return names;
}

/** Returns whether a loaded profile's name is one that Sigil generates. */
export function isSigilProfileName(name: string): boolean {
  return name.startsWith(PROFILE_PREFIX);
}
