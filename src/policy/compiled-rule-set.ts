import { EgressPosture, RuleAction, Severity } from './types';

/** Maximum rules per kernel map key (SIGIL_RULES_PER_KEY in bpf/include/sigil.h). */
export const RULES_PER_KEY = 16;

/** Kernel protocol numbers: IPPROTO_TCP, IPPROTO_UDP, or 0 for any. */
export type KernelProtocol = 0 | 6 | 17;

/** Kernel action codes (enum sigil_action): 1 Allow, 2 Audit, 3 Block. */
export type KernelAction = 1 | 2 | 3;

/** One `struct sigil_rule`: a port range and protocol, and the action for a match. */
export interface KernelRule {
  /** Inclusive port range in host byte order, 0-65535 when the rule gives no ports. */
  portLo: number;
  portHi: number;
  protocol: KernelProtocol;
  action: KernelAction;
  /** Index into `CompiledRuleSet.rules`. */
  ruleIndex: number;
}

/** A policy rule as the rule table names it, so a kernel record can be traced to its source. */
export interface RuleRef {
  policy: string;
  rule: string;
  /** The action as written; see `wouldBlock` for a Block that the kernel applies as Audit. */
  action: RuleAction;
  file: string;
  line: number;
  /** Present when the file gives a severity. */
  severity?: Severity;
  /** Present when the file gives at least one tag. */
  tags?: readonly string[];
  /** Present when the file gives a message. */
  message?: string;
  /** True for a Block rule of a policy in Audit mode, which the kernel applies as Audit. */
  wouldBlock?: true;
}

/** Value of the subjects map (`struct sigil_subject`). */
export interface SubjectSettings {
  /** True when any policy of the subject has an Allow egress rule, so the posture applies. */
  hasEgressAllow: boolean;
  /** The posture the kernel applies, after Audit mode turned Blocks into Audit. */
  egressPosture: EgressPosture;
  /** True when the posture is Audit only because policies in Audit mode turned Block into Audit. */
  egressPostureWouldBlock?: true;
  /** True when the subject has at least one peer-rule entry. */
  hasPeerRules: boolean;
  /** The distinct prefix lengths of the subject's CIDR entries, longest first. */
  cidrPrefixLengths: readonly number[];
}

/** One entry of the peer-rule map, keyed by the subject's and the peer's identity ids. */
export interface PeerRuleEntry {
  subject: number;
  peer: number;
  rules: readonly KernelRule[];
}

/**
 * The peer-rule entries of one subject as two parallel arrays: `lists[i]` is the rule list for
 * the peer with identity id `peers[i]`, and `peers` is ascending. Subjects that the same policies
 * apply to share one object, so it must not be changed.
 */
export interface PeerRuleLists {
  readonly peers: Uint32Array;
  readonly lists: readonly (readonly KernelRule[])[];
}

/**
 * One entry of the CIDR-rule map. `rules` also contains the rules of every shorter prefix of
 * the same subject that contains this one, because the lookup returns only the longest match.
 */
export interface CidrRuleEntry {
  subject: number;
  /** Address bits in the IPv6 space, 0..128. The map key's prefixlen adds 32 for the subject. */
  prefixLen: number;
  /** Network address, 16 bytes, IPv4 stored IPv4-mapped. */
  addr: Buffer;
  rules: readonly KernelRule[];
}

/**
 * A policy set compiled for the kernel maps of one rule-set generation. Every rule list is
 * sorted by `ruleIndex` and contains at most `RULES_PER_KEY` entries. KernelRule objects and
 * rule lists are frozen, and one list array may serve several entries.
 */
export interface CompiledRuleSet {
  /** Keyed by identity id, in ascending id order. Id 0 is the subject of processes without a SPIFFE ID. */
  subjects: Map<number, SubjectSettings>;
  /**
   * Peer-rule entries keyed by subject, in ascending subject order. Subjects without peer rules
   * are absent. Read one entry with `peerRuleList`.
   */
  peerRules: Map<number, PeerRuleLists>;
  /** Sorted by subject, then address bytes, then prefix length. */
  cidrRules: CidrRuleEntry[];
  /** The rule table: `rules[i]` is the rule with `ruleIndex` i, in (policy, rule) order. */
  rules: RuleRef[];
}

/**
 * Changes that turn one compiled rule set into the next: entries to create or replace, and keys
 * to delete. A key is in at most one of the two.
 */
export interface CompiledRuleSetChanges {
  subjects: { upsert: [number, SubjectSettings][]; remove: number[] };
  peerRules: { upsert: PeerRuleEntry[]; remove: { subject: number; peer: number }[] };
  cidrRules: {
    upsert: CidrRuleEntry[];
    remove: { subject: number; prefixLen: number; addr: Buffer }[];
  };
}

/** Returns the rule list of the peer-rule entry (subject, peer), or undefined when there is none. */
export function peerRuleList(
  compiled: CompiledRuleSet,
  subject: number,
  peer: number,
): readonly KernelRule[] | undefined {
  const entries = compiled.peerRules.get(subject);
  if (!entries) return undefined;
  const { peers } = entries;
  let lo = 0;
  let hi = peers.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (peers[mid] === peer) return entries.lists[mid];
    if (peers[mid] < peer) lo = mid + 1;
    else hi = mid - 1;
  }
  return undefined;
}

/** Returns the number of entries of the peer-rule map. */
export function peerRuleCount(compiled: CompiledRuleSet): number {
  let count = 0;
  for (const entries of compiled.peerRules.values()) count += entries.peers.length;
  return count;
}
