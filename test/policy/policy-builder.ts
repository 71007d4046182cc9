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

/** One process or file rule in the YAML form of a policy file. */
export interface PathRuleSpec {
  name?: string;
  action: string;
  paths?: string[];
  directories?: string[];
  recursive?: boolean;
  /** File rules only. */
  readOnly?: boolean;
}

/**
 * One policy in the YAML form. `subject` is a SPIFFE ID, or `prefix:<SPIFFE ID prefix>`,
 * `trustDomain:<trust domain>` or `unidentified`.
 */
export interface PolicySpec {
  name: string;
  subject: string;
  mode?: string;
  egressPosture?: string;
  egress?: RuleSpec[];
  processPosture?: string;
  process?: PathRuleSpec[];
  filePosture?: string;
  file?: PathRuleSpec[];
}

function subjectYaml(subject: string): Record<string, unknown> {
  if (subject === 'unidentified') return { unidentified: true };
  if (subject.startsWith('prefix:')) return { spiffeIdPrefix: subject.slice('prefix:'.length) };
  if (subject.startsWith('trustDomain:')) {
    return { trustDomain: subject.slice('trustDomain:'.length) };
  }
  return { spiffeId: subject };
}

/** Returns the YAML text of one policy document. */
export function policyYaml(spec: PolicySpec): string {
  const { name, subject, egress, ...optional } = spec;
  return stringify({
    apiVersion: 'sigil.dev/v1alpha1',
    kind: 'IdentityPolicy',
    metadata: { name },
    spec: { subject: subjectYaml(subject), ...optional, egress: egress ?? [] },
  });
}

/** Returns the specs as one multi-document YAML file. */
export function policyFileText(specs: PolicySpec[]): string {
  return specs.map(policyYaml).join('---\n');
}

/** Builds a policy set by writing the specs as one multi-document YAML file and loading it. */
export function policySet(specs: PolicySpec[], file = 'policies.yaml'): PolicySet {
  return parsePolicySet(policyFileText(specs), file);
}
