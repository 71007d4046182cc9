import { formatPrefix, prefixContains } from './cidr';
import {
  CidrRuleEntry,
  CompiledRuleSet,
  KernelAction,
  KernelProtocol,
  KernelRule,
  PeerRuleEntry,
  RuleRef,
  RULES_PER_KEY,
  SubjectSettings,
} from './compiled-rule-set';
import { mergePortRanges } from './ports';
import { RuleListOverflow, RuleListOverflowError } from './rule-list-overflow-error';
import { canonicalSpiffeId, selectorKey, selectorMatches } from './spiffe-selector';
import { EgressRule, Policy, PolicySet, RuleAction, RuleProtocol, SpiffeSelector } from './types';

/** A SPIFFE ID the agent knows, with the small integer the kernel maps use for it. */
export interface KnownIdentity {
  id: number;
  spiffeId: string;
}

const KERNEL_ACTIONS: Record<RuleAction, KernelAction> = { Allow: 1, Audit: 2, Block: 3 };
const KERNEL_PROTOCOLS: Record<RuleProtocol, KernelProtocol> = { Any: 0, TCP: 6, UDP: 17 };
const MAX_IDENTITY_ID = 0xffffffff;
const EVERY_ADDRESS = Buffer.alloc(16);

/** A policy rule with its index in the rule table and its kernel entries. */
interface IndexedRule {
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
  merged: number[];
}

/** Kernel lists shared by subjects that the same policies apply to. */
interface GroupLists {
  settings: SubjectSettings;
  peerLists: Map<number, number[]>;
  prefixes: PrefixRules[];
}

/**
 * Compiles a policy set into the contents of the kernel's subject, peer-rule and CIDR-rule
 * maps for the given identities (ids >= 1). Subjects and peers given by prefix resolve to
 * every known identity they match. Selectors that match no known identity compile to nothing,
 * but their Allow rules still set `hasEgressAllow` for the subject.
 *
 * Posture: each policy contributes its `egressPosture` (Block when the file gives none), and a
 * subject gets Audit only when every policy that applies to it says Audit.
 *
 * Tie-break contract: lists are sorted by ruleIndex, and the rule table is in (policy, rule)
 * order. The kernel must report the matching rule with the strongest action and, among those,
 * the lowest ruleIndex across the peer list and the CIDR list, to name the rule that
 * `decideConnect` names.
 *
 * Throws `RuleListOverflowError` listing every key whose list would exceed `RULES_PER_KEY`
 * entries, and `Error` for invalid or duplicate identities.
 */
