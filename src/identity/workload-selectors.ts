/**
 * The selectors of a running process, in the text forms and order that SPIRE's `unix` workload
 * attestor emits (pkg/agent/plugin/workloadattestor/unix/unix_posix.go in spiffe/spire), plus
 * Sigil's `cgroup:path:<path>`.
 */

import { AccountDatabase } from './account-database';
import { ExecutableHasher } from './executable-hasher';
import { ProcessInfo } from './process-info';
import { Selector } from './selector';

/** Selectors that are costly to compute, each computed only when its flag is set. */
export interface SelectorNeeds {
  /** Whether to hash the executable for `unix:sha256`. */
  sha256: boolean;
}

/** Returns the selectors that the given entries need computed: sha256 only if one uses it. */
export function selectorNeedsOf(
  entries: readonly { selectors: readonly Selector[] }[],
): SelectorNeeds {
  const sha256 = entries.some((entry) =>
    entry.selectors.some((selector) => selector.text.startsWith('unix:sha256:')),
  );
  return { sha256 };
}

let defaultAccounts: AccountDatabase | undefined;

/**
 * Collects the selectors of a process, in this order: `unix:uid`, `unix:user`, `unix:gid`,
 * `unix:group`, then `unix:supplementary_gid` and `unix:supplementary_group` for each group,
 * then `unix:path`, `unix:sha256` and `cgroup:path`. Names appear only when the account database
 * has them.
 *
 * `unix:path` is left out when the executable was deleted, because the file now at that path
 * (if any) is not the one running. `unix:sha256` is computed only when `needs.sha256` is set,
 * and is missing when the hasher returns null (for example, when the file is over its size
 * limit). The hasher reads /proc/<pid>/exe, so callers must check afterwards that the pid still
 * has the same start time.
 */
export async function collectSelectors(
  info: ProcessInfo,
  needs: SelectorNeeds,
  hasher: ExecutableHasher,
  accounts: AccountDatabase = (defaultAccounts ??= new AccountDatabase()),
): Promise<string[]> {
  const selectors: string[] = [];

  selectors.push(`unix:uid:${info.uid}`);
  const userName = accounts.userName(info.uid);
  if (userName !== null) {
    selectors.push(`unix:user:${userName}`);
  }

  selectors.push(`unix:gid:${info.gid}`);
  const groupName = accounts.groupName(info.gid);
  if (groupName !== null) {
    selectors.push(`unix:group:${groupName}`);
  }

  for (const gid of new Set(info.supplementaryGids)) {
    selectors.push(`unix:supplementary_gid:${gid}`);
    const name = accounts.groupName(gid);
    if (name !== null) {
      selectors.push(`unix:supplementary_group:${name}`);
    }
  }

  if (info.exePath !== null && !info.deleted) {
    selectors.push(`unix:path:${info.exePath}`);
  }
  if (needs.sha256 && info.exePath !== null) {
    const digest = await hasher.hashExecutable(info.pid);
    if (digest !== null) {
      selectors.push(`unix:sha256:${digest}`);
    }
  }

  if (info.cgroupPath !== null) {
    selectors.push(`cgroup:path:${info.cgroupPath}`);
  }
  return selectors;
}
