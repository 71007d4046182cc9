/**
 * The enforcement report of a node: the enforcer that applies each rule kind,
 * and for each rule whether that enforcer can block with it, only reports it,
 * or whether nothing applies it at all. The agent logs this at start-up and on
 * every reload and stores it for `sigil status`.
 */
import { effectiveAction } from './actions';
import { Policy, RuleBase, RuleKind, RULE_KINDS } from './types';

/** The enforcer that applies each rule kind on this node, or null for none. */
export type KindEnforcers = Record<RuleKind, string | null>;

/**
 * What happens to one rule on this node:
 * - `enforce`: an enforcer applies it, and a Block rule or the Block posture it leads to blocks;
 * - `audit`: an enforcer reports its matches but never blocks for it (an Audit rule, or any
 *   rule of a policy in Audit mode);
 * - `none`: no enforcer on this node applies rules of its kind, so only `sigil policy explain`
 *   evaluates it.
 */
export type RuleEnforcementState = 'enforce' | 'audit' | 'none';

export interface RuleEnforcement {
  policy: string;
  rule: string;
  kind: RuleKind;
  enforcer: string | null;
  state: RuleEnforcementState;
  file: string;
  line: number;
}

/** The enforcement report the agent stores for `sigil status`. */
export interface EnforcementReport {
  /** ISO 8601 time of the rule set the report describes. */
  time: string;
  generation: number;
  kinds: KindEnforcers;
  rules: RuleEnforcement[];
}

function rulesOf(policy: Policy, kind: RuleKind): readonly RuleBase[] {
  return policy[kind];
}

/** Returns the enforcement state of every rule of the policies, in file order. */
export function ruleEnforcement(
  policies: readonly Policy[],
  kinds: KindEnforcers,
): RuleEnforcement[] {
  const rows: RuleEnforcement[] = [];
  for (const policy of policies) {
    for (const kind of RULE_KINDS) {
      const enforcer = kinds[kind];
      for (const rule of rulesOf(policy, kind)) {
        let state: RuleEnforcementState = 'none';
        if (enforcer)
          state = effectiveAction(rule.action, policy.mode) === 'Audit' ? 'audit' : 'enforce';
        rows.push({
          policy: policy.name,
          rule: rule.name,
          kind,
          enforcer,
          state,
          file: rule.position.file,
          line: rule.position.line,
        });
      }
    }
  }
  return rows;
}

const LISTED_RULES = 20;

function ruleList(rows: readonly RuleEnforcement[]): string {
  const names = rows.slice(0, LISTED_RULES).map((row) => `${row.policy}/${row.rule}`);
  if (rows.length > LISTED_RULES) names.push(`and ${rows.length - LISTED_RULES} more`);
  return names.join(', ');
}

/**
 * Returns one line per rule kind: its enforcer, or that nothing applies it,
 * and the rules (policy/rule) it enforces, only audits, or leaves alone.
 * Lists are cut after 20 names; `sigil status` shows every rule.
 */
export function describeEnforcement(
  kinds: KindEnforcers,
  rows: readonly RuleEnforcement[],
): string[] {
  return RULE_KINDS.map((kind) => {
    const ofKind = rows.filter((row) => row.kind === kind);
    const enforcer = kinds[kind];
    const head = enforcer
      ? `${kind} rules: enforced by ${enforcer}`
      : `${kind} rules: no enforcer on this node`;
    const parts: string[] = [];
    for (const state of ['enforce', 'audit', 'none'] as const) {
      const selected = ofKind.filter((row) => row.state === state);
      if (selected.length === 0) continue;
      const label = { enforce: 'enforces', audit: 'audits only', none: 'not applied' }[state];
      parts.push(`${label} ${selected.length}: ${ruleList(selected)}`);
    }
    return parts.length > 0 ? `${head}; ${parts.join('; ')}` : `${head}; no rules`;
  });
}
