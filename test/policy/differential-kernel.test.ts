// Differential test of egress decisions: the running kernel against decideConnect. It loads
// bpf/.output/sigil.bpf.o, attaches the cgroup post_bind and connect programs to a test cgroup,
// and starts one connect_helper per identity in that cgroup and in a network namespace that has
// only lo, so no packet leaves the machine. For each seeded random policy set, the test compiles
// the set with an EgressCompiler and applies it as the agent does: whole with applyRuleSet, or,
// for every other set, which changes one policy of the previous one, as changed entries with
// applyRuleSetChanges. The helpers then connect to loopback
// listeners that other helpers own and to addresses without a route. For every connect, the
// errno (EPERM or not) and the kernel's connect record (action, reason, rule) must match
// decideConnect. Needs root, cc and iproute2; fails, never skips, when one is missing.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toKernelChanges, toKernelRuleSet } from '../../src/enforce/agent';
import { ConnectRecord, decodeBatch, encodeAddress, formatAddress } from '../../src/kernel/codec';
import { Datapath } from '../../src/kernel/datapath';
import { SETTINGS_EMIT_ALL_CONNECTS } from '../../src/kernel/layout';
import { KnownIdentity } from '../../src/policy/compile';
import { EgressCompilation, EgressCompiler } from '../../src/policy/egress-compiler';
import { CompiledRuleSet } from '../../src/policy/compiled-rule-set';
import { ConnectQuery, Decision, decideConnect } from '../../src/policy/decide';
import { RuleListOverflowError } from '../../src/policy/rule-list-overflow-error';
import { PolicySet } from '../../src/policy/types';
import { ConfigError } from '../../src/util/config-error';
import { waitFor } from '../helpers/agent-process';
import { TestCgroups } from '../helpers/cgroups';
import { buildConnectHelper, ConnectHelper, ConnectRequest } from './connect-helper';
import { ipv4Network, ipv6Network } from './network-prefixes';
import { PolicySpec, policyFileText, policySet, RuleSpec } from './policy-builder';
import { Prng } from './prng';

const SEEDS = [0x5191_0001, 0x5191_0002, 0x5191_0003, 0x5191_0004, 0x5191_0005, 0x5191_0006];
const POLICY_SETS_PER_SEED = 30;
const CONNECTS_PER_SUBJECT = 14;
const EPERM = 1;
const RECORD_TIMEOUT_MS = 10_000;

// Identities that share prefixes, so segment boundaries and trust domains matter. Helper i has
// identity id i + 1; the last helper has no identity.
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
const IDENTITIES: KnownIdentity[] = KNOWN_SPIFFE_IDS.map((spiffeId, index) => ({
  id: index + 1,
  spiffeId,
}));
const HELPER_COUNT = KNOWN_SPIFFE_IDS.length + 1;
// Named in policies but unknown to the kernel maps, so they compile to nothing.
const UNKNOWN_SPIFFE_IDS = ['spiffe://c.org/ns/web', 'spiffe://a.org/ns/gone'];
const PREFIXES = [
  'spiffe://a.org',
  'spiffe://a.org/ns',
  'spiffe://a.org/ns/web',
  'spiffe://a.org/ns/web/',
  'spiffe://b.org',
  'spiffe://c.org/ns',
];
const TRUST_DOMAINS = ['a.org', 'b.org', 'c.org'];

// Loopback listeners: every address is on lo in the test namespace.
const LISTEN_V4 = ['127.0.0.1', '127.0.0.2', '127.0.1.1', '127.10.20.30'];
const LISTEN_V6 = ['::1', 'fd00:5191::1', 'fd00:5191::2'];
const EXTRA_LO_ADDRESSES = ['fd00:5191::1', 'fd00:5191::2'];
const LISTEN_PORTS = [80, 443, 5432, 8080];
// Destinations that the kernel sends to another address before the connect programs see them.
const LOCAL_ALIASES = ['0.0.0.0', '::', '::ffff:0.0.0.0', '::ffff:127.0.0.1', '::ffff:127.0.0.2'];
// Destinations without a route in the test namespace: an allowed connect fails with ENETUNREACH.
const REMOTE_ADDRESSES = [
  '10.1.2.3',
  '10.1.2.4',
  '10.1.200.9',
  '192.168.1.20',
  '11.0.0.1',
  '::ffff:10.1.2.3',
  '2001:db8::1',
  '2001:db8::2',
  '2001:db8:1::5',
  '2001:db9::1',
];
const QUERY_PORTS = [0, 53, 80, 443, 1024, 1025, 5432, 8050, 8080, 9000, 65535];

