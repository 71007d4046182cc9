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

const NAMESPACES = 50;
const SERVICES_PER_NAMESPACE = 20;
const RULES_PER_POLICY = 10;
const WARM_UP_RUNS = 3;

const runsArgument = process.argv.indexOf('--runs');
const RUNS = runsArgument > 0 ? Number(process.argv[runsArgument + 1]) : 15;

function spiffeId(namespace: number, service: number): string {
  return `spiffe://bench.example/ns/${namespace}/svc-${service}`;
}

/** Returns one rule of a service policy: to a peer, a peer namespace or a CIDR, on one port. */
function ruleYaml(namespace: number, service: number, index: number): string {
  let action = 'Allow';
  if (index % 5 === 4) action = 'Audit';
  if (index % 7 === 6) action = 'Block';
  const port = 1000 + index;
  const name = `r${index}`;
  switch (index % 3) {
    case 0: {
      const peer = spiffeId(
        (namespace + index) % NAMESPACES,
        (service + index) % SERVICES_PER_NAMESPACE,
      );
      return `    - {name: ${name}, action: ${action}, to: {spiffeId: "${peer}"}, ports: [${port}], protocol: TCP}`;
    }
    case 1: {
      const prefix = `spiffe://bench.example/ns/${(namespace + index) % NAMESPACES}`;
      return `    - {name: ${name}, action: ${action}, to: {spiffeIdPrefix: "${prefix}"}, ports: [${port}]}`;
    }
    default: {
      const cidr = `10.${namespace}.${service * RULES_PER_POLICY + index}.0/24`;
      return `    - {name: ${name}, action: ${action}, to: {cidrs: ["${cidr}"]}, ports: [${port}]}`;
    }
  }
}

function policyYaml(name: string, subject: string, rules: string[], posture: string): string {
  return [
    'apiVersion: sigil.dev/v1alpha1',
    'kind: IdentityPolicy',
    `metadata: {name: ${name}}`,
    'spec:',
    `  subject: {${subject}}`,
    `  egressPosture: ${posture}`,
    '  egress:',
    ...rules,
    '',
  ].join('\n');
}

/**
 * Returns the documents of the set: one policy per service except the first of each namespace
 * (950 policies), and one policy per namespace prefix (50), each with 10 rules.
 */
function buildDocuments(posture = 'Block'): string[] {
  const documents: string[] = [];
  for (let namespace = 0; namespace < NAMESPACES; namespace++) {
    const rules = Array.from({ length: RULES_PER_POLICY }, (_, index) =>
      ruleYaml(namespace, SERVICES_PER_NAMESPACE + 1, index),
    );
    const prefix = `spiffeIdPrefix: "spiffe://bench.example/ns/${namespace}"`;
    documents.push(policyYaml(`ns-${namespace}`, prefix, rules, 'Audit'));
    for (let service = 1; service < SERVICES_PER_NAMESPACE; service++) {
      const serviceRules = Array.from({ length: RULES_PER_POLICY }, (_, index) =>
        ruleYaml(namespace, service, index),
      );
      const subject = `spiffeId: "${spiffeId(namespace, service)}"`;
      documents.push(policyYaml(`svc-${namespace}-${service}`, subject, serviceRules, posture));
    }
  }
  return documents;
}

function identities(): KnownIdentity[] {
  const known: KnownIdentity[] = [];
  for (let namespace = 0; namespace < NAMESPACES; namespace++) {
    for (let service = 0; service < SERVICES_PER_NAMESPACE; service++) {
      known.push({ id: known.length + 1, spiffeId: spiffeId(namespace, service) });
    }
  }
  return known;
}

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
