import { describe, expect, it } from 'vitest';
import { compilePolicySet, KnownIdentity } from '../../src/policy/compile';
import {
  CompiledRuleSet,
  CompiledRuleSetChanges,
  SubjectSettings,
} from '../../src/policy/compiled-rule-set';
import { EgressCompiler } from '../../src/policy/egress-compiler';
import { RuleListOverflowError } from '../../src/policy/rule-list-overflow-error';
import { PolicySet } from '../../src/policy/types';
import { ConfigError } from '../../src/util/config-error';
import { PolicySpec, policySet, RuleSpec } from './policy-builder';
import { Prng } from './prng';

const SEED = 0x5191_2001;
const SCENARIOS = 300;
const STEPS_PER_SCENARIO = 4;

const KNOWN_SPIFFE_IDS = [
  'spiffe://a.org/ns/web',
  'spiffe://a.org/ns/web/canary',
  'spiffe://a.org/ns/api',
  'spiffe://a.org/db',
  'spiffe://b.org/x',
];
const IDENTITIES: KnownIdentity[] = KNOWN_SPIFFE_IDS.map((spiffeId, index) => ({
  id: index + 1,
  spiffeId,
}));
const SUBJECTS = [
  ...KNOWN_SPIFFE_IDS,
  'prefix:spiffe://a.org/ns',
  'trustDomain:a.org',
  'unidentified',
];
const CIDRS = ['10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '10.1.2.3', '2001:db8::/32', '::/0'];
const PORTS: (number | string)[] = [53, 80, 443, '8000-8100', '1-1024'];

function randomRule(prng: Prng, name: string): RuleSpec {
  const rule: RuleSpec = { name, action: prng.pick(['Allow', 'Allow', 'Audit', 'Block']) };
  const destination = prng.next();
  if (destination < 0.4) {
    rule.to = prng.chance(0.6)
      ? { spiffeId: prng.pick(KNOWN_SPIFFE_IDS) }
      : { spiffeIdPrefix: prng.pick(['spiffe://a.org', 'spiffe://a.org/ns']) };
  } else if (destination < 0.8) {
    rule.to = { cidrs: Array.from({ length: prng.int(1, 2) }, () => prng.pick(CIDRS)) };
  }
  if (prng.chance(0.5)) rule.ports = [prng.pick(PORTS)];
  if (prng.chance(0.5)) rule.protocol = prng.pick(['TCP', 'UDP']);
  return rule;
}

function randomPolicy(prng: Prng, name: string, subject: string, ruleCount: number): PolicySpec {
  const spec: PolicySpec = { name, subject };
  if (prng.chance(0.2)) spec.mode = 'Audit';
  if (prng.chance(0.5)) spec.egressPosture = prng.pick(['Block', 'Audit']);
  spec.egress = Array.from({ length: ruleCount }, (_, index) => randomRule(prng, `rule-${index}`));
  return spec;
}

/** Returns the set with policy `index` replaced by one parsed alone, as a reload of it would. */
function replacePolicy(set: PolicySet, index: number, spec: PolicySpec): PolicySet {
  const [policy] = policySet([spec], `changed-${index}.yaml`).policies;
  const policies = set.policies.slice();
  policies[index] = policy;
  return { ...set, policies };
}

/** Returns the fields of a subject's settings that reach the subjects map. */
function subjectContents(settings: SubjectSettings): string {
  const { hasEgressAllow, egressPosture, hasPeerRules, cidrPrefixLengths } = settings;
  return `${hasEgressAllow} ${egressPosture} peers ${hasPeerRules} lengths ${cidrPrefixLengths}`;
}

/** Returns the map contents of a compiled set, keyed by the kernel keys, for comparison. */
function kernelContents(compiled: CompiledRuleSet): Map<string, string> {
  const contents = new Map<string, string>();
  for (const [id, settings] of compiled.subjects) {
    contents.set(`subject ${id}`, subjectContents(settings));
  }
  for (const [subject, { peers, lists }] of compiled.peerRules) {
    peers.forEach((peer, i) => contents.set(`peer ${subject}:${peer}`, JSON.stringify(lists[i])));
  }
  for (const entry of compiled.cidrRules) {
    const key = `cidr ${entry.subject} ${entry.addr.toString('hex')}/${entry.prefixLen}`;
    contents.set(key, JSON.stringify(entry.rules));
  }
  return contents;
}

/** Applies changes to map contents as Datapath.applyRuleSetChanges writes them to the maps. */
function applyChanges(contents: Map<string, string>, changes: CompiledRuleSetChanges): void {
  for (const id of changes.subjects.remove) contents.delete(`subject ${id}`);
  for (const key of changes.peerRules.remove) contents.delete(`peer ${key.subject}:${key.peer}`);
  for (const key of changes.cidrRules.remove) {
    contents.delete(`cidr ${key.subject} ${key.addr.toString('hex')}/${key.prefixLen}`);
  }
  for (const [id, settings] of changes.subjects.upsert) {
    contents.set(`subject ${id}`, subjectContents(settings));
  }
  for (const entry of changes.peerRules.upsert) {
    contents.set(`peer ${entry.subject}:${entry.peer}`, JSON.stringify(entry.rules));
  }
  for (const entry of changes.cidrRules.upsert) {
    const key = `cidr ${entry.subject} ${entry.addr.toString('hex')}/${entry.prefixLen}`;
    contents.set(key, JSON.stringify(entry.rules));
  }
}

/** Returns the whole compiled set in a form that compares with toEqual, map order aside. */
function normalised(compiled: CompiledRuleSet): unknown {
  return {
    subjects: [...compiled.subjects].sort((a, b) => a[0] - b[0]),
    peerRules: [...compiled.peerRules.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([subject, { peers, lists }]) => [subject, [...peers], lists]),
    cidrRules: compiled.cidrRules.map((entry) => ({ ...entry, addr: entry.addr.toString('hex') })),
    rules: compiled.rules,
  };
}

function sortedContents(contents: Map<string, string>): [string, string][] {
  return [...contents].sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

describe('EgressCompiler', () => {
  it('compiles the first set whole', () => {
    const set = policySet([{ name: 'web', subject: KNOWN_SPIFFE_IDS[0], egress: [] }]);
    const result = new EgressCompiler().compile(set, IDENTITIES);
    expect(result.changes).toBeNull();
    expect(result.incremental).toBe(false);
    expect(normalised(result.compiled)).toEqual(normalised(compilePolicySet(set, IDENTITIES)));
  });

  it('returns no changes for the same set', () => {
    const set = policySet([
      { name: 'web', subject: KNOWN_SPIFFE_IDS[0], egress: [{ action: 'Allow', ports: [80] }] },
    ]);
    const compiler = new EgressCompiler();
    compiler.compile(set, IDENTITIES);
    const result = compiler.compile(set, IDENTITIES);
    expect(result.incremental).toBe(true);
    expect(result.changes).toEqual({
      subjects: { upsert: [], remove: [] },
      peerRules: { upsert: [], remove: [] },
      cidrRules: { upsert: [], remove: [] },
    });
  });

  it('compiles only the changed policy of a set parsed again', () => {
    const specs: PolicySpec[] = [
      { name: 'web', subject: KNOWN_SPIFFE_IDS[0], egress: [{ action: 'Allow', ports: [80] }] },
      { name: 'api', subject: KNOWN_SPIFFE_IDS[2], egress: [{ action: 'Allow', ports: [443] }] },
    ];
    const compiler = new EgressCompiler();
    compiler.compile(policySet(specs), IDENTITIES);
    const unchanged = compiler.compile(policySet(specs), IDENTITIES);
    expect(unchanged.changes?.cidrRules.upsert).toEqual([]);
    expect(unchanged.changes?.subjects.upsert).toEqual([]);

    specs[1] = { ...specs[1], egress: [{ action: 'Allow', ports: [8443] }] };
    const next = policySet(specs);
    const result = compiler.compile(next, IDENTITIES);
    expect(result.changes?.cidrRules.upsert.map((entry) => entry.subject)).toEqual([3]);
    expect(result.changes?.cidrRules.upsert[0].rules[0].portLo).toBe(8443);
    expect(normalised(result.compiled)).toEqual(normalised(compilePolicySet(next, IDENTITIES)));
  });

  it.each([
    ['another rule count', (spec: PolicySpec) => ({ ...spec, egress: [] })],
    ['another subject', (spec: PolicySpec) => ({ ...spec, subject: KNOWN_SPIFFE_IDS[1] })],
    ['another name', (spec: PolicySpec) => ({ ...spec, name: 'renamed' })],
  ])('compiles whole after %s', (_case, change) => {
    const spec: PolicySpec = {
      name: 'web',
      subject: KNOWN_SPIFFE_IDS[0],
      egress: [{ action: 'Allow', ports: [80] }],
    };
    const first = policySet([spec]);
    const compiler = new EgressCompiler();
    compiler.compile(first, IDENTITIES);
    const second = replacePolicy(first, 0, change(spec));
    const result = compiler.compile(second, IDENTITIES);
    expect(result.incremental).toBe(false);
    expect(normalised(result.compiled)).toEqual(normalised(compilePolicySet(second, IDENTITIES)));
    const contents = kernelContents(compilePolicySet(first, IDENTITIES));
    applyChanges(contents, result.changes!);
    expect(sortedContents(contents)).toEqual(sortedContents(kernelContents(result.compiled)));
  });

  it('updates the subject when its first peer entry appears', () => {
    const set = policySet([
      {
        name: 'web',
        subject: KNOWN_SPIFFE_IDS[0],
        egress: [{ action: 'Allow', to: { spiffeId: 'spiffe://c.org/new' } }],
      },
    ]);
    const compiler = new EgressCompiler();
    const first = compiler.compile(set, IDENTITIES);
    expect(first.compiled.subjects.get(1)?.hasPeerRules).toBe(false);

    const identities = [...IDENTITIES, { id: 99, spiffeId: 'spiffe://c.org/new' }];
    const result = compiler.compile(set, identities);
    expect(result.changes?.subjects.upsert).toEqual([
      [1, expect.objectContaining({ hasPeerRules: true, cidrPrefixLengths: [] })],
    ]);
    const contents = kernelContents(first.compiled);
    applyChanges(contents, result.changes!);
    expect(sortedContents(contents)).toEqual(sortedContents(kernelContents(result.compiled)));
  });

  it('compiles whole after other identities', () => {
    const set = policySet([
      {
        name: 'web',
        subject: 'prefix:spiffe://a.org',
        egress: [{ action: 'Allow', to: { spiffeIdPrefix: 'spiffe://a.org' } }],
      },
    ]);
    const compiler = new EgressCompiler();
    compiler.compile(set, IDENTITIES);
    const more = [...IDENTITIES, { id: 9, spiffeId: 'spiffe://a.org/new' }];
    const result = compiler.compile(set, more);
    expect(result.incremental).toBe(false);
    // The new identity is a subject with a list for every peer, and a peer of every subject.
    const newSubjectEntries = result.changes!.peerRules.upsert.filter((e) => e.subject === 9);
    const newPeerEntries = result.changes!.peerRules.upsert.filter((e) => e.peer === 9);
    // Five identities are in a.org: ids 1 to 4 and 9.
    expect(newSubjectEntries).toHaveLength(5);
    expect(newPeerEntries).toHaveLength(5);
    // Nothing else changed: 5 + 5 entries, and (9, 9) is in both.
    expect(result.changes!.peerRules.upsert).toHaveLength(9);
    expect(result.changes!.subjects.upsert.map(([id]) => id)).toEqual([9]);
    expect(result.changes!.peerRules.remove).toEqual([]);
  });

  it('removes the entries of a subject that is gone', () => {
    const set = policySet([
      {
        name: 'web',
        subject: 'prefix:spiffe://a.org',
        egress: [
          { action: 'Allow', to: { spiffeIdPrefix: 'spiffe://a.org' } },
          { action: 'Block', to: { cidrs: ['10.0.0.0/8'] } },
        ],
      },
    ]);
    const compiler = new EgressCompiler();
    const first = compiler.compile(set, IDENTITIES).compiled;
    const contents = kernelContents(first);
    const fewer = IDENTITIES.filter((identity) => identity.id !== 1);
    const result = compiler.compile(set, fewer);
    expect(result.changes!.subjects.remove).toEqual([1]);
    expect(result.changes!.cidrRules.remove.map((key) => key.subject)).toEqual([1]);
    applyChanges(contents, result.changes!);
    expect(sortedContents(contents)).toEqual(sortedContents(kernelContents(result.compiled)));
  });

  it('keeps its state when a compile throws', () => {
    const base: PolicySpec = {
      name: 'web',
      subject: KNOWN_SPIFFE_IDS[0],
      egress: [{ action: 'Allow', to: { cidrs: ['10.0.0.0/8'] } }],
    };
    const first = policySet([base]);
    const compiler = new EgressCompiler();
    compiler.compile(first, IDENTITIES);
    // 17 ports in one rule make a list of 17 entries, one more than a kernel list holds.
    const ports = Array.from({ length: 17 }, (_, index) => 1000 + index * 10);
    const overflowing = replacePolicy(first, 0, { ...base, egress: [{ ...base.egress![0], ports }] });
    expect(() => compiler.compile(overflowing, IDENTITIES)).toThrow(RuleListOverflowError);
    const fixed = replacePolicy(first, 0, { ...base, egress: [{ ...base.egress![0], ports: [80] }] });
    const result = compiler.compile(fixed, IDENTITIES);
    expect(result.changes?.cidrRules.upsert).toHaveLength(1);
    expect(normalised(result.compiled)).toEqual(normalised(compilePolicySet(fixed, IDENTITIES)));
  });

  it('agrees with whole compiles on random changes', () => {
    const prng = new Prng(SEED);
    const mismatches: unknown[] = [];
    let incremental = 0;
    let wholeCompiles = 0;
    let changedEntries = 0;
    for (let scenario = 0; scenario < SCENARIOS; scenario++) {
      const specs = Array.from({ length: prng.int(1, 5) }, (_, index) =>
        randomPolicy(prng, `policy-${index}`, prng.pick(SUBJECTS), prng.int(0, 4)),
      );
      let set: PolicySet;
      const compiler = new EgressCompiler();
      try {
        set = policySet(specs);
        compiler.compile(set, IDENTITIES);
      } catch (error) {
        if (error instanceof ConfigError || error instanceof RuleListOverflowError) continue;
        throw error;
      }
      let contents = kernelContents(compilePolicySet(set, IDENTITIES));
      for (let step = 0; step < STEPS_PER_SCENARIO; step++) {
        const index = prng.int(0, specs.length - 1);
        const before = specs[index];
        // One change in five may change the rule count, which compiles the whole set.
        const ruleCount = prng.chance(0.2) ? prng.int(0, 4) : before.egress!.length;
        const whole = ruleCount !== before.egress!.length;
        const spec = randomPolicy(prng, before.name, before.subject, ruleCount);
        let next: PolicySet;
        let expected: CompiledRuleSet;
        try {
          next = replacePolicy(set, index, spec);
          expected = compilePolicySet(next, IDENTITIES);
        } catch (error) {
          if (error instanceof ConfigError) continue;
          if (!(error instanceof RuleListOverflowError)) throw error;
          expect(() => compiler.compile(replacePolicy(set, index, spec), IDENTITIES)).toThrow(
            RuleListOverflowError,
          );
          continue;
        }
        const result = compiler.compile(next, IDENTITIES);
        if (result.changes === null || result.incremental === whole) {
          mismatches.push({ scenario, step, problem: 'incremental is not !whole', whole });
          break;
        }
        if (whole) wholeCompiles++;
        else incremental++;
        applyChanges(contents, result.changes);
        changedEntries +=
          result.changes.subjects.upsert.length +
          result.changes.peerRules.upsert.length +
          result.changes.cidrRules.upsert.length;
        const expectedContents = kernelContents(expected);
        if (JSON.stringify(sortedContents(contents)) !== JSON.stringify(sortedContents(expectedContents))) {
          mismatches.push({ scenario, step, problem: 'changes', specs, spec });
          contents = expectedContents;
        }
        if (JSON.stringify(normalised(result.compiled)) !== JSON.stringify(normalised(expected))) {
          mismatches.push({ scenario, step, problem: 'compiled set', specs, spec });
        }
        specs[index] = spec;
        set = next;
      }
    }
    expect(mismatches.slice(0, 2)).toEqual([]);
    expect(incremental).toBeGreaterThan(SCENARIOS);
    expect(wholeCompiles).toBeGreaterThan(SCENARIOS / 10);
    expect(changedEntries).toBeGreaterThan(incremental);
  });
});