const CIDR_V4_BASES = [
  '127.0.0.1',
  '127.0.0.2',
  '127.0.1.1',
  '10.1.2.3',
  '10.1.200.9',
  '192.168.1.20',
];
const CIDR_V4_LENGTHS = [0, 8, 16, 24, 30, 31, 32];
const CIDR_V6_BASES = ['::1', 'fd00:5191::1', 'fd00:5191::2', '2001:db8::1', '2001:db8:1::5'];
const CIDR_V6_LENGTHS = [0, 16, 32, 64, 126, 127, 128];
const SPECIAL_CIDRS = ['::/0', '::ffff:0:0/96', '::ffff:127.0.0.0/104', '0.0.0.0/0', '::/128'];
const RULE_PORTS: (number | string)[] = [
  53,
  80,
  443,
  5432,
  8080,
  9000,
  '8000-8100',
  '1-1024',
  '443-443',
  '5000-6000',
];

const ACTION_NAMES = ['None', 'Allow', 'Audit', 'Block'] as const;
const REASON_NAMES = ['no-policy', 'rule', 'posture'] as const;

/** One connect of one helper, with what the test expects the kernel to see. */
interface ConnectCase extends ConnectRequest {
  helper: number;
  /** Address the kernel decides on: an alias replaced by the address it reaches. */
  effectiveAddress: string;
  /** Index of the helper that owns the listener the connect reaches, or -1. */
  owner: number;
}

function spiffeIdOfHelper(helper: number): string | null {
  return helper < KNOWN_SPIFFE_IDS.length ? KNOWN_SPIFFE_IDS[helper] : null;
}

function idOfHelper(helper: number): number {
  return helper < KNOWN_SPIFFE_IDS.length ? helper + 1 : 0;
}

function randomCidr(prng: Prng): string {
  const kind = prng.int(0, 9);
  if (kind < 5) return ipv4Network(prng.pick(CIDR_V4_BASES), prng.pick(CIDR_V4_LENGTHS));
  if (kind < 8) return ipv6Network(prng.pick(CIDR_V6_BASES), prng.pick(CIDR_V6_LENGTHS));
  if (kind < 9) return prng.pick(CIDR_V4_BASES);
  return prng.pick(SPECIAL_CIDRS);
}

function randomRule(prng: Prng, name: string): RuleSpec {
  const rule: RuleSpec = { name, action: prng.pick(['Allow', 'Allow', 'Audit', 'Block']) };
  const destination = prng.next();
  if (destination < 0.35) {
    rule.to = prng.chance(0.6)
      ? { spiffeId: prng.pick([...KNOWN_SPIFFE_IDS, ...UNKNOWN_SPIFFE_IDS]) }
      : { spiffeIdPrefix: prng.pick(PREFIXES) };
  } else if (destination < 0.8) {
    rule.to = { cidrs: Array.from({ length: prng.int(1, 3) }, () => randomCidr(prng)) };
  }
  if (prng.chance(0.6)) {
    rule.ports = Array.from({ length: prng.int(1, 3) }, () => prng.pick(RULE_PORTS));
  }
  if (prng.chance(0.7)) rule.protocol = prng.pick(['TCP', 'UDP', 'Any']);
  return rule;
}

function randomSubject(prng: Prng): string {
  const kind = prng.next();
  if (kind < 0.45) return prng.pick([...KNOWN_SPIFFE_IDS, ...UNKNOWN_SPIFFE_IDS]);
  if (kind < 0.65) return `prefix:${prng.pick(PREFIXES)}`;
  if (kind < 0.8) return `trustDomain:${prng.pick(TRUST_DOMAINS)}`;
  return 'unidentified';
}

