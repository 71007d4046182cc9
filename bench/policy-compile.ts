/**
 * Measures compiling and applying a large egress rule set: 10,000 rules over 1,000 identities,
 * compiled and written into the kernel maps of a loaded BPF object (root, after `make`).
 *
 * Run: npx vite-node bench/policy-compile.ts [--runs N]
 *
 * Each measurement is repeated (15 runs by default, after 3 warm-up runs) and reported as
 * median, minimum and maximum. The baseline is a deep copy of the same loaded policy set by
 * structuredClone, measured in the same run, so the ratios compare with the cost of visiting
 * every object of the set once on this machine. Datapath.prepareStandby, which the agent runs
 * after each switch, runs between the runs of every apply, outside the measured time.
 *
 * - first apply: compilePolicySet, then Datapath.applyRuleSet, which writes every entry into
 *   empty inner maps, until the new generation is in force. As in the agent, every run has a
 *   newly loaded Datapath whose prepareStandby published the empty maps beforehand. Without
 *   such maps (the agent's path after a failed apply), applyRuleSet creates and publishes its
 *   own, which the line "applyRuleSet, maps not prepared" measures.
 * - reload: EgressCompiler.compile of the whole set, then Datapath.applyRuleSetChanges with the
 *   entries that changed, written into the standby maps. The runs alternate between two sets
 *   that differ in every rule's port (every peer and CIDR entry changes), or between the
 *   identities with and without one more identity in a namespace.
 * - one changed policy: the parse of the changed document, EgressCompiler.compile (which
 *   compiles only the subjects of that policy), and Datapath.applyRuleSetChanges. The runs
 *   alternate between two versions of the document.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { toKernelChanges, toKernelRuleSet } from '../src/enforce/agent';
import { Datapath } from '../src/kernel/datapath';
import { encodeRuleSet } from '../src/kernel/rule-maps';
import { compilePolicySet, KnownIdentity } from '../src/policy/compile';
import { peerRuleCount } from '../src/policy/compiled-rule-set';
import { EgressCompiler } from '../src/policy/egress-compiler';
import { loadPolicyFiles, parsePolicies, parsePolicySet, PolicyFileCache } from '../src/policy/loader';
import { PolicySet } from '../src/policy/types';
import { buildDocuments, identities } from './policy-set';

const WARM_UP_RUNS = 3;

const runsArgument = process.argv.indexOf('--runs');
const RUNS = runsArgument > 0 ? Number(process.argv[runsArgument + 1]) : 15;

interface Timing {
  median: number;
  min: number;
  max: number;
  /**
   * Median CPU time (user and system) of this process in the runs, in milliseconds. Unlike the
   * elapsed time, it leaves out the time that other processes on the machine take, and the
   * waits for RCU grace periods.
   */
  cpuMedian?: number;
}

/** Returns the duration of work in milliseconds. */
function timed(work: () => unknown): number {
  const start = performance.now();
  work();
  return performance.now() - start;
}

/** Returns the CPU time of this process during work, in milliseconds. */
function cpuTimed(work: () => unknown): number {
  const start = process.cpuUsage();
  work();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}

/**
 * Runs work repeatedly and returns its durations in milliseconds. `between` runs after every
 * run, outside the measured time.
 */
function measure(work: () => unknown, between: () => void = () => {}): Timing {
  for (let run = 0; run < WARM_UP_RUNS; run++) {
    work();
    between();
  }
  const durations: number[] = [];
  const cpuTimes: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    let elapsed = 0;
    cpuTimes.push(cpuTimed(() => (elapsed = timed(work))));
    durations.push(elapsed);
    between();
  }
  return { ...summarise(durations), cpuMedian: summarise(cpuTimes).median };
}

function summarise(durations: number[]): Timing {
  const sorted = [...durations].sort((a, b) => a - b);
  return {
    median: sorted[Math.floor(sorted.length / 2)],
    min: sorted[0],
    max: sorted.at(-1)!,
  };
}

