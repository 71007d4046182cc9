import { ADDRESS_BYTES, formatPrefix, prefixContains } from './cidr';
import {
  CidrRuleEntry,
  CompiledRuleSet,
  KernelAction,
  KernelProtocol,
  KernelRule,
  PeerRuleLists,
  RuleRef,
  RULES_PER_KEY,
  SubjectSettings,
} from './compiled-rule-set';
import { combinePostures, effectiveAction } from './actions';
import { mergePortRanges } from './ports';
import { RuleListOverflow, RuleListOverflowError } from './rule-list-overflow-error';
import { canonicalSpiffeId, selectorMatches } from './spiffe-selector';
import {
  EgressRule,
  Policy,
  PolicyMode,
  PolicySet,
  PortRange,
  RuleAction,
  RuleProtocol,
  SpiffeSelector,
  SubjectSelector,
} from './types';

/** A known SPIFFE ID and the identity id that the kernel maps use for it. */
export interface KnownIdentity {
  id: number;
  spiffeId: string;
}

const KERNEL_ACTIONS: Record<RuleAction, KernelAction> = { Allow: 1, Audit: 2, Block: 3 };
const KERNEL_PROTOCOLS: Record<RuleProtocol, KernelProtocol> = { Any: 0, TCP: 6, UDP: 17 };
const MAX_IDENTITY_ID = 0xffffffff;
/** Identity id of processes without a SPIFFE ID, which the kernel looks up like any other. */
const UNIDENTIFIED_ID = 0;
const UNIDENTIFIED_IDS: readonly number[] = [UNIDENTIFIED_ID];
const EVERY_ADDRESS = Buffer.alloc(ADDRESS_BYTES);
const NO_IDS: readonly number[] = [];
const NO_RULES: readonly KernelRule[] = Object.freeze([]);
const EVERY_PORT: readonly PortRange[] = [{ lo: 0, hi: 65535 }];

/** A policy rule with its index in the rule table and its kernel entries. */
export interface IndexedRule {
  index: number;
  rule: EgressRule;
  entries: readonly KernelRule[];
}

/** Rules of one prefix of one subject group, before and after ancestor merging. */
interface PrefixRules {
  addr: Buffer;
  prefixLen: number;
  /** Indexes of rules that name this prefix, ascending. */
  own: number[];
  /** Indexes of rules of this prefix and of every containing prefix, ascending. */
  merged: readonly number[];
}

/** Facts about the whole set that compiling a group of policies needs. */
export interface CompileContext {
  rules: readonly RuleRef[];
  indexedByPolicy: readonly (readonly IndexedRule[])[];
  /** Every rule, indexed by rule index. */
  indexedRules: readonly IndexedRule[];
  resolver: SelectorResolver;
  spiffeIdOf: ReadonlyMap<number, string>;
}

/** An overflow before the subject is filled in, found once for a whole group. */
export type GroupOverflow = Omit<RuleListOverflow, 'subject' | 'subjectSpiffeId'>;

/** Kernel lists shared by every subject that the same policies apply to. */
export interface CompiledGroup {
  settings: SubjectSettings;
  /** Peers whose list overflows are left out and reported in `overflows`. */
  peerLists: PeerRuleLists;
  /** Sorted by address, then prefix length. Overflowing lists are left out as well. */
  prefixLists: { addr: Buffer; prefixLen: number; rules: readonly KernelRule[] }[];
  overflows: GroupOverflow[];
}

/**
 * Frozen rule lists built by appending the entries of rules in ascending index order. Appending
 * the same rule to the same list returns the same list, so the peers that the same rules name
 * share one list array instead of one copy each.
 */
class RuleListInterner {
  /** Number of each list that has been extended, which keys its extensions. */
  private readonly numbers = new Map<readonly KernelRule[], number>([[NO_RULES, 0]]);
  /** Extensions keyed by list number * 2^32 + rule index, which stays below 2^53. */
  private readonly extensions = new Map<number, readonly KernelRule[]>();

  /** Returns list with the entries of one more rule, whose index is above every index in it. */
  append(list: readonly KernelRule[], indexed: IndexedRule): readonly KernelRule[] {
    let listNumber = this.numbers.get(list);
    if (listNumber === undefined) {
      listNumber = this.numbers.size;
      this.numbers.set(list, listNumber);
    }
    const key = listNumber * 0x1_0000_0000 + indexed.index;
    let next = this.extensions.get(key);
    if (!next) {
      next = Object.freeze(list.concat(indexed.entries));
      this.extensions.set(key, next);
    }
    return next;
  }
}

