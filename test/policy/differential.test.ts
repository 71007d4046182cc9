import { describe, expect, it } from 'vitest';
import { parseIpAddress } from '../../src/policy/cidr';
import { compilePolicySet, KnownIdentity } from '../../src/policy/compile';
import { CompiledRuleSet, RULES_PER_KEY } from '../../src/policy/compiled-rule-set';
import { ConnectQuery, Decision, decideConnect } from '../../src/policy/decide';
import { RuleListOverflowError } from '../../src/policy/rule-list-overflow-error';
import { PolicySet } from '../../src/policy/types';
import { ConfigError } from '../../src/util/config-error';
import { KernelModel, KernelVerdict, TieBreak } from './kernel-model';
import { ipv4Network, ipv6Network } from './network-prefixes';
import { PolicySpec, policySet, RuleSpec } from './policy-builder';
import { Prng } from './prng';

const SEED = 0x5191_1234;
const POLICY_SETS = 2000;
const QUERIES_PER_SET = 30;

// Identities that share prefixes, so segment boundaries and trust domains matter.
const KNOWN_SPIFFE_IDS = [
  'spiffe://a.org',
  'spiffe://a.org/ns/web',
  'spiffe://a.org/ns/web/canary',
  'spiffe://a.org/ns/webx',
  'spiffe://a.org/ns/api',
  'spiffe://a.org/db',
  'spiffe://b.org/ns/web',
  'spiffe://b.org/x',
];
// Named in policies but unknown to the agent, so they compile to nothing.
const UNKNOWN_SPIFFE_IDS = ['spiffe://c.org/ns/web', 'spiffe://a.org/ns/gone'];
const PREFIXES = [
  'spiffe://a.org',
  'spiffe://a.org/',
  'spiffe://a.org/ns',
  'spiffe://a.org/ns/web',
  'spiffe://a.org/ns/web/',
  'spiffe://b.org',
  'spiffe://c.org/ns',
];

const IPV4_BASES = ['10.1.2.3', '10.1.200.9', '10.2.0.1', '127.0.0.1', '192.168.1.20'];
const IPV4_LENGTHS = [0, 8, 16, 24, 30, 32];
const IPV6_BASES = ['2001:db8::1', '2001:db8:1::5', '::1', 'fe80::1'];
const IPV6_LENGTHS = [0, 16, 32, 48, 64, 127, 128];
const SPECIAL_CIDRS = ['::/0', '::ffff:0:0/96', '::ffff:10.1.0.0/112', '0.0.0.0/0'];
const QUERY_ADDRESSES = [
  ...IPV4_BASES,
  ...IPV6_BASES,
  '10.1.2.4',
  '10.1.3.3',
  '10.200.0.1',
  '11.0.0.1',
  '192.168.1.21',
  '::ffff:10.1.2.3',
  '::ffff:127.0.0.1',
  '2001:db8::2',
  '2001:db9::1',
  '::2',
  '::',
];
const RULE_PORTS: (number | string)[] = [53, 80, 443, 8080, '8000-8100', '1-1024', '443-443', 9000];
const QUERY_PORTS = [0, 53, 80, 443, 1024, 1025, 8050, 8080, 9000, 65535];

const ACTION_NAMES = ['None', 'Allow', 'Audit', 'Block'] as const;
const REASON_NAMES = ['no-policy', 'rule', 'posture'] as const;

function randomCidr(prng: Prng): string {
  const kind = prng.int(0, 9);
  if (kind < 5) return ipv4Network(prng.pick(IPV4_BASES), prng.pick(IPV4_LENGTHS));
  if (kind < 8) return ipv6Network(prng.pick(IPV6_BASES), prng.pick(IPV6_LENGTHS));
  if (kind < 9) return prng.pick(IPV4_BASES);
  return prng.pick(SPECIAL_CIDRS);
}

function randomRule(prng: Prng, name: string): RuleSpec {
  const rule: RuleSpec = { name, action: prng.pick(['Allow', 'Allow', 'Audit', 'Block']) };
  const destination = prng.next();
  if (destination < 0.3) {
    rule.to = prng.chance(0.6)
      ? { spiffeId: prng.pick([...KNOWN_SPIFFE_IDS, ...UNKNOWN_SPIFFE_IDS]) }
      : { spiffeIdPrefix: prng.pick(PREFIXES) };
  } else if (destination < 0.75) {
    rule.to = { cidrs: Array.from({ length: prng.int(1, 3) }, () => randomCidr(prng)) };
  }
  if (prng.chance(0.6)) {
    rule.ports = Array.from({ length: prng.int(1, 3) }, () => prng.pick(RULE_PORTS));
  }
  if (prng.chance(0.7)) rule.protocol = prng.pick(['TCP', 'UDP', 'Any']);
  return rule;
}

function randomPolicies(prng: Prng): PolicySpec[] {
  return Array.from({ length: prng.int(1, 5) }, (_, policyIndex) => {
    const subject = prng.chance(0.6)
      ? prng.pick([...KNOWN_SPIFFE_IDS, ...UNKNOWN_SPIFFE_IDS])
      : `prefix:${prng.pick(PREFIXES)}`;
    const spec: PolicySpec = { name: `policy-${policyIndex}`, subject };
    if (prng.chance(0.6)) spec.egressPosture = prng.pick(['Block', 'Audit']);
    spec.egress = Array.from({ length: prng.int(0, 5) }, (_, ruleIndex) =>
      randomRule(prng, `rule-${ruleIndex}`),
    );
    return spec;
  });
}

