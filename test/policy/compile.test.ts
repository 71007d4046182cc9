import { describe, expect, it } from 'vitest';
import { formatPrefix } from '../../src/policy/cidr';
import { compilePolicySet, KnownIdentity } from '../../src/policy/compile';
import {
  CompiledRuleSet,
  peerRuleCount,
  peerRuleList,
} from '../../src/policy/compiled-rule-set';
import { RuleListOverflowError } from '../../src/policy/rule-list-overflow-error';
import { policySet, RuleSpec } from './policy-builder';

const WEB = 'spiffe://a.org/ns/web';
const IDENTITIES: KnownIdentity[] = [
  { id: 1, spiffeId: WEB },
  { id: 2, spiffeId: 'spiffe://a.org/ns/web/canary' },
  { id: 3, spiffeId: 'spiffe://a.org/ns/webx' },
  { id: 4, spiffeId: 'spiffe://a.org/api' },
  { id: 5, spiffeId: 'spiffe://b.org/ns/web' },
  { id: 6, spiffeId: 'spiffe://a.org' },
];

/** Returns each CIDR entry of a subject as `prefix -> rule indexes`. */
function cidrLists(compiled: CompiledRuleSet, subject: number): Record<string, number[]> {
  const lists: Record<string, number[]> = {};
  for (const entry of compiled.cidrRules) {
    if (entry.subject !== subject) continue;
    lists[formatPrefix(entry.addr, entry.prefixLen)] = entry.rules.map((rule) => rule.ruleIndex);
  }
  return lists;
}

/** Returns each peer entry as `subject:peer -> rule indexes`. */
function peerLists(compiled: CompiledRuleSet): Record<string, number[]> {
  const lists: Record<string, number[]> = {};
  for (const [subject, { peers, lists: rules }] of compiled.peerRules) {
    peers.forEach((peer, i) => {
      lists[`${subject}:${peer}`] = rules[i].map((rule) => rule.ruleIndex);
    });
  }
  return lists;
}

