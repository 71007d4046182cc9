import { ConfigIssue } from '../util/config-error';
import { Policy, RuleBase, RuleKind } from './types';

/** Reason that no enforcer applies the rules of each kind, used as the hint of its warnings. */
const MISSING_ENFORCER: Record<RuleKind, string> = {
  egress: 'needs the cgroup-sock enforcer',
  ingress: 'Sigil has no ingress enforcer yet',
  process: 'needs BPF LSM or the tracepoint-kill enforcer, with pinning on; `sigil status` lists both',
  file: 'needs BPF LSM or the tracepoint-kill enforcer, with pinning on; `sigil status` lists both',
  capability: 'capability rules are enforced through AppArmor profiles (sigil apparmor generate)',
};

/** Rule kinds that an enforcer of this version applies on every supported kernel. */
export const ENFORCED_RULE_KINDS: readonly RuleKind[] = ['egress'];

/**
 * Returns the warnings of a loaded set that do not stop it from loading:
 * - one per rule of a kind not in `enforcedKinds`, which no enforcer applies (the decision
 *   functions and `sigil policy explain` still evaluate them). Callers that know more about
 *   the node, such as an agent with an LSM enforcer, pass the kinds it applies;
 * - one per policy in Enforce mode that selects processes without a SPIFFE ID and blocks their
 *   unmatched connects through an egress posture, since that reaches every unregistered
 *   program on the node.
 */
export function policyWarnings(
  policies: readonly Policy[],
  enforcedKinds: readonly RuleKind[] = ENFORCED_RULE_KINDS,
): ConfigIssue[] {
  const warnings: ConfigIssue[] = [];
  for (const policy of policies) {
    const lists: [RuleKind, readonly RuleBase[]][] = [
      ['egress', policy.egress],
      ['ingress', policy.ingress],
      ['process', policy.process],
      ['file', policy.file],
      ['capability', policy.capability],
    ];
    for (const [kind, rules] of lists) {
      if (enforcedKinds.includes(kind)) continue;
      for (const rule of rules) {
        warnings.push({
          position: rule.position,
          fieldPath: '',
          message:
            `${kind} rule "${rule.name}" of policy "${policy.name}": ` +
            'no enforcer on this node can apply it',
          hint: MISSING_ENFORCER[kind],
          severity: 'warning',
        });
      }
    }
    if (blocksUnidentifiedEgress(policy)) {
      warnings.push({
        position: policy.position,
        fieldPath: 'spec.egressPosture',
        message:
          `policy "${policy.name}" blocks every connect of every process without a SPIFFE ID ` +
          'that its Allow rules do not match, including system services',
        hint: 'set mode: Audit first to see what it would block',
        severity: 'warning',
      });
    }
  }
  return warnings;
}

function blocksUnidentifiedEgress(policy: Policy): boolean {
  return (
    policy.subjectSelector.kind === 'unidentified' &&
    policy.mode === 'Enforce' &&
    policy.egressPosture === 'Block' &&
    policy.egress.some((rule) => rule.action === 'Allow')
  );
}