/** Returns the policy with new rules, posture and mode, and the same name, subject and rule count. */
function changedPolicy(prng: Prng, spec: PolicySpec): PolicySpec {
  const changed: PolicySpec = { name: spec.name, subject: spec.subject };
  if (prng.chance(0.15)) changed.mode = 'Audit';
  if (prng.chance(0.6)) changed.egressPosture = prng.pick(['Block', 'Audit']);
  changed.egress = (spec.egress ?? []).map((_, ruleIndex) => randomRule(prng, `rule-${ruleIndex}`));
  return changed;
}

/** Returns the set with one policy replaced by the policy of spec, parsed alone. */
function replacePolicy(set: PolicySet, index: number, spec: PolicySpec): PolicySet {
  const policies = set.policies.slice();
  policies[index] = policySet([spec], `changed-${index}.yaml`).policies[0];
  return { ...set, policies };
}

function randomPolicies(prng: Prng): PolicySpec[] {
  return Array.from({ length: prng.int(1, 6) }, (_, policyIndex) => {
    const spec: PolicySpec = { name: `policy-${policyIndex}`, subject: randomSubject(prng) };
    if (prng.chance(0.15)) spec.mode = 'Audit';
    if (prng.chance(0.6)) spec.egressPosture = prng.pick(['Block', 'Audit']);
    spec.egress = Array.from({ length: prng.int(0, 6) }, (_, ruleIndex) =>
      randomRule(prng, `rule-${ruleIndex}`),
    );
    return spec;
  });
}

/** Returns the listener owner of each (protocol, address, port), drawn once from a fixed seed. */
function listenerLayout(): Map<string, number> {
  const prng = new Prng(0x5191_0bad);
  const owners = new Map<string, number>();
  for (const protocol of ['TCP', 'UDP'] as const) {
    for (const address of [...LISTEN_V4, ...LISTEN_V6]) {
      for (const port of LISTEN_PORTS) {
        // About one in six stays unbound, so a connect there has no peer.
        const owner = prng.int(-1, HELPER_COUNT + 1);
        if (owner >= 0 && owner < HELPER_COUNT)
          owners.set(listenerKey(protocol, address, port), owner);
      }
    }
  }
  return owners;
}

function listenerKey(protocol: string, address: string, port: number): string {
  return `${protocol} ${formatAddress(encodeAddress(address))} ${port}`;
}

/**
 * Returns the address a connect to `address` reaches: Linux sends a connect to the unspecified
 * address to loopback (0.0.0.0 and ::ffff:0.0.0.0 to 127.0.0.1, :: to ::1).
 */
function kernelDestination(address: string): string {
  if (address === '0.0.0.0' || address === '::ffff:0.0.0.0') return '127.0.0.1';
  if (address === '::') return '::1';
  return address;
}

function randomCase(prng: Prng, helper: number, owners: Map<string, number>): ConnectCase {
  const protocol = prng.pick(['TCP', 'UDP'] as const);
  let address: string;
  let port: number;
  if (prng.chance(0.65)) {
    const aliased = prng.chance(0.2);
    address = aliased ? prng.pick(LOCAL_ALIASES) : prng.pick([...LISTEN_V4, ...LISTEN_V6]);
    port = prng.chance(0.85) ? prng.pick(LISTEN_PORTS) : prng.pick(QUERY_PORTS);
  } else {
    address = prng.pick(REMOTE_ADDRESSES);
    port = prng.pick(QUERY_PORTS);
  }
  const effectiveAddress = kernelDestination(address);
  const owner = owners.get(listenerKey(protocol, effectiveAddress, port)) ?? -1;
  return { helper, protocol, address, port, effectiveAddress, owner };
}

/** Returns the decision that a connect record describes, naming the rule by the rule table. */
function recordDecision(compiled: CompiledRuleSet, record: ConnectRecord): Decision {
  const decision: Decision = {
    action: ACTION_NAMES[record.action],
    reason: REASON_NAMES[record.reason],
    denied: record.denied,
  };
  if (record.reason === 1) {
    const rule = compiled.rules[record.ruleIndex];
    decision.policy = rule?.policy ?? `<no rule ${record.ruleIndex}>`;
    decision.rule = rule?.rule ?? `<no rule ${record.ruleIndex}>`;
  }
  return decision;
}