/**
 * Compiles the egress rules of a policy set into the contents of the kernel's subject,
 * peer-rule and CIDR-rule maps for the given identities (ids >= 1). Subjects and peers given by
 * prefix or trust domain resolve to every known identity they match, and an `unidentified`
 * subject compiles to subject id 0, the id of processes without a SPIFFE ID. Selectors that
 * match no known identity compile to nothing, but their Allow rules still set `hasEgressAllow`
 * for the subject. Ingress, process and file rules are not compiled: no kernel program applies
 * them.
 *
 * Posture: each policy contributes its `egressPosture` (Block when the file gives none), and a
 * subject gets Audit only when every policy that applies to it sets Audit.
 *
 * Audit mode: the Block rules and Block postures of a policy in Audit mode compile to Audit.
 * Their `RuleRef` has `wouldBlock`, and a subject whose posture is Audit only for that reason
 * has `egressPostureWouldBlock`.
 *
 * Tie-break contract: lists are sorted by ruleIndex, and the rule table is in (policy, rule)
 * order. To name the rule that `decideConnect` names, the kernel must report the matching rule
 * with the strongest action and, among those, the lowest ruleIndex across the peer list and the
 * CIDR list. `sigil_scan_rules` in bpf/include/egress.bpf.h does so.
 *
 * Throws `RuleListOverflowError` listing every key whose list would exceed `RULES_PER_KEY`
 * entries, and `Error` for invalid or duplicate identities.
 */
export function compilePolicySet(
  set: PolicySet,
  identities: ReadonlyArray<KnownIdentity>,
): CompiledRuleSet {
  return compileEgress(set, identities).compiled;
}

/** A whole compilation with the intermediate results that an incremental compile reuses. */
export interface EgressCompilationState {
  compiled: CompiledRuleSet;
  /** The identities, validated and canonical, sorted by id. */
  known: KnownIdentity[];
  context: CompileContext;
  /** Indexes of the policies that select each subject, ascending. */
  policiesBySubject: Map<number, number[]>;
  /** The group of each subject. */
  subjectGroups: Map<number, CompiledGroup>;
}

/** The policies of an earlier compilation and its rule table, which a later one can reuse. */
export interface EarlierCompilation {
  policies: readonly Policy[];
  context: CompileContext;
}

/**
 * Compiles like compilePolicySet and also returns the intermediate results. Where `earlier` has
 * the same policy object with the same first rule index, its rule table entries are reused, so
 * equal rules are the same KernelRule objects in both compilations.
 */
export function compileEgress(
  set: PolicySet,
  identities: ReadonlyArray<KnownIdentity>,
  earlier?: EarlierCompilation,
): EgressCompilationState {
  const known = checkIdentities(identities);
  const spiffeIdOf = new Map(known.map((identity) => [identity.id, identity.spiffeId]));
  const resolver = new SelectorResolver(known);
  const { rules, indexedByPolicy } = buildRuleTable(set.policies, earlier);

  const context: CompileContext = {
    rules,
    indexedByPolicy,
    indexedRules: indexedByPolicy.flat(),
    resolver,
    spiffeIdOf,
  };

  const policiesBySubject = new Map<number, number[]>();
  set.policies.forEach((policy, policyIndex) => {
    for (const subject of resolver.resolveSubject(policy.subjectSelector)) {
      const policyIndexes = policiesBySubject.get(subject) ?? [];
      policyIndexes.push(policyIndex);
      policiesBySubject.set(subject, policyIndexes);
    }
  });

  // Subjects that the same policies apply to get the same lists, so each distinct list of
  // policies is compiled once.
  const groups = new Map<string, CompiledGroup>();
  const subjectGroups: [number, CompiledGroup][] = [];
  const overflows: RuleListOverflow[] = [];
  for (const subject of Uint32Array.from(policiesBySubject.keys()).sort()) {
    const policyIndexes = policiesBySubject.get(subject)!;
    const groupKey = policyIndexes.join(',');
    let group = groups.get(groupKey);
    if (!group) {
      group = compileGroup(policyIndexes, set.policies, context);
      groups.set(groupKey, group);
    }
    subjectGroups.push([subject, group]);
    for (const overflow of group.overflows) {
      // Subject 0 has no SPIFFE ID, so its overflows name an empty one.
      overflows.push({ subject, subjectSpiffeId: spiffeIdOf.get(subject) ?? '', ...overflow });
    }
  }
  if (overflows.length > 0) throw new RuleListOverflowError(overflows);
  return {
    compiled: emitRuleSet(subjectGroups, rules),
    known,
    context,
    policiesBySubject,
    subjectGroups: new Map(subjectGroups),
  };
}

