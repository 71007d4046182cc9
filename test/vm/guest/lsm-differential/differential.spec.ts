// Runs in the test VM (Linux 6.1 with BPF LSM). Differential test of exec and file decisions:
// the kernel's BPF LSM programs against decideExec and decideOpen. Seeded random policy sets
// with process and file rules are compiled with compileLsmPolicySet and applied with
// Datapath.applyRuleSet and the LSM enforcer's publish step, as the agent applies them. One
// subject process per identity then runs execve() and open() on a fixed file tree. For every
// operation, EPERM or success and the kernel's decision records (action, reason, rule) must
// match the user-space decision. Fails, never skips, when the kernel or an object is missing.
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Datapath, KernelRuleSet, removePinnedState } from '../../../../src/kernel/datapath';
import { SETTINGS_REPORT_ALLOWED_ACCESS } from '../../../../src/kernel/layout';
import { batchRecords } from '../../../../src/kernel/native';
import { decodeLsmRecord, LsmRecord } from '../../../../src/kernel/lsm-layout';
import {
  ensureLsmHashSeed,
  LsmMapFds,
  lsmMapFds,
  openLsmObject,
  publishLsmRuleSet,
  retireLsmRuleSet,
} from '../../../../src/kernel/lsm-maps';
import { BpfObject, Link } from '../../../../src/kernel/native';
import { KnownIdentity } from '../../../../src/policy/compile';
import { compileLsmPolicySet, LsmPolicyCompilation } from '../../../../src/policy/compile-lsm';
import { Decision, decideExec, decideOpen } from '../../../../src/policy/decide';
import { PolicySet } from '../../../../src/policy/types';
import { ConfigError } from '../../../../src/util/config-error';
import {
  PathRuleSpec,
  PolicySpec,
  policyFileText,
  policySet,
} from '../../../policy/policy-builder';
import { Prng } from '../../../policy/prng';

const PROJECT_ROOT = path.join(__dirname, '..', '..', '..', '..');
const MAIN_OBJECT = path.join(PROJECT_ROOT, 'bpf', '.output', 'sigil.bpf.o');
const LSM_OBJECT = path.join(PROJECT_ROOT, 'bpf', '.output', 'sigil-lsm.bpf.o');
const SUBJECT_SCRIPT = path.join(__dirname, 'subject.js');
const PIN_DIR = '/sys/fs/bpf/sigil-lsm-differential';
const BUSYBOX = '/bin/busybox';
const ROOT = '/tmp/sigil-lsm-diff';
const RECORD_TIMEOUT_MS = 10_000;
const REPLY_TIMEOUT_MS = 60_000;

const SEEDS = [0x5191_1001, 0x5191_1002];
const POLICY_SETS_PER_SEED = 10;
const OPERATIONS_PER_SUBJECT = 8;
// Only the exec and file hooks: the socket hooks would decide connects, which this test makes none of.
const PROGRAMS = ['sigil_lsm_bprm_check', 'sigil_lsm_file_open'];

const KNOWN_SPIFFE_IDS = [
  'spiffe://a.org/ns/web',
  'spiffe://a.org/ns/web/canary',
  'spiffe://a.org/ns/api',
  'spiffe://b.org/x',
];
const IDENTITIES: KnownIdentity[] = KNOWN_SPIFFE_IDS.map((spiffeId, index) => ({
  id: index + 1,
  spiffeId,
}));
// Helper i has identity id i + 1; the last helper has no identity.
const HELPER_COUNT = KNOWN_SPIFFE_IDS.length + 1;
const SUBJECTS = [
  ...KNOWN_SPIFFE_IDS,
  'spiffe://c.org/gone',
  'prefix:spiffe://a.org/ns',
  'prefix:spiffe://a.org/ns/web',
  'trustDomain:a.org',
  'trustDomain:b.org',
  'unidentified',
];

// The file tree: busybox copies named `true` to execute, and data files to open.
const BINARIES = [
  'bin/true',
  'bin/sub/true',
  'opt/app/true',
  'opt/app/tools/true',
  'opt/other/true',
];
const DATA_FILES = [
  'etc/app.conf',
  'etc/app/main.conf',
  'etc/app/conf.d/extra.conf',
  'var/log/app.log',
  'var/log/archive/old.log',
  'srv/data.txt',
  'opt/app/README',
];
const DIRECTORIES = [
  '',
  'bin',
  'bin/sub',
  'opt',
  'opt/app',
  'opt/app/tools',
  'etc',
  'etc/app',
  'var',
  'var/log',
  'srv',
];
// Named in rules but never created, so the compiler skips them with a warning.
const MISSING_FILES = ['etc/missing.conf', 'bin/missing'];