/** Returns the decision without wouldBlock, which the connect record does not carry. */
function comparable(decision: Decision): Omit<Decision, 'wouldBlock'> {
  const { wouldBlock: _wouldBlock, ...rest } = decision;
  return rest;
}

interface Mismatch {
  seed: string;
  setIndex: number;
  policies: string;
  operation: ConnectQuery & { helperPid: number; connectedAddress: string };
  expected: Decision;
  kernel: { errno: number; record: Decision | null; subjectId?: number; peerId?: number };
}

let work: string;
let cgroups: TestCgroups;
let datapath: Datapath;
let netns: string;
let helperBinary: string;
const helpers: ConnectHelper[] = [];
const records: ConnectRecord[] = [];

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('differential-kernel.test.ts must run as root');
  work = mkdtempSync(join(tmpdir(), 'sigil-difftest-'));
  helperBinary = buildConnectHelper(work);
  netns = `sigil-difftest-${process.pid}`;
  execFileSync('ip', ['netns', 'add', netns]);
  execFileSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  for (const address of EXTRA_LO_ADDRESSES) {
    execFileSync('ip', ['-n', netns, 'addr', 'add', `${address}/128`, 'dev', 'lo', 'nodad']);
  }
  cgroups = new TestCgroups('sigil-difftest');
  const cgroup = cgroups.create('subjects');

  datapath = Datapath.load();
  // As the agent does: the first set goes into empty maps published before it.
  datapath.prepareStandby();
  datapath.attachSocketPrograms(cgroup);
  datapath.startEvents((batch) => {
    for (const record of decodeBatch(batch)) {
      if (record.type === 'connect') records.push(record);
    }
  });

  for (let helper = 0; helper < HELPER_COUNT; helper++) {
    const started = await ConnectHelper.start(helperBinary, cgroup, `/run/netns/${netns}`);
    helpers.push(started);
    if (idOfHelper(helper) !== 0) datapath.setIdentity(started.pid, idOfHelper(helper));
  }
  for (const [key, owner] of listenerLayout()) {
    const [protocol, address, port] = key.split(' ');
    await helpers[owner].listen(protocol as 'TCP' | 'UDP', address, Number(port));
  }
});

afterAll(() => {
  for (const helper of helpers) helper.stop();
  datapath?.close();
  cgroups?.remove(['subjects']);
  if (netns) execFileSync('ip', ['netns', 'del', netns]);
  if (work) rmSync(work, { recursive: true, force: true });
});

/**
 * Applies a compilation as the agent does, with only the changed entries where the compiler
 * returned changes, and prepares the standby maps for the next apply.
 */
function apply(compilation: EgressCompilation): number {
  const flags = SETTINGS_EMIT_ALL_CONNECTS;
  const generation =
    compilation.changes && datapath.canApplyChanges
      ? datapath.applyRuleSetChanges(toKernelChanges(compilation.changes), flags)
      : datapath.applyRuleSet(toKernelRuleSet(compilation.compiled), flags);
  datapath.prepareStandby();
  return generation;
}