describe('compilePolicySet', () => {
  it('builds kernel rules for each port range', () => {
    const set = policySet([
      {
        name: 'web',
        subject: WEB,
        egress: [
          { name: 'api', action: 'Allow', ports: [8080, '9000-9100', 8081], protocol: 'TCP' },
          { name: 'dns', action: 'Audit', ports: [53], protocol: 'UDP' },
          { name: 'rest', action: 'Block' },
        ],
      },
    ]);
    const compiled = compilePolicySet(set, IDENTITIES);
    expect(compiled.cidrRules).toHaveLength(1);
    expect(compiled.cidrRules[0].rules).toEqual([
      { portLo: 8080, portHi: 8081, protocol: 6, action: 1, ruleIndex: 0 },
      { portLo: 9000, portHi: 9100, protocol: 6, action: 1, ruleIndex: 0 },
      { portLo: 53, portHi: 53, protocol: 17, action: 2, ruleIndex: 1 },
      { portLo: 0, portHi: 65535, protocol: 0, action: 3, ruleIndex: 2 },
    ]);
  });

  it('fills the rule table in policy and rule order', () => {
    const set = policySet(
      [
        {
          name: 'first',
          subject: WEB,
          egress: [{ action: 'Allow' }, { name: 'b', action: 'Audit' }],
        },
        { name: 'second', subject: 'spiffe://nobody/x', egress: [{ action: 'Block' }] },
      ],
      'set.yaml',
    );
    const compiled = compilePolicySet(set, IDENTITIES);
    expect(compiled.rules).toEqual([
      { policy: 'first', rule: 'egress-0', action: 'Allow', file: 'set.yaml', line: 9 },
      { policy: 'first', rule: 'b', action: 'Audit', file: 'set.yaml', line: 10 },
      { policy: 'second', rule: 'egress-0', action: 'Block', file: 'set.yaml', line: 21 },
    ]);
  });

  it('stores rules without a destination at ::/0', () => {
    const set = policySet([{ name: 'web', subject: WEB, egress: [{ action: 'Audit' }] }]);
    const [entry] = compilePolicySet(set, IDENTITIES).cidrRules;
    expect(entry.prefixLen).toBe(0);
    expect(entry.addr.equals(Buffer.alloc(16))).toBe(true);
  });

  it('merges ancestor rules into every CIDR entry', () => {
    const rules: RuleSpec[] = [
      { name: 'everything', action: 'Audit' },
      { name: 'ten', action: 'Allow', to: { cidrs: ['10.0.0.0/8'] } },
      { name: 'ten-one', action: 'Block', to: { cidrs: ['10.1.0.0/16'] } },
      { name: 'ten-two', action: 'Allow', to: { cidrs: ['10.2.0.0/16', '10.2.3.0/24'] } },
      { name: 'v6', action: 'Allow', to: { cidrs: ['2001:db8::/32'] } },
      { name: 'lan', action: 'Allow', to: { cidrs: ['192.168.0.0/16'] } },
      { name: 'v4-mapped', action: 'Audit', to: { cidrs: ['::ffff:0:0/96'] } },
    ];
    const set = policySet([
      { name: 'web', subject: WEB, egress: rules },
      {
        name: 'more',
        subject: WEB,
        egress: [{ name: 'ten-one-host', action: 'Audit', to: { cidrs: ['10.1.2.3'] } }],
      },
    ]);
    expect(cidrLists(compilePolicySet(set, IDENTITIES), 1)).toEqual({
      '::/0': [0],
      '0.0.0.0/0': [0, 6],
      '10.0.0.0/8': [0, 1, 6],
      '10.1.0.0/16': [0, 1, 2, 6],
      '10.1.2.3/32': [0, 1, 2, 6, 7],
      '10.2.0.0/16': [0, 1, 3, 6],
      // The rule that names both 10.2.0.0/16 and 10.2.3.0/24 appears once.
      '10.2.3.0/24': [0, 1, 3, 6],
      '192.168.0.0/16': [0, 5, 6],
      '2001:db8::/32': [0, 4],
    });
  });

  it('merges only ancestors of the same subject', () => {
    const set = policySet([
      { name: 'web', subject: WEB, egress: [{ action: 'Block', to: { cidrs: ['10.0.0.0/8'] } }] },
      {
        name: 'api',
        subject: 'spiffe://a.org/api',
        egress: [{ action: 'Allow', to: { cidrs: ['10.1.0.0/16'] } }],
      },
    ]);
    const compiled = compilePolicySet(set, IDENTITIES);
    expect(cidrLists(compiled, 1)).toEqual({ '10.0.0.0/8': [0] });
    expect(cidrLists(compiled, 4)).toEqual({ '10.1.0.0/16': [1] });
  });

  it('resolves prefix subjects on segment boundaries', () => {
    const set = policySet([
      { name: 'web', subject: 'prefix:spiffe://a.org/ns/web', egress: [{ action: 'Allow' }] },
      { name: 'trust-domain', subject: 'prefix:spiffe://b.org', egress: [{ action: 'Audit' }] },
    ]);
    const compiled = compilePolicySet(set, IDENTITIES);
    expect([...compiled.subjects.keys()]).toEqual([1, 2, 5]);
    expect(compiled.cidrRules.map((entry) => entry.subject)).toEqual([1, 2, 5]);
  });

  it('resolves exact and prefix peers', () => {
    const set = policySet([
      {
        name: 'web',
        subject: WEB,
        egress: [
          { name: 'api', action: 'Allow', to: { spiffeId: 'spiffe://a.org/api' } },
          { name: 'all-a', action: 'Audit', to: { spiffeIdPrefix: 'spiffe://a.org' } },
          { name: 'web-tree', action: 'Block', to: { spiffeIdPrefix: 'spiffe://a.org/ns/web/' } },
          { name: 'unknown', action: 'Allow', to: { spiffeId: 'spiffe://c.org/x' } },
        ],
      },
    ]);
    const compiled = compilePolicySet(set, IDENTITIES);
    expect(peerLists(compiled)).toEqual({
      '1:1': [1, 2],
      '1:2': [1, 2],
      '1:3': [1],
      '1:4': [0, 1],
      '1:6': [1],
    });
    expect(compiled.cidrRules).toEqual([]);
    expect(peerRuleList(compiled, 1, 4)?.map((rule) => rule.ruleIndex)).toEqual([0, 1]);
    expect(peerRuleList(compiled, 1, 5)).toBeUndefined();
  });

  it('records which rule maps contain entries of a subject', () => {
    const set = policySet([
      {
        name: 'peers',
        subject: WEB,
        egress: [{ action: 'Allow', to: { spiffeId: 'spiffe://a.org/api' } }],
      },
      { name: 'cidrs', subject: 'spiffe://a.org/api', egress: [{ action: 'Block', ports: [25] }] },
      {
        name: 'unknown-peer',
        subject: 'spiffe://b.org/ns/web',
        egress: [{ action: 'Allow', to: { spiffeId: 'spiffe://c/x' } }],
      },
    ]);
    const compiled = compilePolicySet(set, IDENTITIES);
    expect(compiled.subjects.get(1)?.hasPeerRules).toBe(true);
    expect(compiled.subjects.get(1)?.cidrPrefixLengths).toEqual([]);
    expect(compiled.subjects.get(4)?.hasPeerRules).toBe(false);
    expect(compiled.subjects.get(4)?.cidrPrefixLengths).toEqual([0]);
    // A peer that no identity matches compiles to no entry.
    expect(compiled.subjects.get(5)?.hasPeerRules).toBe(false);
    expect(compiled.subjects.get(5)?.cidrPrefixLengths).toEqual([]);
  });

  it('sets hasEgressAllow from Allow rules, even to unknown peers', () => {
    const set = policySet([
      {
        name: 'allow',
        subject: WEB,
        egress: [{ action: 'Allow', to: { spiffeId: 'spiffe://c/x' } }],
      },
      { name: 'audit', subject: 'spiffe://a.org/api', egress: [{ action: 'Audit' }] },
    ]);
    const compiled = compilePolicySet(set, IDENTITIES);
    expect(compiled.subjects.get(1)?.hasEgressAllow).toBe(true);
    expect(compiled.subjects.get(4)?.hasEgressAllow).toBe(false);
    expect(peerRuleCount(compiled)).toBe(0);
  });

  it.each([
    [undefined, undefined, 'Block'],
    ['Audit', undefined, 'Block'],
    ['Audit', 'Block', 'Block'],
    ['Block', 'Audit', 'Block'],
    ['Audit', 'Audit', 'Audit'],
  ])('resolves postures %s and %s to %s', (first, second, expected) => {
    const set = policySet([
      { name: 'exact', subject: WEB, egressPosture: first, egress: [{ action: 'Allow' }] },
      { name: 'prefix', subject: 'prefix:spiffe://a.org/ns', egressPosture: second },
    ]);
    const compiled = compilePolicySet(set, IDENTITIES);
    expect(compiled.subjects.get(1)?.egressPosture).toBe(expected);
  });

  it('keeps the posture of a subject with one policy', () => {
    const set = policySet([
      { name: 'exact', subject: WEB, egressPosture: 'Audit', egress: [{ action: 'Allow' }] },
      { name: 'prefix', subject: 'prefix:spiffe://a.org/ns/web/canary' },
    ]);
    const compiled = compilePolicySet(set, IDENTITIES);
    expect(compiled.subjects.get(1)?.egressPosture).toBe('Audit');
    expect(compiled.subjects.get(2)?.egressPosture).toBe('Block');
  });

  it('shares frozen lists between subjects of the same policies', () => {
    const set = policySet([
      {
        name: 'web',
        subject: 'prefix:spiffe://a.org/ns/web',
        egress: [{ action: 'Allow' }, { action: 'Audit', to: { spiffeIdPrefix: 'spiffe://a.org' } }],
      },
    ]);
    const compiled = compilePolicySet(set, IDENTITIES);
    const [first, second] = compiled.cidrRules;
    expect(first.rules).toBe(second.rules);
    expect(Object.isFrozen(first.rules)).toBe(true);
    first.addr[0] = 0xff;
    expect(second.addr[0]).toBe(0);
    // Every peer of the prefix gets the one rule, so all five peers of both subjects share a list.
    const lists = [1, 2, 3, 4, 6].flatMap((peer) => [
      peerRuleList(compiled, 1, peer),
      peerRuleList(compiled, 2, peer),
    ]);
    expect(new Set(lists).size).toBe(1);
    expect(Object.isFrozen(lists[0])).toBe(true);
  });

  it('produces the same output for any identity order', () => {
    const set = policySet([
      {
        name: 'web',
        subject: 'prefix:spiffe://a.org',
        egress: [
          { action: 'Allow', to: { spiffeIdPrefix: 'spiffe://a.org/ns' } },
          { action: 'Block', to: { cidrs: ['10.0.0.0/8', '2001:db8::/32', '10.1.0.0/16'] } },
        ],
      },
      { name: 'api', subject: 'spiffe://a.org/api', egress: [{ action: 'Audit' }] },
    ]);
    const forward = compilePolicySet(set, IDENTITIES);
    const backward = compilePolicySet(set, [...IDENTITIES].reverse());
    expect([...backward.subjects]).toEqual([...forward.subjects]);
    expect(peerLists(backward)).toEqual(peerLists(forward));
    expect(backward.cidrRules).toEqual(forward.cidrRules);
    expect(Object.keys(peerLists(forward))).toEqual([
      '1:1',
      '1:2',
      '1:3',
      '2:1',
      '2:2',
      '2:3',
      '3:1',
      '3:2',
      '3:3',
      '4:1',
      '4:2',
      '4:3',
      '6:1',
      '6:2',
      '6:3',
    ]);
  });

  it('sorts CIDR entries by subject, address and length', () => {
    const set = policySet([
      {
        name: 'web',
        subject: 'prefix:spiffe://a.org/ns/web',
        egress: [
          { action: 'Block', to: { cidrs: ['2001:db8::/32', '10.1.0.0/16', '10.0.0.0/8'] } },
        ],
      },
    ]);
    const entries = compilePolicySet(set, IDENTITIES).cidrRules.map(
      (entry) => `${entry.subject} ${formatPrefix(entry.addr, entry.prefixLen)}`,
    );
    expect(entries).toEqual([
      '1 10.0.0.0/8',
      '1 10.1.0.0/16',
      '1 2001:db8::/32',
      '2 10.0.0.0/8',
      '2 10.1.0.0/16',
      '2 2001:db8::/32',
    ]);
  });
});

