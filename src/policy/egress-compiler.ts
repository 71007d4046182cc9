/**
 * Incremental compilation of egress rules. An EgressCompiler keeps the results of its last
 * compilation. The next policy set may differ from the last one only inside some policies: the
 * same policies in the same order, each with the same subject and number of egress rules, and
 * the same identities. Then the compiler compiles again only the subjects those policies select.
 * Other changes compile the whole set. Either way it returns the map entries that changed since
 * the previous compilation, for Datapath.applyRuleSetChanges.
 */
import {
  CompileContext,
  compileEgress,
  CompiledGroup,
  compileGroup,
  EgressCompilationState,
  indexPolicyRules,
  KnownIdentity,
  ruleRef,
} from './compile';
import {
  CidrRuleEntry,
  CompiledRuleSet,
  CompiledRuleSetChanges,
  KernelRule,
  PeerRuleLists,
  RuleRef,
} from './compiled-rule-set';
import { RuleListOverflow, RuleListOverflowError } from './rule-list-overflow-error';
import { Policy, PolicySet } from './types';

/** A compiled rule set and what changed since the compiler's previous one. */
export interface EgressCompilation {
  /**
   * The whole rule set. Its `subjects` and `peerRules` maps belong to the compiler, which
   * changes them in place on the next incremental compile (the entries of the subjects it
   * compiles again move to the end of the map's order). `rules` and `cidrRules` are new arrays
   * for every compile.
   */
  compiled: CompiledRuleSet;
  /**
   * The changes from the previous compilation's rule set, or null for the first compilation
   * (and the first after reset()).
   */
  changes: CompiledRuleSetChanges | null;
  /** True when only the subjects of changed policies were compiled, false for a whole compile. */
  incremental: boolean;
}

interface CompilerState extends EgressCompilationState {
  policies: readonly Policy[];
  /** The identities as given, to tell whether the next compile gets the same. */
  identities: KnownIdentity[];
  /** Index of the first egress rule of each policy in the rule table. */
  firstRuleIndex: number[];
  /** Subjects that each policy selects. */
  subjectsByPolicy: number[][];
}

/**
 * Compiles policy sets one after another, each time from the previous result where it can. Not
 * safe for concurrent use. When the compiled set could not be applied, call reset() so that the
 * next compile is whole again.
 */
export class EgressCompiler {
  private state: CompilerState | null = null;

  /**
   * Compiles a policy set like compilePolicySet and returns the changes from the previous
   * compile where they are known. Throws like compilePolicySet, and then keeps its previous
   * state.
   */
  compile(set: PolicySet, identities: ReadonlyArray<KnownIdentity>): EgressCompilation {
    const changed = this.state ? changedPolicies(this.state, set, identities) : null;
    if (changed === null) return this.compileWhole(set, identities);
    return this.compileChanges(set, changed);
  }

  /** Forgets the previous compilation, so that the next compile is whole. */
  reset(): void {
    this.state = null;
  }

  private compileWhole(
    set: PolicySet,
    identities: ReadonlyArray<KnownIdentity>,
  ): EgressCompilation {
    const whole = compileEgress(set, identities, this.state ?? undefined);
    const previous = this.state;
    const changes = previous ? diffWhole(previous, whole) : null;
    const firstRuleIndex: number[] = [];
    let next = 0;
    for (const policy of set.policies) {
      firstRuleIndex.push(next);
      next += policy.egress.length;
    }
    const subjectsByPolicy: number[][] = set.policies.map(() => []);
    for (const [subject, policyIndexes] of whole.policiesBySubject) {
      for (const index of policyIndexes) subjectsByPolicy[index].push(subject);
    }
    this.state = {
      ...whole,
      policies: set.policies.slice(),
      identities: identities.map(({ id, spiffeId }) => ({ id, spiffeId })),
      firstRuleIndex,
      subjectsByPolicy,
    };
    return { compiled: whole.compiled, changes, incremental: false };
  }