/**
 * Writes every subject's entries in key order. Subjects of one group share its rule lists, which
 * are frozen; each CIDR entry gets its own address bytes.
 */
function emitRuleSet(
  subjectGroups: readonly [number, CompiledGroup][],
  rules: RuleRef[],
): CompiledRuleSet {
  const subjects = new Map<number, SubjectSettings>();
  const peerRules = new Map<number, PeerRuleLists>();
  const cidrRules: CidrRuleEntry[] = [];

  // One buffer stores the addresses of all CIDR entries, which saves an allocation per entry.
  let cidrCount = 0;
  for (const [, group] of subjectGroups) cidrCount += group.prefixLists.length;
  const addrPool = Buffer.alloc(cidrCount * ADDRESS_BYTES);

  for (const [subject, group] of subjectGroups) {
    subjects.set(subject, { ...group.settings });
    if (group.peerLists.peers.length > 0) peerRules.set(subject, group.peerLists);
    for (const { addr, prefixLen, rules: list } of group.prefixLists) {
      const offset = cidrRules.length * ADDRESS_BYTES;
      addr.copy(addrPool, offset);
      cidrRules.push({
        subject,
        prefixLen,
        addr: addrPool.subarray(offset, offset + ADDRESS_BYTES),
        rules: list,
      });
    }
  }
  return { subjects, peerRules, cidrRules, rules };
}

/** Validates the identities and returns them with canonical SPIFFE IDs, sorted by id. */
export function checkIdentities(identities: ReadonlyArray<KnownIdentity>): KnownIdentity[] {
  const problems: string[] = [];
  const byId = new Map<number, string>();
  const bySpiffeId = new Map<string, number>();
  for (const { id, spiffeId } of identities) {
    if (!Number.isInteger(id) || id < 1 || id > MAX_IDENTITY_ID) {
      problems.push(
        `identity id ${id} of ${spiffeId} is not an integer from 1 to ${MAX_IDENTITY_ID}`,
      );
      continue;
    }
    let canonical: string;
    try {
      canonical = canonicalSpiffeId(spiffeId);
    } catch (error) {
      problems.push(`identity id ${id}: ${(error as Error).message}`);
      continue;
    }
    if (byId.has(id)) {
      problems.push(`identity id ${id} is given for both ${byId.get(id)} and ${canonical}`);
      continue;
    }
    if (bySpiffeId.has(canonical)) {
      problems.push(
        `${canonical} is given two identity ids, ${bySpiffeId.get(canonical)} and ${id}`,
      );
      continue;
    }
    byId.set(id, canonical);
    bySpiffeId.set(canonical, id);
  }
  if (problems.length > 0) {
    throw new Error(`invalid identities for policy compilation:\n${problems.join('\n')}`);
  }
  return [...byId].sort((a, b) => a[0] - b[0]).map(([id, spiffeId]) => ({ id, spiffeId }));
}

/** Resolves SPIFFE ID selectors to the ids of known identities, caching each prefix. */
class SelectorResolver {
  /** Result for each known SPIFFE ID, a list of its one id. */
  private readonly byId: Map<string, readonly number[]>;
  private readonly byPrefix = new Map<string, readonly number[]>();

  constructor(private readonly known: readonly KnownIdentity[]) {
    this.byId = new Map(known.map((identity) => [identity.spiffeId, [identity.id]]));
  }

  /** Returns the matching identity ids in ascending order; `unidentified` is id 0. */
  resolveSubject(selector: SubjectSelector): readonly number[] {
    if (selector.kind === 'unidentified') return UNIDENTIFIED_IDS;
    if (selector.kind === 'trustDomain') {
      // A prefix of only the trust domain matches every ID in it.
      return this.resolve({
        kind: 'spiffeIdPrefix',
        spiffeIdPrefix: `spiffe://${selector.trustDomain}`,
      });
    }
    return this.resolve(selector);
  }