describe('compilePolicySet overflow', () => {
  // 17 ports that are not adjacent, so merging cannot join them.
  const seventeenPorts = Array.from({ length: 17 }, (_, i) => 1000 + 2 * i);

  it('counts merged port ranges against the limit', () => {
    const set = policySet([
      {
        name: 'web',
        subject: WEB,
        egress: [
          { action: 'Allow', ports: seventeenPorts.slice(0, 16) },
          { action: 'Block', ports: Array.from({ length: 40 }, (_, i) => 5000 + i) },
          { action: 'Audit', ports: [6000, 6000] },
        ],
      },
    ]);
    expect(() => compilePolicySet(set, IDENTITIES)).toThrow(RuleListOverflowError);
    const fits = policySet([
      {
        name: 'web',
        subject: WEB,
        egress: [{ action: 'Allow', ports: seventeenPorts.slice(0, 14) }],
      },
      {
        name: 'more',
        subject: WEB,
        egress: [{ action: 'Block', ports: Array.from({ length: 40 }, (_, i) => 5000 + i) }],
      },
    ]);
    expect(compilePolicySet(fits, IDENTITIES).cidrRules[0].rules).toHaveLength(15);
  });

  it('names subject, key and policies of a CIDR list', () => {
    const set = policySet(
      [
        {
          name: 'base',
          subject: 'prefix:spiffe://a.org/ns/web',
          egress: [{ name: 'wide', action: 'Audit', ports: seventeenPorts.slice(0, 10) }],
        },
        {
          name: 'web',
          subject: WEB,
          egress: [
            {
              name: 'ten',
              action: 'Allow',
              to: { cidrs: ['10.0.0.0/8'] },
              ports: seventeenPorts.slice(0, 7),
            },
          ],
        },
      ],
      'set.yaml',
    );
    let error: unknown;
    try {
      compilePolicySet(set, IDENTITIES);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(RuleListOverflowError);
    const overflow = error as RuleListOverflowError;
    expect(overflow.overflows).toHaveLength(1);
    expect(overflow.overflows[0]).toMatchObject({
      subject: 1,
      subjectSpiffeId: WEB,
      key: 'CIDR 10.0.0.0/8',
      entryCount: 17,
      limit: 16,
    });
    expect(overflow.overflows[0].rules.map((rule) => `${rule.policy}/${rule.rule}`)).toEqual([
      'base/wide',
      'web/ten',
    ]);
    expect(overflow.message).toContain(
      `subject ${WEB} (id 1), CIDR 10.0.0.0/8: 17 rule entries, more than the limit of 16; ` +
        'from policy "base" rules "wide" (set.yaml:9); policy "web" rules "ten" (set.yaml:',
    );
  });

  it('names every subject that shares an overflowing peer list', () => {
    const set = policySet([
      {
        name: 'web',
        subject: 'prefix:spiffe://a.org/ns/web',
        egress: [
          {
            name: 'api-a',
            action: 'Allow',
            to: { spiffeId: 'spiffe://a.org/api' },
            ports: seventeenPorts.slice(0, 9),
          },
          {
            name: 'api-b',
            action: 'Block',
            to: { spiffeIdPrefix: 'spiffe://a.org' },
            ports: seventeenPorts.slice(9),
          },
        ],
      },
    ]);
    const error = (() => {
      try {
        compilePolicySet(set, IDENTITIES);
      } catch (caught) {
        return caught as RuleListOverflowError;
      }
      throw new Error('expected an overflow');
    })();
    expect(error.overflows.map((overflow) => `${overflow.subject} ${overflow.key}`)).toEqual([
      '1 peer spiffe://a.org/api (id 4)',
      '2 peer spiffe://a.org/api (id 4)',
    ]);
    expect(error.overflows[0].rules.map((rule) => rule.rule)).toEqual(['api-a', 'api-b']);
    expect(error.overflows[0].entryCount).toBe(17);
    expect(error.message).toContain('rule lists too long for 2 keys');
  });
});

describe('compilePolicySet identities', () => {
  const set = policySet([{ name: 'web', subject: WEB, egress: [{ action: 'Allow' }] }]);

  it.each([
    [[{ id: 0, spiffeId: WEB }], 'identity id 0 of spiffe://a.org/ns/web is not an integer from 1'],
    [[{ id: 1.5, spiffeId: WEB }], 'identity id 1.5 of'],
    [[{ id: 1, spiffeId: 'spiffe://A/x' }], 'identity id 1: invalid SPIFFE ID "spiffe://A/x"'],
    [
      [
        { id: 1, spiffeId: WEB },
        { id: 1, spiffeId: 'spiffe://a.org/other' },
      ],
      'identity id 1 is given for both spiffe://a.org/ns/web and spiffe://a.org/other',
    ],
    [
      [
        { id: 1, spiffeId: WEB },
        { id: 2, spiffeId: WEB },
      ],
      'spiffe://a.org/ns/web is given two identity ids, 1 and 2',
    ],
  ])('rejects %j', (identities, message) => {
    expect(() => compilePolicySet(set, identities)).toThrow(message);
  });

  it('compiles nothing without identities', () => {
    const compiled = compilePolicySet(set, []);
    expect(compiled.subjects.size).toBe(0);
    expect(compiled.cidrRules).toEqual([]);
    expect(compiled.rules).toHaveLength(1);
  });
});
