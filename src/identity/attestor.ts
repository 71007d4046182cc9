/**
 * Attestation of local processes against a registration file.
 *
 * An entry matches a process when every selector of the entry is among the process's selectors,
 * as in SPIRE. Where SPIRE issues an SVID for every matching entry, Sigil's kernel map stores one
 * SPIFFE ID per process, so the first matching entry in file order wins.
 */

import { AccountDatabase } from './account-database';
import { ExecutableHasher } from './executable-hasher';
import { ProcessInfo, readProcessInfo, readStartTime } from './process-info';
import { Registration } from './registration';
import { collectSelectors, SelectorNeeds, selectorNeedsOf } from './workload-selectors';

export interface RegistrationAttestorOptions {
  /** Root of procfs; defaults to /proc. */
  procRoot?: string;
  /** Mount point of the cgroup2 file system; when set, results carry the cgroup id. */
  cgroup2Mount?: string;
  /** Defaults to a hasher without a size limit that reads through `procRoot`. */
  hasher?: ExecutableHasher;
  /** Defaults to a database reading /etc/passwd and /etc/group. */
  accounts?: AccountDatabase;
}

export interface AttestOptions {
  /**
   * Start time in clock ticks that the caller saw for this pid, for example in an exec event.
   * When /proc reports another start time, the pid belongs to a new process and attest()
   * returns null.
   */
  expectedStartTime?: bigint;
}

/** The outcome of attesting one process. */
export interface AttestationResult {
  pid: number;
  /** SPIFFE ID of the first matching entry, or null when no entry matches. */
  spiffeId: string | null;
  /** Index of that entry in `Registration.entries`, or null. */
  entryIndex: number | null;
  /** Every selector of the process, in the order `collectSelectors` produces them. */
  selectors: string[];
  info: ProcessInfo;
}

/** Matches processes against the entries of one registration. */
export class RegistrationAttestor {
  private readonly procRoot: string | undefined;
  private readonly cgroup2Mount: string | undefined;
  private readonly hasher: ExecutableHasher;
  private readonly accounts: AccountDatabase;
  private readonly needs: SelectorNeeds;
  private readonly entrySelectors: string[][];

  constructor(
    private readonly registration: Registration,
    options: RegistrationAttestorOptions = {},
  ) {
    this.procRoot = options.procRoot;
    this.cgroup2Mount = options.cgroup2Mount;
    this.hasher = options.hasher ?? new ExecutableHasher({ procRoot: options.procRoot });
    this.accounts = options.accounts ?? new AccountDatabase();
    this.needs = selectorNeedsOf(registration.entries);
    this.entrySelectors = registration.entries.map((entry, index) => {
      // An empty selector set is a subset of every process's selectors, so it would match all.
      if (entry.selectors.length === 0) {
        throw new RangeError(`registration entry ${index} (${entry.spiffeId}) has no selectors`);
      }
      return entry.selectors.map((selector) => selector.text);
    });
  }

  /**
   * Attests a process. Returns null when the process does not exist, exits during attestation,
   * or its start time differs from `expectedStartTime`. A result with a null `spiffeId` means
   * that the process exists but no entry matches it.
   *
   * The result describes the process at the time of the call. An exec keeps the pid and start
   * time but changes the executable, so callers attest again after each exec.
   */
  async attest(pid: number, options: AttestOptions = {}): Promise<AttestationResult | null> {
    const info = readProcessInfo(pid, { procRoot: this.procRoot, cgroup2Mount: this.cgroup2Mount });
    if (info === null) {
      return null;
    }
    if (
      options.expectedStartTime !== undefined &&
      info.startTimeTicks !== options.expectedStartTime
    ) {
      return null;
    }

    const selectors = await collectSelectors(info, this.needs, this.hasher, this.accounts);
    // Hashing opened /proc/<pid>/exe after readProcessInfo() returned, so make sure that the
    // pid still belongs to the same process.
    if (readStartTime(pid, this.procRoot) !== info.startTimeTicks) {
      return null;
    }

    const entryIndex = this.findMatchingEntry(new Set(selectors));
    return {
      pid,
      spiffeId: entryIndex === null ? null : this.registration.entries[entryIndex].spiffeId,
      entryIndex,
      selectors,
      info,
    };
  }

  private findMatchingEntry(processSelectors: Set<string>): number | null {
    const index = this.entrySelectors.findIndex((selectors) =>
      selectors.every((selector) => processSelectors.has(selector)),
    );
    return index < 0 ? null : index;
  }
}