export function compilePolicySet(
  set: PolicySet,
  identities: ReadonlyArray<KnownIdentity>,
): CompiledRuleSet {
  const known = checkIdentities(identities);
  const spiffeIdOf = new Map(known.map((identity) => [identity.id, identity.spiffeId]));
  const resolver = new SelectorResolver(known);
  const { rules, indexedByPolicy } = buildRuleTable(set.policies);

  // Subjects that the same policies apply to get the same lists, so compute them once.
  const policiesBySubject = new Map<number, number[]>();
  set.policies.forEach((policy, policyIndex) => {
    for (const subject of resolver.resolve(policy.subject)) {
      const policyIndexes = policiesBySubject.get(subject) ?? [];
      policyIndexes.push(policyIndex);
      policiesBySubject.set(subject, policyIndexes);
    }
  });
  const subjectsByGroup = new Map<string, number[]>();
  for (const subject of [...policiesBySubject.keys()].sort((a, b) => a - b)) {
    const groupKey = policiesBySubject.get(subject)!.join(',');
    const subjects = subjectsByGroup.get(groupKey) ?? [];
    subjects.push(subject);
    subjectsByGroup.set(groupKey, subjects);
  }

  const entriesOf = (indexes: readonly number[]): KernelRule[] =>
    indexes.flatMap((index) => indexedRules[index].entries);
  const indexedRules = indexedByPolicy.flat();
  const subjects = new Map<number, SubjectSettings>();
  const peerRules: PeerRuleEntry[] = [];
  const cidrRules: CidrRuleEntry[] = [];
  const overflows: RuleListOverflow[] = [];

  for (const [groupKey, groupSubjects] of subjectsByGroup) {
    const policyIndexes = groupKey.split(',').map(Number);
    const group = buildGroupLists(
      policyIndexes.map((index) => set.policies[index]),
      policyIndexes.map((index) => indexedByPolicy[index]),
      resolver,
    );

    // Check each list once for the group, then name every subject of the group in the error.
    const listTooLong = (indexes: readonly number[], key: string): boolean => {
      const entryCount = indexes.reduce(
        (sum, index) => sum + indexedRules[index].entries.length,
        0,
      );
      if (entryCount <= RULES_PER_KEY) return false;
      for (const subject of groupSubjects) {
        overflows.push({
          subject,
          subjectSpiffeId: spiffeIdOf.get(subject)!,
          key,
          entryCount,
          limit: RULES_PER_KEY,
          rules: indexes.map((index) => rules[index]),
        });
      }
      return true;
    };
    const peers = [...group.peerLists.keys()].sort((a, b) => a - b);
    const peerOk = peers.filter((peer) => {
      const key = `peer ${spiffeIdOf.get(peer)} (id ${peer})`;
      return !listTooLong(group.peerLists.get(peer)!, key);
    });
    const prefixesOk = group.prefixes.filter(
      (prefix) =>
        !listTooLong(prefix.merged, `CIDR ${formatPrefix(prefix.addr, prefix.prefixLen)}`),
    );

    for (const subject of groupSubjects) {
      subjects.set(subject, { ...group.settings });
      for (const peer of peerOk) {
        peerRules.push({ subject, peer, rules: entriesOf(group.peerLists.get(peer)!) });
      }
      for (const prefix of prefixesOk) {
        cidrRules.push({
          subject,
          prefixLen: prefix.prefixLen,
          addr: Buffer.from(prefix.addr),
          rules: entriesOf(prefix.merged),
        });
      }
    }
  }
  if (overflows.length > 0) {
    overflows.sort((a, b) => a.subject - b.subject);
    throw new RuleListOverflowError(overflows);
  }

  return {
    subjects: new Map([...subjects].sort((a, b) => a[0] - b[0])),
    peerRules: new Map(
      peerRules
        .sort((a, b) => a.subject - b.subject || a.peer - b.peer)
        .map((entry) => [`${entry.subject}:${entry.peer}`, entry]),
    ),
    // Groups are visited in the order of their first subject, so sort again by subject.
    cidrRules: cidrRules.sort(
      (a, b) =>
        a.subject - b.subject || Buffer.compare(a.addr, b.addr) || a.prefixLen - b.prefixLen,
    ),
    rules,
  };
}