const ACTION_NAMES = ['None', 'Allow', 'Audit', 'Block'] as const;
const REASON_NAMES = ['no-policy', 'rule', 'posture'] as const;

function rooted(relative: string): string {
  return relative === '' ? ROOT : `${ROOT}/${relative}`;
}

/** One operation of one subject. */
type Operation =
  { op: 'exec'; path: string } | { op: 'open'; path: string; write: boolean; directory: boolean };

interface OperationResult {
  code: string | null;
}

/** A subject process (subject.js) and its request channel. */
class Subject {
  private readonly pending: ((line: string) => void)[] = [];
  private buffered = '';
  private stderr = '';

  constructor(readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.on('data', (chunk: Buffer) => {
      this.buffered += chunk.toString();
      let newline: number;
      while ((newline = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, newline);
        this.buffered = this.buffered.slice(newline + 1);
        this.pending.shift()?.(line);
      }
    });
    child.stderr.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
  }

  get pid(): number {
    return this.child.pid!;
  }

  next(request: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(new Error(`subject ${this.pid}: no reply to ${request}; stderr: ${this.stderr}`)),
        REPLY_TIMEOUT_MS,
      );
      this.pending.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
  }

  async run(operations: Operation[]): Promise<OperationResult[]> {
    const reply = this.next(`${operations.length} operations`);
    this.child.stdin.write(`${JSON.stringify(operations)}\n`);
    return JSON.parse(await reply) as OperationResult[];
  }

  stop(): void {
    this.child.stdin.end();
    this.child.kill();
  }
}

