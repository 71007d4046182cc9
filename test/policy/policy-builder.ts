import { stringify } from 'yaml';
import { parsePolicySet } from '../../src/policy/loader';
import { PolicySet } from '../../src/policy/types';

/** One egress rule in the YAML form of a policy file. */
export interface RuleSpec {
  name?: string;
  action: string;
  to?: { spiffeId?: string; spiffeIdPrefix?: string; cidrs?: string[] };
  ports?: (number | string)[];
  protocol?: string;
}

/** One policy in the YAML form; `subject` starting with `prefix:` becomes a spiffeIdPrefix. */
export interface PolicySpec {
  name: string;
  subject: string;
  egressPosture?: string;
  egress?: RuleSpec[];
}

/** Returns the YAML text of one policy document. */
export function policyYaml(spec: PolicySpec): string {
  const subject = spec.subject.startsWith('prefix:')
    ? { spiffeIdPrefix: spec.subject.slice('prefix:'.length) }
    : { spiffeId: spec.subject };
  return stringify({
    apiVersion: 'sigil.dev/v1alpha1',
    kind: 'IdentityPolicy',
    metadata: { name: spec.name },
    spec: {
      subject,
      ...(spec.egressPosture === undefined ? {} : { egressPosture: spec.egressPosture }),
      egress: spec.egress ?? [],
    },
  });
}

/** Builds a policy set by writing the specs as one multi-document YAML file and loading it. */
export function policySet(specs: PolicySpec[], file = 'policies.yaml'): PolicySet {
  const text = specs.map(policyYaml).join('---\n');
  return parsePolicySet(text, file);
}