  /** Returns the matching identity ids in ascending order. */
  resolve(selector: SpiffeSelector): readonly number[] {
    if (selector.kind === 'spiffeId') return this.byId.get(selector.spiffeId) ?? NO_IDS;
    let ids = this.byPrefix.get(selector.spiffeIdPrefix);
    if (!ids) {
      ids = this.known
        .filter((identity) => selectorMatches(selector, identity.spiffeId))
        .map((identity) => identity.id);
      this.byPrefix.set(selector.spiffeIdPrefix, ids);
    }
    return ids;
  }
}

/** Numbers every rule in (policy, rule) order and builds its kernel entries. */
function buildRuleTable(
  policies: readonly Policy[],
  earlier?: EarlierCompilation,
): {
  rules: RuleRef[];
  indexedByPolicy: (readonly IndexedRule[])[];
} {
  const rules: RuleRef[] = [];
  const indexedByPolicy = policies.map((policy, policyIndex) => {
    const reused =
      earlier?.policies[policyIndex] === policy
        ? earlier.context.indexedByPolicy[policyIndex]
        : undefined;
    if (reused && (reused.length === 0 || reused[0].index === rules.length)) {
      for (const { index } of reused) rules.push(earlier!.context.rules[index]);
      return reused;
    }
    const indexed = indexPolicyRules(policy, rules.length);
    for (const { rule } of indexed) rules.push(ruleRef(policy, rule));
    return indexed;
  });
  return { rules, indexedByPolicy };
}

/** Numbers the egress rules of one policy from firstIndex and builds their kernel entries. */
export function indexPolicyRules(policy: Policy, firstIndex: number): IndexedRule[] {
  return policy.egress.map((rule, offset) => {
    const index = firstIndex + offset;
    return { index, rule, entries: kernelEntries(rule, policy.mode, index) };
  });
}

/** Returns the rule table entry of a rule, with the optional fields only when they are set. */
export function ruleRef(policy: Policy, rule: EgressRule): RuleRef {
  const ref: RuleRef = {
    policy: policy.name,
    rule: rule.name,
    action: rule.action,
    file: rule.position.file,
    line: rule.position.line,
  };
  if (rule.severity !== undefined) ref.severity = rule.severity;
  if (rule.tags.length > 0) ref.tags = rule.tags;
  if (rule.message !== undefined) ref.message = rule.message;
  if (effectiveAction(rule.action, policy.mode) !== rule.action) ref.wouldBlock = true;
  return ref;
}

/** Returns one frozen kernel rule per merged port range of the rule. */
function kernelEntries(
  rule: EgressRule,
  mode: PolicyMode,
  ruleIndex: number,
): readonly KernelRule[] {
  let ranges: readonly PortRange[];
  if (rule.ports === null) ranges = EVERY_PORT;
  else if (rule.ports.length === 1) ranges = rule.ports;
  else ranges = mergePortRanges(rule.ports);
  const action = KERNEL_ACTIONS[effectiveAction(rule.action, mode)];
  return ranges.map((range) =>
    Object.freeze({
      portLo: range.lo,
      portHi: range.hi,
      protocol: KERNEL_PROTOCOLS[rule.protocol],
      action,
      ruleIndex,
    }),
  );
}

/**
 * Builds the settings, peer lists and ancestor-merged CIDR lists for the subjects that exactly
 * the policies at `policyIndexes` apply to, and checks every list against `RULES_PER_KEY`.
 */