function format(timing: Timing): string {
  const cpu = timing.cpuMedian === undefined ? '' : `, CPU ${timing.cpuMedian.toFixed(2)} ms`;
  return `median ${timing.median.toFixed(2)} ms (min ${timing.min.toFixed(2)}, max ${timing.max.toFixed(2)})${cpu}`;
}

/** Returns the documents with every rule's port moved by 1,000, which changes every kernel list. */
function movePorts(documents: readonly string[]): string[] {
  return documents.map((document) =>
    document.replace(/ports: \[(\d+)\]/g, (_match, port: string) => `ports: [${Number(port) + 1000}]`),
  );
}

function main(): void {
  if (process.getuid?.() !== 0) throw new Error('bench/policy-compile.ts must run as root');
  const documents = buildDocuments();
  const text = documents.join('---\n');
  const set = parsePolicySet(text, 'bench.yaml');
  const movedSet = parsePolicySet(movePorts(documents).join('---\n'), 'bench.yaml');
  const known = identities();
  // One more service in namespace 0, which the namespace policy selects and its prefix rules name.
  const moreKnown = [...known, { id: known.length + 1, spiffeId: 'spiffe://bench.example/ns/0/svc-new' }];
  const ruleCount = set.policies.reduce((sum, policy) => sum + policy.egress.length, 0);
  const compiled = compilePolicySet(set, known);
  const datapath = Datapath.load();

  // The changed policy: the posture of one service flips, and one rule's port moves.
  const changedIndex = Math.floor(documents.length / 2);
  const versions = [
    documents[changedIndex],
    documents[changedIndex]
      .replace('egressPosture: Block', 'egressPosture: Audit')
      .replace('ports: [1000]', 'ports: [2000]'),
  ];
  const withVersion = (version: number): PolicySet => {
    const [changed] = parsePolicies(versions[version], 'bench.yaml');
    const policies = set.policies.slice();
    policies[changedIndex] = changed;
    return { ...set, policies };
  };
  const prepareStandby = () => datapath.prepareStandby();

  try {
    const baseline = measure(() => structuredClone(set));
    const parse = measure(() => parsePolicySet(text, 'bench.yaml'));
    const compile = measure(() => compilePolicySet(set, known));
    const encode = measure(() => encodeRuleSet(toKernelRuleSet(compiled)));
    // A newly loaded Datapath for every run of the first apply, with its empty maps prepared.
    let fresh = Datapath.load();
    fresh.prepareStandby();
    const renew = () => {
      fresh.close();
      fresh = Datapath.load();
      fresh.prepareStandby();
    };
    const applyPrepared = measure(() => fresh.applyRuleSet(toKernelRuleSet(compiled)), renew);
    const firstApply = measure(
      () => fresh.applyRuleSet(toKernelRuleSet(compilePolicySet(set, known))),
      renew,
    );
    fresh.close();
    const applyUnprepared = measure(
      () => datapath.applyRuleSet(toKernelRuleSet(compiled)),
      prepareStandby,
    );

    const compiler = new EgressCompiler();
    let entries = 0;
    let path = '';
    /**
     * Compiles with the compiler and applies its changes. Stores the number of entries written
     * or deleted in `entries`, and whether the compile was whole or incremental in `path`.
     */
    const reload = (next: PolicySet, nextKnown: KnownIdentity[]): void => {
      const { changes, incremental } = compiler.compile(next, nextKnown);
      if (!changes) throw new Error('the compiler returned no changes after its first compile');
      path = incremental ? 'incremental' : 'whole';
      entries = changes.peerRules.upsert.length + changes.cidrRules.upsert.length;
      entries += changes.subjects.upsert.length + changes.peerRules.remove.length;
      entries += changes.cidrRules.remove.length + changes.subjects.remove.length;
      datapath.applyRuleSetChanges(toKernelChanges(changes));
    };
    datapath.applyRuleSet(toKernelRuleSet(compiler.compile(set, known).compiled));
    datapath.prepareStandby();
    let moved = false;
    const reloadAll = measure(() => {
      moved = !moved;
      reload(moved ? movedSet : set, known);
    }, prepareStandby);
    const reloadAllEntries = `${entries} (${path} compile, every port moved)`;
    if (moved) reload(set, known);
    datapath.prepareStandby();
    let more = false;
    const reloadIdentity = measure(() => {
      more = !more;
      reload(set, more ? moreKnown : known);
    }, prepareStandby);
    const reloadIdentityEntries = `${entries} (${path} compile, one identity more or less)`;
    if (more) reload(set, known);
    datapath.prepareStandby();

    reload(withVersion(0), known);
    let version = 0;
    const standby: number[] = [];
    const changed = measure(
      () => {
        version = 1 - version;
        reload(withVersion(version), known);
      },
      () => standby.push(timed(prepareStandby)),
    );

    // The agent's reload of one changed file: the documents as 1,000 files in one directory,
    // loaded with the agent's PolicyFileCache (the other files are read, not parsed again),
    // then compiled and applied as above.
    const directory = mkdtempSync(join(tmpdir(), 'sigil-bench-policies-'));
    const fileOf = (index: number) => join(directory, `policy-${String(index).padStart(4, '0')}.yaml`);
    documents.forEach((document, index) => writeFileSync(fileOf(index), document));
    // On a node the other files were written long before; PolicyFileCache trusts a file's
    // timestamps only once they are 2 s old, and reads younger files again.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2100);
    const fileCache = new PolicyFileCache();
    reload(loadPolicyFiles([directory], fileCache), known);
    datapath.prepareStandby();
    let fileVersion = 0;
    const changedFile = measure(
      () => {
        fileVersion = 1 - fileVersion;
        writeFileSync(fileOf(changedIndex), versions[fileVersion]);
        reload(loadPolicyFiles([directory], fileCache), known);
      },
      prepareStandby,
    );
    const changedFileEntries = `${entries} (${path} compile, one changed file)`;
    rmSync(directory, { recursive: true, force: true });

    const ratio = (timing: Timing) => (timing.median / baseline.median).toFixed(2);
    const lines = [
      `policy set: ${set.policies.length} policies, ${ruleCount} egress rules, ${known.length} identities, ` +
        `${text.length} bytes of YAML`,
      `compiled: ${compiled.subjects.size} subjects, ${peerRuleCount(compiled)} peer lists, ` +
        `${compiled.cidrRules.length} CIDR lists`,
      `entries written or deleted by a reload: ${reloadAllEntries}, ${reloadIdentityEntries}, ` +
        `${entries} (${path} compile, one changed policy), ${changedFileEntries}`,
      `node ${process.version}, kernel ${release()}, ${cpus().length} CPUs (${cpus()[0].model}), ` +
        `${RUNS} runs after ${WARM_UP_RUNS} warm-up runs, load average ${loadavg()[0].toFixed(2)} at the end`,
      `baseline structuredClone(set):            ${format(baseline)}`,
      `parse and validate the YAML:              ${format(parse)} = ${ratio(parse)}x baseline`,
      `compilePolicySet, whole set:              ${format(compile)} = ${ratio(compile)}x baseline`,
      `encode the compiled set for the maps:     ${format(encode)} = ${ratio(encode)}x baseline`,
      `applyRuleSet into prepared empty maps:    ${format(applyPrepared)} = ${ratio(applyPrepared)}x baseline`,
      `first apply: compile and applyRuleSet:    ${format(firstApply)} = ${ratio(firstApply)}x baseline`,
      `applyRuleSet, maps not prepared:          ${format(applyUnprepared)} = ${ratio(applyUnprepared)}x baseline`,
      `reload, every port moved:                ${format(reloadAll)} = ${ratio(reloadAll)}x baseline`,
      `reload, one identity more or less:        ${format(reloadIdentity)} = ${ratio(reloadIdentity)}x baseline`,
      `one changed policy, incremental:          ${format(changed)} = ${ratio(changed)}x baseline`,
      `prepareStandby after it (not in force):   ${format(summarise(standby))}`,
      `one changed file of 1,000, as the agent reloads it (write, load with cache, compile, apply): ` +
        `${format(changedFile)} = ${ratio(changedFile)}x baseline`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    datapath.close();
  }
}

main();
