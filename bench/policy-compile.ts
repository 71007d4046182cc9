/**
 * Measures compiling and applying a large egress rule set: 10,000 rules over 1,000 identities,
 * compiled and written into the kernel maps of a loaded BPF object (root, after `make`).
 *
 * Run: npx vite-node bench/policy-compile.ts [--runs N]
 *
 * Each measurement is repeated (15 runs by default, after 3 warm-up runs) and reported as
 * median, minimum and maximum. The baseline is a deep copy of the same loaded policy set by
 * structuredClone, measured in the same run, so the ratios compare with the cost of visiting
 * every object of the set once on this machine.
 *
 * - whole: compilePolicySet, then Datapath.applyRuleSet into fresh inner maps, until the new
 *   generation is in force (the previous one retired).
 * - one changed policy: the parse of the changed document, EgressCompiler.compile, and
 *   Datapath.applyRuleSetChanges, until the new generation is in force. The runs alternate
 *   between two versions of the document. Datapath.prepareStandby, which the agent runs after
 *   the switch, is measured on its own.
 * - one changed policy, whole: the same change through compilePolicySet and applyRuleSet.
 */
import { cpus, release } from 'node:os';
import { performance } from 'node:perf_hooks';
import { toKernelChanges, toKernelRuleSet } from '../src/enforce/agent';
import { Datapath } from '../src/kernel/datapath';
import { compilePolicySet } from '../src/policy/compile';
import { EgressCompiler } from '../src/policy/egress-compiler';
import { parsePolicies, parsePolicySet } from '../src/policy/loader';
import { PolicySet } from '../src/policy/types';
import { buildDocuments, identities } from './policy-set';

const WARM_UP_RUNS = 3;

const runsArgument = process.argv.indexOf('--runs');
const RUNS = runsArgument > 0 ? Number(process.argv[runsArgument + 1]) : 15;

interface Timing {
  median: number;
  min: number;
  max: number;
}

/** Returns the duration of work in milliseconds. */
function timed(work: () => unknown): number {
  const start = performance.now();
  work();
  return performance.now() - start;
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
  for (let run = 0; run < RUNS; run++) {
    durations.push(timed(work));
    between();
  }
  return summarise(durations);
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
  return `median ${timing.median.toFixed(2)} ms (min ${timing.min.toFixed(2)}, max ${timing.max.toFixed(2)})`;
}

function main(): void {
  if (process.getuid?.() !== 0) throw new Error('bench/policy-compile.ts must run as root');
  const documents = buildDocuments();
  const text = documents.join('---\n');
  const set = parsePolicySet(text, 'bench.yaml');
  const known = identities();
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

  try {
    const baseline = measure(() => structuredClone(set));
    const parse = measure(() => parsePolicySet(text, 'bench.yaml'));
    const compile = measure(() => compilePolicySet(set, known));
    const applyOnly = measure(() => datapath.applyRuleSet(toKernelRuleSet(compiled)));
    const whole = measure(() =>
      datapath.applyRuleSet(toKernelRuleSet(compilePolicySet(set, known))),
    );
    let wholeVersion = 0;
    const changedWhole = measure(() => {
      wholeVersion = 1 - wholeVersion;
      const next = compilePolicySet(withVersion(wholeVersion), known);
      datapath.applyRuleSet(toKernelRuleSet(next));
    });

    const compiler = new EgressCompiler();
    datapath.applyRuleSet(toKernelRuleSet(compiler.compile(withVersion(0), known).compiled));
    let version = 0;
    let entries = 0;
    const standby: number[] = [];
    const changed = measure(
      () => {
        version = 1 - version;
        const { changes } = compiler.compile(withVersion(version), known);
        if (!changes) throw new Error('the compiler compiled the changed policy whole');
        entries = changes.peerRules.upsert.length + changes.cidrRules.upsert.length;
        entries += changes.subjects.upsert.length;
        datapath.applyRuleSetChanges(toKernelChanges(changes));
      },
      () => standby.push(timed(() => datapath.prepareStandby())),
    );

    const ratio = (timing: Timing) => (timing.median / baseline.median).toFixed(2);
    const lines = [
      `policy set: ${set.policies.length} policies, ${ruleCount} egress rules, ${known.length} identities, ` +
        `${text.length} bytes of YAML`,
      `compiled: ${compiled.subjects.size} subjects, ${compiled.peerRules.size} peer lists, ` +
        `${compiled.cidrRules.length} CIDR lists; one changed policy writes ${entries} entries`,
      `node ${process.version}, kernel ${release()}, ${cpus().length} CPUs (${cpus()[0].model}), ` +
        `${RUNS} runs after ${WARM_UP_RUNS} warm-up runs`,
      `baseline structuredClone(set):          ${format(baseline)}`,
      `parse and validate the YAML:            ${format(parse)} = ${ratio(parse)}x baseline`,
      `compilePolicySet, whole set:            ${format(compile)} = ${ratio(compile)}x baseline`,
      `applyRuleSet of the compiled set:       ${format(applyOnly)} = ${ratio(applyOnly)}x baseline`,
      `whole: compile and apply:               ${format(whole)} = ${ratio(whole)}x baseline`,
      `one changed policy, whole:              ${format(changedWhole)} = ${ratio(changedWhole)}x baseline`,
      `one changed policy, incremental:        ${format(changed)} = ${ratio(changed)}x baseline`,
      `prepareStandby after it (not in force): ${format(summarise(standby))}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    datapath.close();
  }
}

main();