export function compileGroup(
  policyIndexes: readonly number[],
  allPolicies: readonly Policy[],
  context: CompileContext,
): CompiledGroup {
  const policies = policyIndexes.map((index) => allPolicies[index]);
  const posture = combinePostures(policies, 'egress');
  const settings: SubjectSettings = {
    hasEgressAllow: policies.some((policy) =>
      policy.egress.some((rule) => rule.action === 'Allow'),
    ),
    egressPosture: posture.posture,
    hasPeerRules: false,
    cidrPrefixLengths: [],
  };
  if (posture.wouldBlock) settings.egressPostureWouldBlock = true;

  // Policies and their rules are visited in rule-table order, so every list stays sorted.
  const interner = new RuleListInterner();
  const peerLists = new Map<number, readonly KernelRule[]>();
  const prefixes: PrefixRules[] = [];
  const addPrefix = (addr: Buffer, prefixLen: number, index: number): void => {
    prefixes.push({ addr, prefixLen, own: [index], merged: NO_IDS });
  };
  for (const policyIndex of policyIndexes) {
    for (const indexed of context.indexedByPolicy[policyIndex]) {
      const to = indexed.rule.to;
      if (to.kind === 'any') {
        addPrefix(EVERY_ADDRESS, 0, indexed.index);
      } else if (to.kind === 'cidrs') {
        for (const cidr of to.cidrs) addPrefix(cidr.addr, cidr.prefixLen, indexed.index);
      } else {
        for (const peer of context.resolver.resolve(to.peer)) {
          peerLists.set(peer, interner.append(peerLists.get(peer) ?? NO_RULES, indexed));
        }
      }
    }
  }

  const group: CompiledGroup = {
    settings,
    peerLists: { peers: new Uint32Array(0), lists: [] },
    prefixLists: [],
    overflows: [],
  };
  // Records an overflowing list; the key is formatted only then, because most lists fit.
  const overflow = (entries: readonly KernelRule[], key: string): void => {
    const indexes = [...new Set(entries.map((entry) => entry.ruleIndex))];
    group.overflows.push({
      key,
      entryCount: entries.length,
      limit: RULES_PER_KEY,
      rules: indexes.map((index) => context.rules[index]),
    });
  };

  const peers = Uint32Array.from(peerLists.keys()).sort();
  const lists: (readonly KernelRule[])[] = [];
  let peerCount = 0;
  for (const peer of peers) {
    const rules = peerLists.get(peer)!;
    if (rules.length > RULES_PER_KEY) {
      overflow(rules, `peer ${context.spiffeIdOf.get(peer)} (id ${peer})`);
      continue;
    }
    peers[peerCount++] = peer;
    lists.push(rules);
  }
  group.peerLists = { peers: peers.subarray(0, peerCount), lists };

  for (const prefix of mergeAncestors(prefixes)) {
    const rules: KernelRule[] = [];
    for (const index of prefix.merged) {
      for (const entry of context.indexedRules[index].entries) rules.push(entry);
    }
    if (rules.length <= RULES_PER_KEY) {
      const { addr, prefixLen } = prefix;
      group.prefixLists.push({ addr, prefixLen, rules: Object.freeze(rules) });
    } else {
      overflow(rules, `CIDR ${formatPrefix(prefix.addr, prefix.prefixLen)}`);
    }
  }
  settings.hasPeerRules = group.peerLists.peers.length > 0;
  const lengths = new Set(group.prefixLists.map((prefix) => prefix.prefixLen));
  settings.cidrPrefixLengths = [...lengths].sort((a, b) => b - a);
  return group;
}

/**
 * Sorts the prefixes by address, then length, merges the entries of equal prefixes, and fills
 * `merged` with the prefix's own rules plus those of every prefix in the list that contains it.
 * Returns one entry per distinct prefix.
 */
function mergeAncestors(prefixes: PrefixRules[]): PrefixRules[] {
  // The sort is stable and the entries were added in rule order, so equal prefixes keep their
  // rule indexes ascending.
  prefixes.sort((a, b) => Buffer.compare(a.addr, b.addr) || a.prefixLen - b.prefixLen);
  const distinct: PrefixRules[] = [];
  for (const prefix of prefixes) {
    const last = distinct[distinct.length - 1];
    if (last && last.prefixLen === prefix.prefixLen && last.addr.equals(prefix.addr)) {
      // A rule that lists one prefix twice is stored once.
      for (const index of prefix.own) {
        if (last.own[last.own.length - 1] !== index) last.own.push(index);
      }
      continue;
    }
    distinct.push(prefix);
  }

  // In this order a prefix comes after every prefix that contains it, and the prefixes that
  // contain the current one form a chain, kept on a stack from shortest to longest.
  const chain: PrefixRules[] = [];
  for (const prefix of distinct) {
    while (chain.length > 0) {
      const top = chain[chain.length - 1];
      if (prefixContains(top.addr, top.prefixLen, prefix.addr)) break;
      chain.pop();
    }
    const parent = chain[chain.length - 1];
    prefix.merged = parent ? mergeSortedUnique(parent.merged, prefix.own) : prefix.own;
    chain.push(prefix);
  }
  return distinct;
}

/** Returns the union of two ascending lists of numbers, ascending and without duplicates. */
function mergeSortedUnique(a: readonly number[], b: readonly number[]): number[] {
  const result: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const next = j >= b.length || (i < a.length && a[i] <= b[j]) ? a[i++] : b[j++];
    if (result[result.length - 1] !== next) result.push(next);
  }
  return result;
}
