import { Policy, PolicyMode, Posture, RuleAction, RuleKind } from './types';

/** Order of actions when several rules match: Block wins over Audit, and Audit over Allow. */
export const ACTION_STRENGTH: Record<RuleAction, number> = { Allow: 1, Audit: 2, Block: 3 };

/** Returns the action that applies for a written action: Audit mode turns Block into Audit. */
export function effectiveAction(action: RuleAction, mode: PolicyMode): RuleAction {
  return mode === 'Audit' && action === 'Block' ? 'Audit' : action;
}

/** The posture of one kind for a subject, combined over every policy that selects it. */
export interface CombinedPosture {
  /** Block when any policy applies Block, and Audit when every policy sets Audit or is in Audit mode. */
  posture: Posture;
  /** True when the posture is Audit only because of policies in Audit mode. */
  wouldBlock: boolean;
}

const POSTURE_FIELDS = {
  egress: 'egressPosture',
  ingress: 'ingressPosture',
  process: 'processPosture',
  file: 'filePosture',
  capability: 'capabilityPosture',
} as const satisfies Record<RuleKind, keyof Policy>;

/** Returns the posture field name of a rule kind, such as `egressPosture`. */
export function postureField(kind: RuleKind): (typeof POSTURE_FIELDS)[RuleKind] {
  return POSTURE_FIELDS[kind];
}

/** Combines the postures of one kind of the policies that select a subject (at least one). */
export function combinePostures(policies: readonly Policy[], kind: RuleKind): CombinedPosture {
  const field = POSTURE_FIELDS[kind];
  const written = policies.some((policy) => policy[field] === 'Block') ? 'Block' : 'Audit';
  const applied = policies.some((policy) => effectiveAction(policy[field], policy.mode) === 'Block')
    ? 'Block'
    : 'Audit';
  return { posture: applied, wouldBlock: written === 'Block' && applied === 'Audit' };
}