/** Validates the identities and returns them with canonical SPIFFE IDs, sorted by id. */
function checkIdentities(identities: ReadonlyArray<KnownIdentity>): KnownIdentity[] {
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

/** Resolves SPIFFE ID selectors to the ids of known identities, caching each selector. */
class SelectorResolver {
  private readonly idBySpiffeId: Map<string, number>;
  private readonly cache = new Map<string, readonly number[]>();

  constructor(private readonly known: readonly KnownIdentity[]) {
    this.idBySpiffeId = new Map(known.map((identity) => [identity.spiffeId, identity.id]));
  }

  /** Returns the matching identity ids in ascending order. */
  resolve(selector: SpiffeSelector): readonly number[] {
    const key = selectorKey(selector);
    let ids = this.cache.get(key);
    if (ids) return ids;
    if (selector.kind === 'spiffeId') {
      const id = this.idBySpiffeId.get(selector.spiffeId);
      ids = id === undefined ? [] : [id];
    } else {
      ids = this.known
        .filter((identity) => selectorMatches(selector, identity.spiffeId))
        .map((identity) => identity.id);
    }
    this.cache.set(key, ids);
    return ids;
  }
}

/** Numbers every rule in (policy, rule) order and builds its kernel entries. */
function buildRuleTable(policies: readonly Policy[]): {
  rules: RuleRef[];
  indexedByPolicy: IndexedRule[][];
} {
  const rules: RuleRef[] = [];
  const indexedByPolicy = policies.map((policy) =>
    policy.egress.map((rule) => {
      const index = rules.length;
      rules.push({
        policy: policy.name,
        rule: rule.name,
        action: rule.action,
        file: rule.position.file,
        line: rule.position.line,
      });
      return { index, rule, entries: kernelEntries(rule, index) };
    }),
  );
  return { rules, indexedByPolicy };
}

/** Returns one frozen kernel rule per merged port range of the rule. */
function kernelEntries(rule: EgressRule, ruleIndex: number): readonly KernelRule[] {
  const ranges = rule.ports === null ? [{ lo: 0, hi: 65535 }] : mergePortRanges(rule.ports);
  return ranges.map((range) =>
    Object.freeze({
      portLo: range.lo,
      portHi: range.hi,
      protocol: KERNEL_PROTOCOLS[rule.protocol],
      action: KERNEL_ACTIONS[rule.action],
      ruleIndex,
    }),
  );
}

/** Builds the settings, peer lists and merged CIDR lists for the policies of one group. */
function buildGroupLists(
  policies: readonly Policy[],
  rulesByPolicy: readonly (readonly IndexedRule[])[],
  resolver: SelectorResolver,
): GroupLists {
  const settings: SubjectSettings = {
    hasEgressAllow: policies.some((policy) =>
      policy.egress.some((rule) => rule.action === 'Allow'),
    ),
    egressPosture: policies.some((policy) => policy.egressPosture === 'Block') ? 'Block' : 'Audit',
  };

  // Policies and their rules are visited in rule-table order, so every list stays sorted.
  const peerLists = new Map<number, number[]>();
  const prefixesByKey = new Map<string, PrefixRules>();
  const addPrefix = (addr: Buffer, prefixLen: number, index: number): void => {
    const key = `${addr.toString('hex')}/${prefixLen}`;
    let prefix = prefixesByKey.get(key);
    if (!prefix) {
      prefix = { addr, prefixLen, own: [], merged: [] };
      prefixesByKey.set(key, prefix);
    }
    // A rule that lists one prefix twice is stored once.
    if (prefix.own[prefix.own.length - 1] !== index) prefix.own.push(index);
  };
  for (const indexedRules of rulesByPolicy) {
    for (const { index, rule } of indexedRules) {
      const to = rule.to;
      if (to.kind === 'any') {
        addPrefix(EVERY_ADDRESS, 0, index);
      } else if (to.kind === 'cidrs') {
        for (const cidr of to.cidrs) addPrefix(cidr.addr, cidr.prefixLen, index);
      } else {
        for (const peer of resolver.resolve(to.peer)) {
          const list = peerLists.get(peer) ?? [];
          list.push(index);
          peerLists.set(peer, list);
        }
      }
    }
  }

  return { settings, peerLists, prefixes: mergeAncestors([...prefixesByKey.values()]) };
}

/**
 * Sorts the prefixes by address, then length, and fills `merged` with the prefix's own rules
 * plus those of every prefix in the list that contains it.
 */
function mergeAncestors(prefixes: PrefixRules[]): PrefixRules[] {
  // In this order a prefix comes after every prefix that contains it, and the prefixes that
  // contain the current one form a chain, kept on a stack from shortest to longest.
  prefixes.sort((a, b) => Buffer.compare(a.addr, b.addr) || a.prefixLen - b.prefixLen);
  const chain: PrefixRules[] = [];
  for (const prefix of prefixes) {
    while (chain.length > 0) {
      const top = chain[chain.length - 1];
      if (prefixContains(top.addr, top.prefixLen, prefix.addr)) break;
      chain.pop();
    }
    const parent = chain[chain.length - 1];
    prefix.merged = parent ? mergeSortedUnique(parent.merged, prefix.own) : prefix.own;
    chain.push(prefix);
  }
  return prefixes;
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