/** Runs every case of one applied rule set and returns the mismatches. */
async function runSet(
  seed: number,
  setIndex: number,
  set: PolicySet,
  specs: PolicySpec[],
  compilation: EgressCompilation,
  cases: ConnectCase[][],
): Promise<Mismatch[]> {
  const compiled = compilation.compiled;
  const generation = apply(compilation);
  records.length = 0;
  const errnos = await Promise.all(helpers.map((helper, index) => helper.connect(cases[index])));
  const total = cases.reduce((sum, list) => sum + list.length, 0);
  await waitFor(
    `${total} connect records of generation ${generation}`,
    () => (records.length >= total ? true : undefined),
    RECORD_TIMEOUT_MS,
  );

  const recordsByTgid = new Map<number, ConnectRecord[]>();
  for (const record of records) {
    const list = recordsByTgid.get(record.tgid) ?? [];
    list.push(record);
    recordsByTgid.set(record.tgid, list);
  }

  const mismatches: Mismatch[] = [];
  helpers.forEach((helper, index) => {
    const helperRecords = recordsByTgid.get(helper.pid) ?? [];
    cases[index].forEach((testCase, caseIndex) => {
      const owner = testCase.owner;
      const query: ConnectQuery = {
        subject: spiffeIdOfHelper(index),
        peer: owner >= 0 ? spiffeIdOfHelper(owner) : null,
        address: testCase.address,
        port: testCase.port,
        protocol: testCase.protocol,
      };
      const expected = decideConnect(set, query);
      const errno = errnos[index][caseIndex];
      const record = helperRecords[caseIndex];
      const expectedAddress = formatAddress(encodeAddress(testCase.effectiveAddress));
      const kernelDecision = record ? recordDecision(compiled, record) : null;
      const agrees =
        record !== undefined &&
        (errno === EPERM) === expected.denied &&
        JSON.stringify(kernelDecision) === JSON.stringify(comparable(expected)) &&
        record.generation === generation &&
        record.subjectId === idOfHelper(index) &&
        record.peerId === (owner >= 0 ? idOfHelper(owner) : 0) &&
        record.port === testCase.port &&
        record.address === expectedAddress &&
        record.protocol === (testCase.protocol === 'TCP' ? 6 : 17);
      if (!agrees) {
        mismatches.push({
          seed: `0x${seed.toString(16)}`,
          setIndex,
          policies: policyFileText(specs),
          operation: { ...query, helperPid: helper.pid, connectedAddress: testCase.address },
          expected,
          kernel: {
            errno,
            record: kernelDecision,
            subjectId: record?.subjectId,
            peerId: record?.peerId,
          },
        });
      }
    });
    if (helperRecords.length !== cases[index].length) {
      throw new Error(
        `helper ${helper.pid}: ${helperRecords.length} connect records for ` +
          `${cases[index].length} connects (seed 0x${seed.toString(16)}, set ${setIndex})`,
      );
    }
  });
  return mismatches;
}

