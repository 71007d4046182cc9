/**
 * Measures the policy compiler on a large set: 10,000 egress rules over 1,000 identities.
 *
 * Run: npx vite-node bench/policy-compile.ts [--runs N]
 *
 * Each measurement is repeated (15 runs by default, after 3 warm-up runs) and reported as
 * median, minimum and maximum. The baseline is a deep copy of the same loaded policy set by
 * structuredClone, measured in the same run, so the ratios compare the compiler with the cost
 * of visiting every object of the set once on this machine. There is no incremental compiler:
 * "one changed policy" is the parse of the changed document plus a full compile of the set,
 * which is what the agent does on a reload.
 */
import { performance } from 'node:perf_hooks';
import { compilePolicySet, KnownIdentity } from '../src/policy/compile';
import { parsePolicies, parsePolicySet } from '../src/policy/loader';
import { PolicySet } from '../src/policy/types';
import { buildDocuments, identities } from './policy-set';

const WARM_UP_RUNS = 3;

interface Timing {
  median: number;
  min: number;
  max: number;
}

/** Runs `work` repeatedly and returns its duration in milliseconds. */
function measure(work: () => unknown): Timing {
  for (let run = 0; run < WARM_UP_RUNS; run++) work();
  const durations: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const start = performance.now();
    work();
    durations.push(performance.now() - start);
  }
  durations.sort((a, b) => a - b);
  return {
    median: durations[Math.floor(durations.length / 2)],
    min: durations[0],
    max: durations.at(-1)!,
  };
}

function format(timing: Timing): string {
  return `median ${timing.median.toFixed(2)} ms (min ${timing.min.toFixed(2)}, max ${timing.max.toFixed(2)})`;
}

function main(): void {
  const documents = buildDocuments();
  const text = documents.join('---\n');
  const set = parsePolicySet(text, 'bench.yaml');
  const known = identities();
  const ruleCount = set.policies.reduce((sum, policy) => sum + policy.egress.length, 0);
  const compiled = compilePolicySet(set, known);

  // The changed policy: the posture of one service flips, and one rule's port moves.
  const changedIndex = Math.floor(documents.length / 2);
  const changedDocument = documents[changedIndex]
    .replace('egressPosture: Block', 'egressPosture: Audit')
    .replace('ports: [1000]', 'ports: [2000]');
  const reload = () => {
    const [changed] = parsePolicies(changedDocument, 'bench.yaml');
    const policies = set.policies.slice();
    policies[changedIndex] = changed;
    const next: PolicySet = { ...set, policies };
    return compilePolicySet(next, known);
  };

  const baseline = measure(() => structuredClone(set));
  const jsonRoundTrip = measure(() => JSON.parse(JSON.stringify(set)));
  const parse = measure(() => parsePolicySet(text, 'bench.yaml'));
  const compile = measure(() => compilePolicySet(set, known));
  const changed = measure(reload);

  const ratio = (timing: Timing) => (timing.median / baseline.median).toFixed(1);
  const lines = [
    `policy set: ${set.policies.length} policies, ${ruleCount} egress rules, ${known.length} identities, ` +
      `${text.length} bytes of YAML`,
    `compiled: ${compiled.subjects.size} subjects, ${compiled.peerRules.size} peer lists, ` +
      `${compiled.cidrRules.length} CIDR lists`,
    `node ${process.version}, ${RUNS} runs after ${WARM_UP_RUNS} warm-up runs`,
    `baseline structuredClone(set):       ${format(baseline)}`,
    `JSON.parse(JSON.stringify(set)):     ${format(jsonRoundTrip)} = ${ratio(jsonRoundTrip)}x baseline`,
    `parse and validate the YAML:         ${format(parse)} = ${ratio(parse)}x baseline`,
    `compilePolicySet, whole set:         ${format(compile)} = ${ratio(compile)}x baseline`,
    `one changed policy (parse+compile):  ${format(changed)} = ${ratio(changed)}x baseline`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

main();