  /** Compiles again the subjects of the changed policies and returns the entries that changed. */
  private compileChanges(set: PolicySet, changed: readonly number[]): EgressCompilation {
    const state = this.state!;
    const { context, rules } = reindexPolicies(state, set.policies, changed);

    // Compile the groups of the affected subjects; nothing is committed until all fit.
    const affected = new Set<number>();
    for (const policyIndex of changed) {
      for (const subject of state.subjectsByPolicy[policyIndex]) affected.add(subject);
    }
    const subjects = [...affected].sort((a, b) => a - b);
    const groups = new Map<string, CompiledGroup>();
    const newGroups = new Map<number, CompiledGroup>();
    const overflows: RuleListOverflow[] = [];
    for (const subject of subjects) {
      const policyIndexes = state.policiesBySubject.get(subject)!;
      const key = policyIndexes.join(',');
      let group = groups.get(key);
      if (!group) {
        group = compileGroup(policyIndexes, set.policies, context);
        groups.set(key, group);
      }
      newGroups.set(subject, group);
      for (const overflow of group.overflows) {
        const subjectSpiffeId = context.spiffeIdOf.get(subject) ?? '';
        overflows.push({ subject, subjectSpiffeId, ...overflow });
      }
    }
    if (overflows.length > 0) throw new RuleListOverflowError(overflows);

    const changes = noChanges();
    const compiled = state.compiled;
    const newCidrEntries = new Map<number, CidrRuleEntry[]>();
    for (const subject of subjects) {
      const before = state.subjectGroups.get(subject)!;
      const after = newGroups.get(subject)!;
      diffSettings(subject, before, after, changes);
      diffPeerLists(subject, before, after, changes);
      newCidrEntries.set(subject, diffPrefixLists(subject, before, after, changes));
      compiled.subjects.set(subject, { ...after.settings });
      compiled.peerRules.delete(subject);
      if (after.peerLists.peers.length > 0) compiled.peerRules.set(subject, after.peerLists);
      state.subjectGroups.set(subject, after);
    }

    state.context = context;
    state.policies = set.policies.slice();
    state.compiled = {
      subjects: compiled.subjects,
      peerRules: compiled.peerRules,
      cidrRules: replaceCidrEntries(compiled.cidrRules, newCidrEntries),
      rules,
    };
    return { compiled: state.compiled, changes, incremental: true };
  }
}

function noChanges(): CompiledRuleSetChanges {
  return {
    subjects: { upsert: [], remove: [] },
    peerRules: { upsert: [], remove: [] },
    cidrRules: { upsert: [], remove: [] },
  };
}

/**
 * Returns the changes from the previous whole or incremental compilation to a whole one, found
 * subject by subject: subjects of only one of the two get all their entries written or deleted.
 */
function diffWhole(
  previous: EgressCompilationState,
  next: EgressCompilationState,
): CompiledRuleSetChanges {
  const changes = noChanges();
  for (const [subject, after] of next.subjectGroups) {
    const before = previous.subjectGroups.get(subject);
    diffSettings(subject, before, after, changes);
    diffPeerLists(subject, before, after, changes);
    diffPrefixLists(subject, before, after, changes, false);
  }
  for (const [subject, before] of previous.subjectGroups) {
    if (next.subjectGroups.has(subject)) continue;
    diffSettings(subject, before, undefined, changes);
    diffPeerLists(subject, before, undefined, changes);
    diffPrefixLists(subject, before, undefined, changes, false);
  }
  return changes;
}

/**
 * Returns the indexes of the policies that differ from the previous compilation (a new but
 * equal policy object does not), or null when
 * the difference needs a whole compile: other identities, policies added, removed, renamed or
 * moved, or a changed subject or number of egress rules (which moves the rule indexes of every
 * later policy).
 */
function changedPolicies(
  state: CompilerState,
  set: PolicySet,
  identities: ReadonlyArray<KnownIdentity>,
): number[] | null {
  if (identities.length !== state.identities.length) return null;
  for (let i = 0; i < identities.length; i++) {
    const before = state.identities[i];
    if (identities[i].id !== before.id || identities[i].spiffeId !== before.spiffeId) return null;
  }
  const policies = set.policies;
  if (policies.length !== state.policies.length) return null;
  const changed: number[] = [];
  for (let i = 0; i < policies.length; i++) {
    const before = state.policies[i];
    const after = policies[i];
    if (after === before) continue;
    if (after.name !== before.name || after.egress.length !== before.egress.length) return null;
    if (!sameData(after.subjectSelector, before.subjectSelector)) return null;
    // A reload parses every file again, so an unchanged policy is often an equal new object.
    if (!sameData(before, after)) changed.push(i);
  }
  return changed;
}

/**
 * Returns whether two values of parsed policy data are equal, source positions included. Keys
 * named `addr` are skipped: they hold the address bytes of a CIDR, which its text determines.
 * Unlike a comparison of JSON texts, this returns at the first difference.
 */
function sameData(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameData(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const keys = Object.keys(x);
  if (keys.length !== Object.keys(y).length) return false;
  for (const key of keys) {
    if (key === 'addr') continue;
    if (!Object.prototype.hasOwnProperty.call(y, key) || !sameData(x[key], y[key])) return false;
  }
  return true;
}

/** Returns a context whose rule table has the changed policies' rules under the same indexes. */
function reindexPolicies(
  state: CompilerState,
  policies: readonly Policy[],
  changed: readonly number[],
): { context: CompileContext; rules: RuleRef[] } {
  const before = state.context;
  const rules = before.rules.slice();
  const indexedByPolicy = before.indexedByPolicy.slice();
  const indexedRules = before.indexedRules.slice();
  for (const policyIndex of changed) {
    const policy = policies[policyIndex];
    const indexed = indexPolicyRules(policy, state.firstRuleIndex[policyIndex]);
    indexedByPolicy[policyIndex] = indexed;
    for (const entry of indexed) {
      rules[entry.index] = ruleRef(policy, entry.rule);
      indexedRules[entry.index] = entry;
    }
  }
  return { context: { ...before, rules, indexedByPolicy, indexedRules }, rules };
}

const NO_PEER_LISTS: PeerRuleLists = { peers: new Uint32Array(0), lists: [] };

function sameRules(a: readonly KernelRule[], b: readonly KernelRule[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x === y) continue;
    if (
      x.portLo !== y.portLo ||
      x.portHi !== y.portHi ||
      x.protocol !== y.protocol ||
      x.action !== y.action ||
      x.ruleIndex !== y.ruleIndex
    ) {
      return false;
    }
  }
  return true;
}