async function startSubject(): Promise<Subject> {
  const child = spawn(process.execPath, [SUBJECT_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
  const subject = new Subject(child);
  const ready = JSON.parse(await subject.next('start')) as { ready?: boolean; pid?: number };
  if (!ready.ready || ready.pid !== child.pid) {
    throw new Error(`subject.js reported ${JSON.stringify(ready)}`);
  }
  return subject;
}

function makeFixtures(): void {
  rmSync(ROOT, { recursive: true, force: true });
  for (const directory of DIRECTORIES) mkdirSync(rooted(directory), { recursive: true });
  for (const binary of BINARIES) {
    mkdirSync(path.dirname(rooted(binary)), { recursive: true });
    copyFileSync(BUSYBOX, rooted(binary));
  }
  for (const file of DATA_FILES) {
    mkdirSync(path.dirname(rooted(file)), { recursive: true });
    writeFileSync(rooted(file), `contents of ${file}\n`);
  }
}

function randomPathRule(prng: Prng, name: string, kind: 'process' | 'file'): PathRuleSpec {
  const action = prng.pick(['Allow', 'Allow', 'Audit', 'Block']);
  const rule: PathRuleSpec = { name, action };
  const files = kind === 'process' ? BINARIES : [...DATA_FILES, ...BINARIES];
  if (prng.chance(0.6)) {
    rule.paths = Array.from({ length: prng.int(1, 2) }, () =>
      rooted(prng.chance(0.1) ? prng.pick(MISSING_FILES) : prng.pick(files)),
    );
  }
  if (!rule.paths || prng.chance(0.3)) {
    rule.directories = Array.from({ length: prng.int(1, 2) }, () => rooted(prng.pick(DIRECTORIES)));
    if (prng.chance(0.5)) rule.recursive = true;
  }
  // readOnly with Block is a load error: Block already denies both.
  if (kind === 'file' && action !== 'Block' && prng.chance(0.3)) rule.readOnly = true;
  return rule;
}

function randomPolicies(prng: Prng): PolicySpec[] {
  return Array.from({ length: prng.int(1, 4) }, (_, policyIndex) => {
    const spec: PolicySpec = { name: `policy-${policyIndex}`, subject: prng.pick(SUBJECTS) };
    if (prng.chance(0.15)) spec.mode = 'Audit';
    if (prng.chance(0.6)) spec.processPosture = prng.pick(['Block', 'Audit']);
    if (prng.chance(0.6)) spec.filePosture = prng.pick(['Block', 'Audit']);
    spec.process = Array.from({ length: prng.int(0, 3) }, (_, index) =>
      randomPathRule(prng, `exec-${index}`, 'process'),
    );
    spec.file = Array.from({ length: prng.int(0, 3) }, (_, index) =>
      randomPathRule(prng, `file-${index}`, 'file'),
    );
    return spec;
  });
}

function randomOperation(prng: Prng): Operation {
  const kind = prng.next();
  if (kind < 0.35) return { op: 'exec', path: rooted(prng.pick(BINARIES)) };
  if (kind < 0.85) {
    return {
      op: 'open',
      path: rooted(prng.pick([...DATA_FILES, ...BINARIES])),
      write: prng.chance(0.4),
      directory: false,
    };
  }
  return { op: 'open', path: rooted(prng.pick(DIRECTORIES)), write: false, directory: true };
}

function spiffeIdOfHelper(helper: number): string | null {
  return helper < KNOWN_SPIFFE_IDS.length ? KNOWN_SPIFFE_IDS[helper] : null;
}

function idOfHelper(helper: number): number {
  return helper < KNOWN_SPIFFE_IDS.length ? helper + 1 : 0;
}

let datapath: Datapath | undefined;
let lsm: BpfObject | undefined;
let lsmMaps: LsmMapFds;
const links: Link[] = [];
const helpers: Subject[] = [];
const records: LsmRecord[] = [];

/**
 * Applies the exec and file rules with an empty egress rule set, as the agent's hooks do. Allowed
 * execs and opens are reported too, so every decision has a record to compare.
 */
function applyLsmRules(compiled: LsmPolicyCompilation): number {
  const egress: KernelRuleSet = { subjects: [], peerRules: [], cidrRules: [] };
  return datapath!.applyRuleSet(egress, SETTINGS_REPORT_ALLOWED_ACCESS, {
    beforeSwitch: (generation) => publishLsmRuleSet(lsmMaps, generation, compiled.ruleSet),
    afterSwitch: (_generation, previous) => {
      if (previous !== 0) retireLsmRuleSet(lsmMaps, previous);
    },
  });
}

/** Returns the decision a record reports, naming the rule by the LSM rule table. */
function recordDecision(compiled: LsmPolicyCompilation, record: LsmRecord): Decision {
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

/** Returns the decision without wouldBlock, which the records do not carry. */
function comparable(decision: Decision): Decision {
  const { wouldBlock: _wouldBlock, ...rest } = decision;
  return rest;
}

/** A decision record that an operation must produce. */
interface ExpectedRecord {
  type: 'exec-decision' | 'file-decision';
  subjectId: number;
  path: string;
  writeIntent: boolean;
  execOpen: boolean;
  decision: Decision;
}

function recordMatches(record: LsmRecord, expected: ExpectedRecord): boolean {
  if (record.type !== expected.type) return false;
  if (record.subjectId !== expected.subjectId || record.path !== expected.path) return false;
  if (record.type === 'exec-decision') return true;
  return record.writeIntent === expected.writeIntent && record.execOpen === expected.execOpen;
}

/**
 * Returns the records an operation must produce and whether the kernel must deny it. An
 * execve() opens the program first (file_open, a read with __FMODE_EXEC), so the file rules
 * decide that open, and bprm_check_security runs only when the open was allowed. A process
 * without an identity gets a record only for a decision by a rule or a posture.
 */
function expectations(
  set: PolicySet,
  subject: string | null,
  subjectId: number,
  operation: Operation,
): { denied: boolean; records: ExpectedRecord[] } {
  const recorded = (decision: Decision) => subjectId !== 0 || decision.reason !== 'no-policy';
  const expected: ExpectedRecord[] = [];
  if (operation.op === 'open') {
    const decision = decideOpen(set, {
      subject,
      path: operation.path,
      write: operation.write,
      directory: operation.directory,
    });
    if (recorded(decision)) {
      expected.push({
        type: 'file-decision',
        subjectId,
        path: operation.path,
        writeIntent: operation.write,
        execOpen: false,
        decision,
      });
    }
    return { denied: decision.denied, records: expected };
  }
  const open = decideOpen(set, { subject, path: operation.path, write: false });
  if (recorded(open)) {
    expected.push({
      type: 'file-decision',
      subjectId,
      path: operation.path,
      writeIntent: false,
      execOpen: true,
      decision: open,
    });
  }
  if (open.denied) return { denied: true, records: expected };
  const exec = decideExec(set, { subject, path: operation.path });
  if (recorded(exec)) {
    expected.push({
      type: 'exec-decision',
      subjectId,
      path: operation.path,
      writeIntent: false,
      execOpen: false,
      decision: exec,
    });
  }
  return { denied: exec.denied, records: expected };
}

/**
 * Waits until every expected record of the generation has arrived and returns them, matched in
 * order, with undefined for a record that did not arrive in time.
 */
async function matchRecords(
  expected: ExpectedRecord[],
  generation: number,
): Promise<(LsmRecord | undefined)[]> {
  const deadline = Date.now() + RECORD_TIMEOUT_MS;
  for (;;) {
    const used = new Set<number>();
    const found = expected.map((want) => {
      const index = records.findIndex(
        (record, at) =>
          !used.has(at) && record.generation === generation && recordMatches(record, want),
      );
      if (index < 0) return undefined;
      used.add(index);
      return records[index];
    });
    if (found.every((record) => record !== undefined) || Date.now() > deadline) return found;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

interface Mismatch {
  seed: string;
  setIndex: number;
  policies: string;
  subject: string | null;
  operation: Operation;
  expected: unknown;
  kernel: unknown;
}

/** The rule set that a batch of operations runs under, for the checks and the mismatch report. */
interface SetContext {
  seed: number;
  setIndex: number;
  set: PolicySet;
  specs: PolicySpec[];
  compiled: LsmPolicyCompilation;
  generation: number;
}

/** Tallies of the operations that ran, so a test can tell that its cases are varied. */
interface Counts {
  operations: number;
  execs: number;
  denied: number;
  rule: number;
  posture: number;
}

/**
 * Runs the operations in one helper and returns those where the kernel's verdict or records
 * differ from the user-space decisions.
 */
async function runOperations(
  context: SetContext,
  helper: number,
  operations: Operation[],
  counts: Counts,
): Promise<Mismatch[]> {
  const { set, compiled, generation } = context;
  const results = await helpers[helper].run(operations);
  const spiffeId = spiffeIdOfHelper(helper);
  const subjectId = idOfHelper(helper);
  const expected = operations.map((operation) => expectations(set, spiffeId, subjectId, operation));
  const found = await matchRecords(
    expected.flatMap((entry) => entry.records),
    generation,
  );
  const mismatches: Mismatch[] = [];
  let next = 0;
  operations.forEach((operation, index) => {
    const { denied, records: expectedRecords } = expected[index];
    const kernelRecords = found.slice(next, next + expectedRecords.length);
    next += expectedRecords.length;
    counts.operations++;
    if (operation.op === 'exec') counts.execs++;
    if (denied) counts.denied++;
    const last = expectedRecords.at(-1)?.decision;
    if (last?.reason === 'rule') counts.rule++;
    if (last?.reason === 'posture') counts.posture++;

    const kernelDecisions = kernelRecords.map((record) =>
      record ? recordDecision(compiled, record) : null,
    );
    const expectedDecisions = expectedRecords.map((entry) => comparable(entry.decision));
    const agrees =
      (results[index].code === 'EPERM') === denied &&
      JSON.stringify(kernelDecisions) === JSON.stringify(expectedDecisions);
    if (!agrees) {
      mismatches.push({
        seed: `0x${context.seed.toString(16)}`,
        setIndex: context.setIndex,
        policies: policyFileText(context.specs),
        subject: spiffeId,
        operation,
        expected: { denied, records: expectedDecisions },
        kernel: { code: results[index].code, records: kernelDecisions },
      });
    }
  });
  return mismatches;
}

/** Compiles and applies a policy set and returns the context to run operations under. */
function applySet(seed: number, setIndex: number, specs: PolicySpec[]): SetContext {
  const set = policySet(specs);
  const compiled = compileLsmPolicySet(set, IDENTITIES);
  const generation = applyLsmRules(compiled);
  records.length = 0;
  return { seed, setIndex, set, specs, compiled, generation };
}

beforeAll(async () => {
  const lsms = readFileSync('/sys/kernel/security/lsm', 'utf8').trim().split(',');
  if (!lsms.includes('bpf')) {
    throw new Error(`BPF LSM is not active: /sys/kernel/security/lsm lists ${lsms}`);
  }
  for (const object of [MAIN_OBJECT, LSM_OBJECT]) {
    if (!existsSync(object)) throw new Error(`${object} not found: run make`);
  }
  makeFixtures();
  removePinnedState(PIN_DIR);
  datapath = Datapath.load(MAIN_OBJECT, PIN_DIR);
  datapath.attachProcessTracking();
  datapath.startEvents((batch) => {
    for (const record of batchRecords(batch)) {
      const decoded = decodeLsmRecord(record);
      if (decoded) records.push(decoded);
    }
  });
  lsm = openLsmObject(path.join(PIN_DIR, 'maps'), LSM_OBJECT);
  lsmMaps = lsmMapFds(lsm);
  ensureLsmHashSeed(lsmMaps);
  for (const program of PROGRAMS) links.push(lsm.attach(program));
  for (let helper = 0; helper < HELPER_COUNT; helper++) {
    const subject = await startSubject();
    helpers.push(subject);
    if (idOfHelper(helper) !== 0) datapath.setIdentity(subject.pid, idOfHelper(helper));
  }
});

afterAll(() => {
  for (const helper of helpers) helper.stop();
  for (const link of links.splice(0)) link.destroy();
  lsm?.close();
  datapath?.close();
  // The process-tracking links are pinned: removing the pins detaches them.
  removePinnedState(PIN_DIR);
});

describe('exec and file decisions of BPF LSM against decideExec and decideOpen', () => {
  // Found by the random cases: an Allow rule whose only path was missing compiled to no map
  // entry, so the kernel dropped the subject's Block posture and allowed every exec and open.
  it.each<[string, Partial<PolicySpec>]>([
    [
      'process',
      {
        processPosture: 'Block',
        process: [{ name: 'app', action: 'Allow', paths: [rooted(MISSING_FILES[1])] }],
      },
    ],
    [
      'file',
      {
        filePosture: 'Block',
        file: [{ name: 'config', action: 'Allow', paths: [rooted(MISSING_FILES[0])] }],
      },
    ],
  ])('keeps the %s posture of a missing Allow path', async (kind, rules) => {
    const helper = 0;
    const specs: PolicySpec[] = [
      { name: 'allowlist', subject: KNOWN_SPIFFE_IDS[helper], ...rules },
    ];
    const context = applySet(0, 0, specs);
    const operations: Operation[] = [
      { op: 'exec', path: rooted(BINARIES[0]) },
      { op: 'open', path: rooted(DATA_FILES[0]), write: false, directory: false },
    ];
    const counts = { operations: 0, execs: 0, denied: 0, rule: 0, posture: 0 };
    const mismatches = await runOperations(context, helper, operations, counts);
    expect(mismatches).toEqual([]);
    const results = await helpers[helper].run(operations);
    // An exec opens the program first, so a file posture denies the exec too.
    expect(results[0].code).toBe('EPERM');
    expect(results[1].code).toBe(kind === 'file' ? 'EPERM' : null);
  });

  it.each(SEEDS.map((seed) => [`0x${seed.toString(16)}`, seed]))(
    'agrees on random policy sets, seed %s',
    async (_name, seed) => {
      const prng = new Prng(seed);
      const mismatches: Mismatch[] = [];
      const counts = {
        sets: 0,
        skipped: 0,
        operations: 0,
        execs: 0,
        denied: 0,
        rule: 0,
        posture: 0,
      };

      for (let setIndex = 0; setIndex < POLICY_SETS_PER_SEED; setIndex++) {
        const specs = randomPolicies(prng);
        const operations = helpers.map(() =>
          Array.from({ length: OPERATIONS_PER_SUBJECT }, () => randomOperation(prng)),
        );
        let context: SetContext;
        try {
          context = applySet(seed, setIndex, specs);
        } catch (error) {
          // Contradictory rules are a load error, a valid outcome.
          if (!(error instanceof ConfigError)) throw error;
          counts.skipped++;
          continue;
        }
        counts.sets++;
        for (const helper of helpers.keys()) {
          mismatches.push(...(await runOperations(context, helper, operations[helper], counts)));
        }
      }

      for (const mismatch of mismatches.slice(0, 3)) {
        console.error(`BPF LSM and user space disagree:\n${JSON.stringify(mismatch, null, 2)}`);
      }
      console.log(`seed 0x${seed.toString(16)}: ${JSON.stringify(counts)}`);
      expect(mismatches.slice(0, 3)).toEqual([]);
      expect(mismatches.length).toBe(0);
      // Guard against a generator that stops producing interesting cases.
      expect(counts.sets).toBeGreaterThan(POLICY_SETS_PER_SEED * 0.7);
      expect(counts.denied).toBeGreaterThan(counts.operations * 0.05);
      expect(counts.rule).toBeGreaterThan(counts.operations * 0.1);
      expect(counts.posture).toBeGreaterThan(counts.operations * 0.05);
    },
  );
});
