import {
  CidrRuleEntry,
  CompiledRuleSet,
  KernelRule,
  peerRuleList,
} from '../../src/policy/compiled-rule-set';

/** How the model breaks ties between matching rules with the same action. */
export type TieBreak =
  /** The lowest rule index wins, the contract that `compilePolicySet` documents. */
  | 'lowest-index'
  /**
   * The first match in scan order wins (peer list, then CIDR list): a strict `>` comparison
   * without the ruleIndex tie-break that `sigil_scan_rules` in bpf/include/egress.bpf.h has.
   */
  | 'scan-order';

/** A kernel verdict with the codes of `struct sigil_connect_record`. */
export interface KernelVerdict {
  /** enum sigil_action: 0 None, 1 Allow, 2 Audit, 3 Block. */
  action: number;
  /** enum sigil_decision_reason: 0 no policy, 1 rule, 2 posture. */
  reason: number;
  ruleIndex: number;
}

/**
 * JavaScript model of `read_destination()` in bpf/connect.bpf.c and `sigil_decide_egress()` in
 * bpf/include/egress.bpf.h over a compiled rule set: the unspecified address replaced by
 * loopback, subject lookup, exact peer-rule lookup, longest-prefix match in the CIDR trie, list
 * scan, posture.
 */
export class KernelModel {
  private readonly cidrBySubject = new Map<number, CidrRuleEntry[]>();

  constructor(
    private readonly compiled: CompiledRuleSet,
    private readonly tieBreak: TieBreak = 'lowest-index',
  ) {
    for (const entry of compiled.cidrRules) {
      const entries = this.cidrBySubject.get(entry.subject) ?? [];
      entries.push(entry);
      this.cidrBySubject.set(entry.subject, entries);
    }
  }

  /** Decides a connect; subject and peer are identity ids, 0 when unknown. */
  decide(
    subject: number,
    peer: number,
    addr: Buffer,
    port: number,
    protocol: 6 | 17,
  ): KernelVerdict {
    const verdict: KernelVerdict = { action: 0, reason: 0, ruleIndex: 0 };
    addr = loopbackForUnspecified(addr);
    const settings = this.compiled.subjects.get(subject);
    if (!settings) return verdict;

    // The kernel skips a rule map when the subject's flags mark that map as empty for the subject.
    if (peer !== 0 && settings.hasPeerRules) {
      const list = peerRuleList(this.compiled, subject, peer);
      if (list) this.scan(list, port, protocol, verdict);
    }
    const longest = this.lookupLongestPrefix(subject, addr, settings.cidrPrefixLengths);
    if (longest) this.scan(longest.rules, port, protocol, verdict);

    if (verdict.action === 0 && settings.hasEgressAllow) {
      verdict.action = settings.egressPosture === 'Block' ? 3 : 2;
      verdict.reason = 2;
    }
    return verdict;
  }

  /**
   * Returns the entry the kernel's CIDR lookup finds: it tries the subject's prefix lengths,
   * longest first, and each is an exact-match lookup of the address cut to that length.
   */
  private lookupLongestPrefix(
    subject: number,
    addr: Buffer,
    lengths: readonly number[],
  ): CidrRuleEntry | undefined {
    const entries = this.cidrBySubject.get(subject) ?? [];
    for (const length of [...lengths].sort((a, b) => b - a)) {
      const hit = entries.find(
        (entry) => entry.prefixLen === length && bitsEqual(entry.addr, addr, length),
      );
      if (hit) return hit;
    }
    return undefined;
  }

  private scan(
    rules: readonly KernelRule[],
    port: number,
    protocol: number,
    verdict: KernelVerdict,
  ) {
    for (const rule of rules) {
      if (rule.protocol !== 0 && rule.protocol !== protocol) continue;
      if (port < rule.portLo || port > rule.portHi) continue;
      const stronger = rule.action > verdict.action;
      const tie =
        this.tieBreak === 'lowest-index' &&
        rule.action === verdict.action &&
        rule.ruleIndex < verdict.ruleIndex;
      if (stronger || tie) {
        verdict.action = rule.action;
        verdict.ruleIndex = rule.ruleIndex;
        verdict.reason = 1;
      }
    }
  }
}

/**
 * Compares the first `bits` bits of two 16-byte addresses as 128-bit integers. It is written
 * apart from the policy module's own prefix test, so a bug there cannot hide in both.
 */
function bitsEqual(a: Buffer, b: Buffer, bits: number): boolean {
  if (bits === 0) return true;
  const shift = BigInt(128 - bits);
  const valueA = BigInt(`0x${a.toString('hex')}`);
  const valueB = BigInt(`0x${b.toString('hex')}`);
  return valueA >> shift === valueB >> shift;
}

/** Returns the address that `read_destination` decides on: loopback for the unspecified one. */
function loopbackForUnspecified(addr: Buffer): Buffer {
  const hex = addr.toString('hex');
  if (hex === '0'.repeat(32)) return Buffer.from(`${'0'.repeat(30)}01`, 'hex');
  if (hex === `${'0'.repeat(20)}ffff00000000`)
    return Buffer.from(`${'0'.repeat(20)}ffff7f000001`, 'hex');
  return addr;
}