function sameNumbers(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

/** Records the subject's settings entry when it is new, gone, or changed in what the kernel reads. */
function diffSettings(
  subject: number,
  before: CompiledGroup | undefined,
  after: CompiledGroup | undefined,
  changes: CompiledRuleSetChanges,
): void {
  if (!after) {
    changes.subjects.remove.push(subject);
    return;
  }
  // The kernel value has no wouldBlock bit: only a flag or posture change reaches the maps.
  const same =
    before !== undefined &&
    before.settings.hasEgressAllow === after.settings.hasEgressAllow &&
    before.settings.egressPosture === after.settings.egressPosture &&
    before.settings.hasPeerRules === after.settings.hasPeerRules &&
    sameNumbers(before.settings.cidrPrefixLengths, after.settings.cidrPrefixLengths);
  if (!same) changes.subjects.upsert.push([subject, { ...after.settings }]);
}

/** Walks both peer lists in peer order and records the entries that differ. */
function diffPeerLists(
  subject: number,
  before: CompiledGroup | undefined,
  after: CompiledGroup | undefined,
  changes: CompiledRuleSetChanges,
): void {
  const old = before?.peerLists ?? NO_PEER_LISTS;
  const now = after?.peerLists ?? NO_PEER_LISTS;
  if (old === now) return;
  let i = 0;
  let j = 0;
  while (i < old.peers.length || j < now.peers.length) {
    const oldPeer = i < old.peers.length ? old.peers[i] : Infinity;
    const newPeer = j < now.peers.length ? now.peers[j] : Infinity;
    if (oldPeer < newPeer) {
      changes.peerRules.remove.push({ subject, peer: oldPeer });
      i++;
      continue;
    }
    if (newPeer < oldPeer || !sameRules(old.lists[i], now.lists[j])) {
      changes.peerRules.upsert.push({ subject, peer: newPeer, rules: now.lists[j] });
    }
    if (newPeer === oldPeer) i++;
    j++;
  }
}

/**
 * Walks both prefix lists in (address, length) order, records the entries that differ, and
 * returns the subject's new CIDR entries (only the changed ones when `returnAll` is false).
 */
function diffPrefixLists(
  subject: number,
  before: CompiledGroup | undefined,
  after: CompiledGroup | undefined,
  changes: CompiledRuleSetChanges,
  returnAll = true,
): CidrRuleEntry[] {
  const old = before?.prefixLists ?? [];
  const now = after?.prefixLists ?? [];
  const entries: CidrRuleEntry[] = [];
  const entryOf = (list: (typeof now)[number]): CidrRuleEntry => ({
    subject,
    prefixLen: list.prefixLen,
    addr: Buffer.from(list.addr),
    rules: list.rules,
  });
  let i = 0;
  let j = 0;
  while (i < old.length || j < now.length) {
    let order: number;
    if (i >= old.length) order = 1;
    else if (j >= now.length) order = -1;
    else {
      order = Buffer.compare(old[i].addr, now[j].addr) || old[i].prefixLen - now[j].prefixLen;
    }
    if (order < 0) {
      const { addr, prefixLen } = old[i];
      changes.cidrRules.remove.push({ subject, prefixLen, addr });
      i++;
      continue;
    }
    const changed = order > 0 || !sameRules(old[i].rules, now[j].rules);
    if (changed || returnAll) {
      const entry = entryOf(now[j]);
      entries.push(entry);
      if (changed) changes.cidrRules.upsert.push(entry);
    }
    if (order === 0) i++;
    j++;
  }
  return entries;
}

/** Returns the CIDR entries with those of the given subjects replaced, sorted by subject. */
function replaceCidrEntries(
  entries: readonly CidrRuleEntry[],
  replacements: ReadonlyMap<number, CidrRuleEntry[]>,
): CidrRuleEntry[] {
  const result: CidrRuleEntry[] = [];
  const pending = [...replacements.keys()].sort((a, b) => a - b);
  let next = 0;
  for (const entry of entries) {
    while (next < pending.length && pending[next] <= entry.subject) {
      result.push(...replacements.get(pending[next])!);
      next++;
    }
    if (!replacements.has(entry.subject)) result.push(entry);
  }
  while (next < pending.length) result.push(...replacements.get(pending[next++])!);
  return result;
}