describe('egress decisions of the kernel against decideConnect', () => {
  // Found by the random cases: decideConnect matched rules against 0.0.0.0 and ::, but the
  // kernel connects to loopback and the connect programs decide on loopback.
  it('decides a connect to the unspecified address as loopback', async () => {
    const helper = 1;
    const specs: PolicySpec[] = [
      {
        name: 'unspecified',
        subject: KNOWN_SPIFFE_IDS[helper],
        egress: [
          { name: 'unspecified', action: 'Allow', to: { cidrs: ['0.0.0.0/32', '::/128'] } },
          { name: 'v4-loopback', action: 'Block', to: { cidrs: ['127.0.0.1/32'] } },
          { name: 'v6-loopback', action: 'Block', to: { cidrs: ['::1/128'] } },
        ],
      },
    ];
    const set = policySet(specs);
    const owners = listenerLayout();
    const requests: ConnectRequest[] = [
      { protocol: 'TCP', address: '0.0.0.0', port: 80 },
      { protocol: 'TCP', address: '::ffff:0.0.0.0', port: 443 },
      { protocol: 'TCP', address: '::', port: 5432 },
      { protocol: 'UDP', address: '0.0.0.0', port: 8080 },
      { protocol: 'UDP', address: '::', port: 9000 },
    ];
    const cases = helpers.map((_, index) =>
      index !== helper
        ? []
        : requests.map((request) => {
            const effectiveAddress = kernelDestination(request.address);
            const key = listenerKey(request.protocol, effectiveAddress, request.port);
            return { ...request, helper, effectiveAddress, owner: owners.get(key) ?? -1 };
          }),
    );
    const compilation = new EgressCompiler().compile(set, IDENTITIES);
    const mismatches = await runSet(0, 0, set, specs, compilation, cases);
    expect(mismatches).toEqual([]);
    const denied = requests.map(
      (request) =>
        decideConnect(set, { subject: KNOWN_SPIFFE_IDS[helper], peer: null, ...request }).denied,
    );
    expect(denied).toEqual(requests.map(() => true));
  });

  it.each(SEEDS.map((seed) => [`0x${seed.toString(16)}`, seed]))(
    'agrees on random policy sets, seed %s',
    async (_name, seed) => {
      const prng = new Prng(seed);
      const owners = listenerLayout();
      const mismatches: Mismatch[] = [];
      const counts = {
        sets: 0,
        changedSets: 0,
        wholeChangeSets: 0,
        skipped: 0,
        connects: 0,
        denied: 0,
        rule: 0,
        posture: 0,
        peer: 0,
      };
      const compiler = new EgressCompiler();
      let previous: { specs: PolicySpec[]; set: PolicySet } | null = null;

      for (let setIndex = 0; setIndex < POLICY_SETS_PER_SEED; setIndex++) {
        // Every other set changes one policy of the previous set, which the compiler and the
        // datapath apply as changed entries only.
        const changeOne: boolean = previous !== null && setIndex % 2 === 1;
        const specs: PolicySpec[] = changeOne ? previous!.specs.slice() : randomPolicies(prng);
        const changedIndex = changeOne ? prng.int(0, specs.length - 1) : -1;
        if (changeOne) specs[changedIndex] = changedPolicy(prng, specs[changedIndex]);
        const cases = helpers.map((_, helper) =>
          Array.from({ length: CONNECTS_PER_SUBJECT }, () => randomCase(prng, helper, owners)),
        );
        let set: PolicySet;
        let compilation: EgressCompilation;
        try {
          set = changeOne
            ? replacePolicy(previous!.set, changedIndex, specs[changedIndex])
            : policySet(specs);
          compilation = compiler.compile(set, IDENTITIES);
        } catch (error) {
          // Contradictory rules (a load error) and overflowing lists are valid outcomes.
          if (!(error instanceof ConfigError) && !(error instanceof RuleListOverflowError)) {
            throw error;
          }
          counts.skipped++;
          continue;
        }
        counts.sets++;
        // A whole compile after the first also returns changes, written through the standby maps.
        if (compilation.incremental) counts.changedSets++;
        else if (compilation.changes) counts.wholeChangeSets++;
        previous = { specs, set };
        mismatches.push(...(await runSet(seed, setIndex, set, specs, compilation, cases)));
        for (const [index, list] of cases.entries()) {
          for (const testCase of list) {
            counts.connects++;
            if (testCase.owner >= 0 && idOfHelper(testCase.owner) !== 0) counts.peer++;
            const decision = decideConnect(set, {
              subject: spiffeIdOfHelper(index),
              peer: testCase.owner >= 0 ? spiffeIdOfHelper(testCase.owner) : null,
              address: testCase.address,
              port: testCase.port,
              protocol: testCase.protocol,
            });
            if (decision.denied) counts.denied++;
            if (decision.reason === 'rule') counts.rule++;
            if (decision.reason === 'posture') counts.posture++;
          }
        }
      }

      for (const mismatch of mismatches.slice(0, 3)) {
        console.error(`kernel and decideConnect disagree:\n${JSON.stringify(mismatch, null, 2)}`);
      }
      console.log(`seed 0x${seed.toString(16)}: ${JSON.stringify(counts)}`);
      expect(mismatches.slice(0, 3)).toEqual([]);
      expect(mismatches.length).toBe(0);
      // Guard against a generator that stops producing interesting cases.
      expect(counts.sets).toBeGreaterThan(POLICY_SETS_PER_SEED * 0.8);
      expect(counts.changedSets).toBeGreaterThan(POLICY_SETS_PER_SEED * 0.3);
      expect(counts.wholeChangeSets).toBeGreaterThan(POLICY_SETS_PER_SEED * 0.3);
      expect(counts.denied).toBeGreaterThan(counts.connects * 0.05);
      expect(counts.rule).toBeGreaterThan(counts.connects * 0.1);
      expect(counts.posture).toBeGreaterThan(counts.connects * 0.05);
      expect(counts.peer).toBeGreaterThan(counts.connects * 0.2);
    },
  );
});
