// The word-wise encoder of rule sets (src/kernel/rule-maps.ts) against the byte-wise encoders of
// src/kernel/codec.ts, whose layouts test/kernel/layout.test.ts checks against bpf/include/sigil.h.
import { describe, expect, it } from 'vitest';
import {
  encodeCidrKey,
  encodePeerKey,
  encodeRuleList,
  encodeSubject,
} from '../../src/kernel/codec';
import {
  KernelAction,
  SUBJECT_HAS_EGRESS_ALLOW,
  SUBJECT_NO_PEER_RULES,
} from '../../src/kernel/layout';
import { encodeChanges, encodeRuleSet } from '../../src/kernel/rule-maps';

const RULES = [
  { portLo: 0, portHi: 65535, protocol: 0, action: KernelAction.Block, ruleIndex: 0 },
  { portLo: 80, portHi: 443, protocol: 6, action: KernelAction.Allow, ruleIndex: 7 },
  { portLo: 53, portHi: 53, protocol: 17, action: KernelAction.Audit, ruleIndex: 0xfffffffe },
];
const ADDR = Buffer.from('00000000000000000000ffff0a000000', 'hex');

describe('encodeRuleSet', () => {
  it('writes the bytes of the codec encoders', () => {
    const encoded = encodeRuleSet({
      subjects: [],
      peerRules: [{ subject: 1, peer: 2, rules: RULES.slice(0, 1) }],
      peerRulesBySubject: [{ subject: 0xfffffff0, peers: [3, 4], lists: [RULES, []] }],
      cidrRules: [{ subject: 5, prefixLen: 104, addr: ADDR, rules: RULES.slice(1) }],
    });
    const [, peers, cidrs] = encoded.upserts;
    expect(peers.keys).toEqual(
      Buffer.concat([encodePeerKey(1, 2), encodePeerKey(0xfffffff0, 3), encodePeerKey(0xfffffff0, 4)]),
    );
    expect(peers.values).toEqual(
      Buffer.concat([encodeRuleList(RULES.slice(0, 1)), encodeRuleList(RULES), encodeRuleList([])]),
    );
    expect(cidrs.keys).toEqual(encodeCidrKey(5, 104, ADDR));
    expect(cidrs.values).toEqual(encodeRuleList(RULES.slice(1)));
  });

  it('writes the subject flags and prefix lengths', () => {
    const encoded = encodeRuleSet({
      subjects: [
        { id: 1, hasEgressAllow: true, egressPosture: KernelAction.Block, cidrPrefixLengths: [] },
        {
          id: 2,
          hasEgressAllow: false,
          egressPosture: KernelAction.Audit,
          hasPeerRules: false,
          cidrPrefixLengths: [128, 0],
        },
        {
          id: 3,
          hasEgressAllow: true,
          egressPosture: KernelAction.Block,
          hasPeerRules: true,
          cidrPrefixLengths: [64],
        },
      ],
      peerRules: [],
      cidrRules: [],
    });
    const [subjects] = encoded.upserts;
    expect(subjects.values).toEqual(
      Buffer.concat([
        encodeSubject(SUBJECT_HAS_EGRESS_ALLOW, KernelAction.Block),
        encodeSubject(SUBJECT_NO_PEER_RULES, KernelAction.Audit, [128, 0]),
        encodeSubject(SUBJECT_HAS_EGRESS_ALLOW, KernelAction.Block, [64]),
      ]),
    );
  });

  it('encodes removed peer keys', () => {
    const encoded = encodeChanges({
      upserts: { subjects: [], peerRules: [], cidrRules: [] },
      removals: { subjects: [], peerRules: [{ subject: 9, peer: 8 }], cidrRules: [] },
    });
    expect(encoded.removals[1]).toEqual(encodePeerKey(9, 8));
  });

  it.each([
    ['a port above 65535', { portLo: 1, portHi: 65536 }],
    ['a negative port', { portLo: -1, portHi: 1 }],
    ['a protocol above 255', { protocol: 256 }],
  ])('rejects %s', (_case, fields) => {
    const rule = { ...RULES[1], ...fields };
    const ruleSet = { subjects: [], peerRules: [{ subject: 1, peer: 2, rules: [rule] }], cidrRules: [] };
    expect(() => encodeRuleSet(ruleSet)).toThrow(RangeError);
  });

  it('rejects a list longer than a kernel list', () => {
    const rules = Array(17).fill(RULES[0]);
    const ruleSet = { subjects: [], peerRules: [{ subject: 1, peer: 2, rules }], cidrRules: [] };
    expect(() => encodeRuleSet(ruleSet)).toThrow(/at most 16 rules, got 17/);
  });
});
