import { describe, expect, it } from 'vitest';
import { parseIpAddress } from '../../src/policy/cidr';
import { compilePolicySet, KnownIdentity } from '../../src/policy/compile';
import { CompiledRuleSet } from '../../src/policy/compiled-rule-set';
import { ConnectQuery, decideConnect } from '../../src/policy/decide';
import { parsePolicySet } from '../../src/policy/loader';
import { RuleListOverflowError } from '../../src/policy/rule-list-overflow-error';
import { PolicySet } from '../../src/policy/types';
import { ConfigError } from '../../src/util/config-error';
import { KernelModel } from './kernel-model';
import { Prng } from './prng';

const IDENTITIES: KnownIdentity[] = [
  { id: 1, spiffeId: 'spiffe://a.org/web' },
  { id: 2, spiffeId: 'spiffe://a.org/api' },
  { id: 3, spiffeId: 'spiffe://b.org/web' },
  { id: 4, spiffeId: 'spiffe://a.org' },
];

const document = (name: string, spec: string) =>
  `apiVersion: sigil.dev/v1alpha1\nkind: IdentityPolicy\nmetadata: {name: ${name}}\nspec:\n${spec}`;

describe('compilePolicySet subjects', () => {
  it('compiles an unidentified subject to id 0', () => {
    const set = parsePolicySet(
      document(
        'none',
        '  subject: {unidentified: true}\n  egress: [{action: Allow, to: {cidrs: [10.0.0.0/8]}}]\n',
      ),
      'p.yaml',
    );
    const compiled = compilePolicySet(set, IDENTITIES);
    expect([...compiled.subjects.keys()]).toEqual([0]);
    expect(compiled.subjects.get(0)).toEqual({
      hasEgressAllow: true,
      egressPosture: 'Block',
      hasPeerRules: false,
      cidrPrefixLengths: [104],
    });
    expect(compiled.cidrRules.map((entry) => entry.subject)).toEqual([0]);
  });

  it('compiles an unidentified subject without identities', () => {
    const set = parsePolicySet(
      document(
        'none',
        '  subject: {unidentified: true}\n  egress: [{action: Block, ports: [25]}]\n',
      ),
      'p.yaml',
    );
    const compiled = compilePolicySet(set, []);
    expect([...compiled.subjects.keys()]).toEqual([0]);
  });

  it('resolves a trust domain to every identity in it', () => {
    const set = parsePolicySet(
      document('domain', '  subject: {trustDomain: a.org}\n  egress: [{action: Audit}]\n'),
      'p.yaml',
    );
    expect([...compilePolicySet(set, IDENTITIES).subjects.keys()]).toEqual([1, 2, 4]);
  });

  it('names subject 0 in an overflow', () => {
    const ports = Array.from({ length: 17 }, (_, i) => 1000 + 2 * i);
    const set = parsePolicySet(
      document(
        'none',
        `  subject: {unidentified: true}\n  egress: [{action: Allow, ports: [${ports.join(', ')}]}]\n`,
      ),
      'p.yaml',
    );
    let error: unknown;
    try {
      compilePolicySet(set, IDENTITIES);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(RuleListOverflowError);
    expect((error as RuleListOverflowError).overflows[0]).toMatchObject({
      subject: 0,
      subjectSpiffeId: '',
    });
  });

  it('leaves ingress, process and file rules out of the rule table', () => {
    const set = parsePolicySet(
      document(
        'web',
        [
          '  subject: {spiffeId: spiffe://a.org/web}',
          '  ingress: [{action: Allow}]',
          '  process: [{action: Block, paths: [/bin/sh]}]',
          '  file: [{action: Audit, directories: [/etc]}]',
          '  egress: [{name: only, action: Audit}]',
          '',
        ].join('\n'),
      ),
      'p.yaml',
    );
    const compiled = compilePolicySet(set, IDENTITIES);
    expect(compiled.rules.map((rule) => rule.rule)).toEqual(['only']);
  });
});

describe('compilePolicySet audit mode', () => {
  const set = parsePolicySet(
    [
      document(
        'trial',
        [
          '  subject: {spiffeId: spiffe://a.org/web}',
          '  mode: Audit',
          '  egress:',
          '    - {name: api, action: Allow, to: {spiffeId: spiffe://a.org/api}}',
          '    - {name: smtp, action: Block, ports: [25], severity: high, tags: [spam], message: no mail}',
          '',
        ].join('\n'),
      ),
      document(
        'api',
        '  subject: {spiffeId: spiffe://a.org/api}\n  mode: Audit\n  egressPosture: Audit\n  egress: [{action: Allow, ports: [53]}]\n',
      ),
    ].join('---\n'),
    'p.yaml',
  );
  const compiled = compilePolicySet(set, IDENTITIES);

  it('compiles Block rules to Audit', () => {
    const [entry] = compiled.cidrRules.filter((cidr) => cidr.subject === 1);
    expect(entry.rules).toEqual([{ portLo: 25, portHi: 25, protocol: 0, action: 2, ruleIndex: 1 }]);
  });

  it('marks the rule table', () => {
    expect(compiled.rules[0]).toEqual({
      policy: 'trial',
      rule: 'api',
      action: 'Allow',
      file: 'p.yaml',
      line: 8,
    });
    expect(compiled.rules[1]).toEqual({
      policy: 'trial',
      rule: 'smtp',
      action: 'Block',
      file: 'p.yaml',
      line: 9,
      severity: 'high',
      tags: ['spam'],
      message: 'no mail',
      wouldBlock: true,
    });
  });

  it('compiles the Block posture to Audit', () => {
    expect(compiled.subjects.get(1)).toEqual({
      hasEgressAllow: true,
      egressPosture: 'Audit',
      egressPostureWouldBlock: true,
      hasPeerRules: true,
      cidrPrefixLengths: [0],
    });
    // An Audit posture in Audit mode would not block.
    expect(compiled.subjects.get(2)).toEqual({
      hasEgressAllow: true,
      egressPosture: 'Audit',
      hasPeerRules: false,
      cidrPrefixLengths: [0],
    });
  });

  it('keeps Block from a policy in Enforce mode', () => {
    const both = parsePolicySet(
      [
        document(
          'trial',
          '  subject: {spiffeId: spiffe://a.org/web}\n  mode: Audit\n  egress: [{action: Allow}]\n',
        ),
        document('base', '  subject: {trustDomain: a.org}\n'),
      ].join('---\n'),
      'p.yaml',
    );
    expect(compilePolicySet(both, IDENTITIES).subjects.get(1)).toEqual({
      hasEgressAllow: true,
      egressPosture: 'Block',
      hasPeerRules: false,
      cidrPrefixLengths: [0],
    });
  });
});

// Random sets with every subject form and both modes, decided by the kernel model and by
// decideConnect.
const SPIFFE_IDS = IDENTITIES.map((identity) => identity.spiffeId);
const SUBJECTS = [
  'spiffeId: spiffe://a.org/web',
  'spiffeId: spiffe://a.org/api',
  'spiffeIdPrefix: spiffe://a.org',
  'trustDomain: a.org',
  'trustDomain: b.org',
  'unidentified: true',
];
const DESTINATIONS = [
  '',
  'to: {cidrs: [10.0.0.0/8]}',
  'to: {cidrs: [10.1.0.0/16, "2001:db8::/32"]}',
  'to: {spiffeId: spiffe://a.org/api}',
  'to: {spiffeIdPrefix: spiffe://a.org}',
];
const ADDRESSES = ['10.1.2.3', '10.9.9.9', '2001:db8::1', '192.0.2.1', '127.0.0.1'];

function randomSet(prng: Prng): string {
  const policies = Array.from({ length: prng.int(1, 4) }, (_, policyIndex) => {
    const rules = Array.from({ length: prng.int(0, 4) }, (_, ruleIndex) => {
      const fields = [
        `name: r${ruleIndex}`,
        `action: ${prng.pick(['Allow', 'Allow', 'Audit', 'Block'])}`,
      ];
      const destination = prng.pick(DESTINATIONS);
      if (destination) fields.push(destination);
      if (prng.chance(0.5)) fields.push(`ports: [${prng.pick(['80', '443', '"80-443"'])}]`);
      return `    - {${fields.join(', ')}}`;
    });
    const spec = [
      `  subject: {${prng.pick(SUBJECTS)}}`,
      `  mode: ${prng.pick(['Enforce', 'Audit'])}`,
      `  egressPosture: ${prng.pick(['Block', 'Audit'])}`,
      rules.length > 0 ? `  egress:\n${rules.join('\n')}` : '',
      '',
    ].join('\n');
    return document(`p${policyIndex}`, spec);
  });
  return policies.join('---\n');
}

function kernelDecision(compiled: CompiledRuleSet, query: ConnectQuery) {
  const idOf = (spiffeId: string | null) =>
    spiffeId === null ? 0 : IDENTITIES.find((identity) => identity.spiffeId === spiffeId)!.id;
  const verdict = new KernelModel(compiled).decide(
    idOf(query.subject),
    idOf(query.peer),
    parseIpAddress(query.address)!.addr,
    query.port,
    6,
  );
  return verdict;
}

describe('compiled subjects and modes against decideConnect', () => {
  it('agrees on random policy sets', () => {
    const prng = new Prng(0x51617);
    const mismatches: unknown[] = [];
    const counts = { compiled: 0, rejected: 0, unidentified: 0, wouldBlock: 0 };
    for (let setIndex = 0; setIndex < 600; setIndex++) {
      const text = randomSet(prng);
      let set: PolicySet;
      let compiled: CompiledRuleSet;
      try {
        set = parsePolicySet(text, 'random.yaml');
        compiled = compilePolicySet(set, IDENTITIES);
      } catch (error) {
        if (!(error instanceof ConfigError) && !(error instanceof RuleListOverflowError))
          throw error;
        counts.rejected++;
        continue;
      }
      counts.compiled++;
      for (let queryIndex = 0; queryIndex < 20; queryIndex++) {
        const query: ConnectQuery = {
          subject: prng.chance(0.3) ? null : prng.pick(SPIFFE_IDS),
          peer: prng.chance(0.5) ? null : prng.pick(SPIFFE_IDS),
          address: prng.pick(ADDRESSES),
          port: prng.pick([80, 443, 8080]),
          protocol: 'TCP',
        };
        const expected = decideConnect(set, query);
        const verdict = kernelDecision(compiled, query);
        const actions = ['None', 'Allow', 'Audit', 'Block'];
        const reasons = ['no-policy', 'rule', 'posture'];
        const rule = verdict.reason === 1 ? compiled.rules[verdict.ruleIndex] : undefined;
        const settings = compiled.subjects.get(
          query.subject === null ? 0 : kernelIdOf(query.subject),
        );
        // The kernel shows a would-block through the posture flag or the named rule's flag.
        // The posture flag equals the decision's, and a named rule's flag implies it.
        const kernelWouldBlock =
          verdict.reason === 2
            ? settings?.egressPostureWouldBlock === true
            : rule?.wouldBlock === true;
        const consistent =
          actions[verdict.action] === expected.action &&
          reasons[verdict.reason] === expected.reason &&
          rule?.policy === expected.policy &&
          rule?.rule === expected.rule &&
          (verdict.reason === 2
            ? kernelWouldBlock === (expected.wouldBlock === true)
            : !kernelWouldBlock || expected.wouldBlock === true);
        if (!consistent) mismatches.push({ text, query, expected, verdict, rule });
        if (query.subject === null && expected.reason !== 'no-policy') counts.unidentified++;
        if (expected.wouldBlock) counts.wouldBlock++;
      }
    }
    expect(mismatches.slice(0, 2)).toEqual([]);
    expect(counts.compiled).toBeGreaterThan(500);
    expect(counts.unidentified).toBeGreaterThan(300);
    expect(counts.wouldBlock).toBeGreaterThan(300);
  });
});

function kernelIdOf(spiffeId: string): number {
  return IDENTITIES.find((identity) => identity.spiffeId === spiffeId)!.id;
}
