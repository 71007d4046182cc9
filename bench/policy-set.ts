/**
 * The policy set of the compile benchmark: 1,000 policies with 10 egress rules each over 1,000
 * identities (50 namespaces of 20 services), to peers, peer namespaces and CIDRs.
 */
import { KnownIdentity } from '../src/policy/compile';

const NAMESPACES = 50;
const SERVICES_PER_NAMESPACE = 20;
const RULES_PER_POLICY = 10;

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
export function buildDocuments(posture = 'Block'): string[] {
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

export function identities(): KnownIdentity[] {
  const known: KnownIdentity[] = [];
  for (let namespace = 0; namespace < NAMESPACES; namespace++) {
    for (let service = 0; service < SERVICES_PER_NAMESPACE; service++) {
      known.push({ id: known.length + 1, spiffeId: spiffeId(namespace, service) });
    }
  }
  return known;
}