function randomQuery(prng: Prng): ConnectQuery {
  return {
    subject: prng.chance(0.9) ? prng.pick(KNOWN_SPIFFE_IDS) : null,
    peer: prng.chance(0.6) ? prng.pick(KNOWN_SPIFFE_IDS) : null,
    address: prng.pick(QUERY_ADDRESSES),
    port: prng.pick(QUERY_PORTS),
    protocol: prng.pick(['TCP', 'UDP'] as const),
  };
}

/** Translates a kernel verdict into a Decision, naming the rule through the rule table. */
function kernelDecision(compiled: CompiledRuleSet, verdict: KernelVerdict): Decision {
  const decision: Decision = {
    action: ACTION_NAMES[verdict.action],
    reason: REASON_NAMES[verdict.reason],
    denied: verdict.action === 3,
  };
  if (verdict.reason === 1) {
    const rule = compiled.rules[verdict.ruleIndex];
    decision.policy = rule.policy;
    decision.rule = rule.rule;
  }
  return decision;
}

function runKernel(
  compiled: CompiledRuleSet,
  identities: readonly KnownIdentity[],
  query: ConnectQuery,
  tieBreak: TieBreak,
): Decision {
  const idOf = (spiffeId: string | null) =>
    spiffeId === null ? 0 : identities.find((identity) => identity.spiffeId === spiffeId)!.id;
  const model = new KernelModel(compiled, tieBreak);
  const addr = parseIpAddress(query.address)!.addr;
  const protocol = query.protocol === 'TCP' ? 6 : 17;
  const verdict = model.decide(idOf(query.subject), idOf(query.peer), addr, query.port, protocol);
  return kernelDecision(compiled, verdict);
}

/** Returns problems with the list invariants that the kernel relies on. */
function checkListInvariants(compiled: CompiledRuleSet): string[] {
  const problems: string[] = [];
  const lists = [
    ...[...compiled.peerRules.values()].flatMap((entries) => entries.lists),
    ...compiled.cidrRules.map((entry) => entry.rules),
  ];
  for (const [subject, { peers, lists: peerLists }] of compiled.peerRules) {
    if (peers.length !== peerLists.length) problems.push(`subject ${subject}: peers and lists differ`);
    for (let i = 1; i < peers.length; i++) {
      if (peers[i - 1] >= peers[i]) problems.push(`subject ${subject}: peers not ascending`);
    }
  }
  for (const rules of lists) {
    if (rules.length > RULES_PER_KEY) problems.push(`list of ${rules.length} rules`);
    for (let i = 1; i < rules.length; i++) {
      if (rules[i - 1].ruleIndex > rules[i].ruleIndex)
        problems.push('list not sorted by ruleIndex');
    }
    for (const rule of rules) {
      if (!compiled.rules[rule.ruleIndex]) problems.push(`ruleIndex ${rule.ruleIndex} unknown`);
    }
  }
  return problems;
}

describe('compiled rules against decideConnect', () => {
  it('agrees on random policy sets', () => {
    const prng = new Prng(SEED);
    const identities: KnownIdentity[] = KNOWN_SPIFFE_IDS.map((spiffeId, index) => ({
      id: index + 1,
      spiffeId,
    }));
    const mismatches: unknown[] = [];
    const actionMismatchesWithScanOrder: unknown[] = [];
    const invariantProblems: string[] = [];
    const reasons = { rule: 0, posture: 0, 'no-policy': 0 };
    let peerRuleDecisions = 0;
    let compiledSets = 0;
    let rejectedSets = 0;
    let overflowSets = 0;

    for (let setIndex = 0; setIndex < POLICY_SETS; setIndex++) {
      const specs = randomPolicies(prng);
      let set: PolicySet;
      let compiled: CompiledRuleSet;
      try {
        set = policySet(specs);
        compiled = compilePolicySet(set, identities);
      } catch (error) {
        // Contradictory rules (a load error) and overflowing lists are valid outcomes.
        if (error instanceof ConfigError) rejectedSets++;
        else if (error instanceof RuleListOverflowError) overflowSets++;
        else throw error;
        continue;
      }
      compiledSets++;
      invariantProblems.push(...checkListInvariants(compiled));

      for (let queryIndex = 0; queryIndex < QUERIES_PER_SET; queryIndex++) {
        const query = randomQuery(prng);
        const expected = decideConnect(set, query);
        const actual = runKernel(compiled, identities, query, 'lowest-index');
        reasons[expected.reason]++;
        if (expected.reason === 'rule' && query.peer !== null) peerRuleDecisions++;
        if (JSON.stringify(actual) !== JSON.stringify(expected)) {
          mismatches.push({ setIndex, specs, query, expected, actual });
        }

        // A scan-order tie-break may name another rule of the same action, but the action,
        // reason and verdict must not depend on the tie-break.
        const scanOrder = runKernel(compiled, identities, query, 'scan-order');
        if (
          scanOrder.action !== expected.action ||
          scanOrder.reason !== expected.reason ||
          scanOrder.denied !== expected.denied
        ) {
          actionMismatchesWithScanOrder.push({ setIndex, query, expected, scanOrder });
        }
      }
    }

    expect(mismatches.slice(0, 3)).toEqual([]);
    expect(mismatches.length).toBe(0);
    expect(actionMismatchesWithScanOrder.slice(0, 3)).toEqual([]);
    expect(invariantProblems.slice(0, 5)).toEqual([]);
    // Guard against a generator that stops producing interesting cases.
    expect(compiledSets).toBeGreaterThan(POLICY_SETS * 0.8);
    expect(rejectedSets + overflowSets).toBeLessThan(POLICY_SETS * 0.2);
    expect(reasons.rule).toBeGreaterThan(5000);
    expect(reasons.posture).toBeGreaterThan(2000);
    expect(reasons['no-policy']).toBeGreaterThan(2000);
    expect(peerRuleDecisions).toBeGreaterThan(1000);
  });
});
