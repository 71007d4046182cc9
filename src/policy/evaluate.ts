import { ACTION_STRENGTH, combinePostures, effectiveAction } from './actions';
import { canonicalSpiffeId, subjectMatches } from './spiffe-selector';
import { Policy, PolicySet, Posture, RuleAction, RuleBase, RuleKind, Severity } from './types';

/** Outcome of an operation, with the same meaning as the kernel's connect record. */
export interface Decision {
  /** Action that applied, or None when no rule matched and no posture applied. */
  action: RuleAction | 'None';
  reason: 'rule' | 'posture' | 'no-policy';
  /** True when the operation is denied (connect() fails with EPERM), exactly when the action is Block. */
  denied: boolean;
  /** Policy and rule that decided, present when the reason is `rule`. */
  policy?: string;
  rule?: string;
  /**
   * Present when the operation would be Blocked if every policy were in Enforce mode, but
   * policies in Audit mode made it Audit.
   */
  wouldBlock?: true;
}

/** A rule that matches an operation. */
export interface RuleMatch {
  policy: string;
  rule: string;
  /** Action that the rule applies to this operation, after `readOnly` and Audit mode. */
  action: RuleAction;
  file: string;
  line: number;
  kind: RuleKind;
  /** The action as written in the file. */
  writtenAction: RuleAction;
  severity?: Severity;
  tags?: readonly string[];
  message?: string;
  /** Present when Audit mode turned this rule's Block into Audit. */
  wouldBlock?: true;
  /** Present when a `readOnly` file rule Blocks this operation because it writes. */
  readOnlyWrite?: true;
}

/** A decision with the facts behind it. */
export interface Explanation {
  kind: RuleKind;
  decision: Decision;
  /** The match that decided, present when the reason is `rule`. */
  decidingMatch?: RuleMatch;
  /** Every matching rule in (policy, rule) order. The decision names the first strongest. */
  matches: RuleMatch[];
  /** Names of the policies whose subject selects the query's subject, in set order. */
  policies: string[];
  /** True when any of those policies has an Allow rule of this kind, so the posture applies. */
  hasAllow: boolean;
  /** Posture that applies when no rule matches; null when no policy selects the subject. */
  posture: Posture | null;
  /** True when the posture is Audit only because of policies in Audit mode. */
  postureWouldBlock: boolean;
}

/** Evaluation of one rule kind for one operation: where its rules are and how one matches. */
export interface RuleEvaluation<R extends RuleBase> {
  kind: RuleKind;
  rulesOf: (policy: Policy) => readonly R[];
  /**
   * Returns the written action that the rule applies to the operation, or null when it does not
   * match. `readOnlyWrite` marks a write that a `readOnly` rule Blocks.
   */
  match: (rule: R) => { action: RuleAction; readOnlyWrite?: boolean } | null;
}

/**
 * Decides an operation of one kind for a subject (a canonical SPIFFE ID, or null for a process
 * without one). Every rule of every policy that selects the subject is tested. The strongest
 * applied action wins (Block > Audit > Allow), and a tie goes to the first rule in (policy
 * set order, rule order). With no match, a subject with Allow rules of this kind gets its
 * posture (Block when any of its policies applies Block), and any other operation is allowed
 * with action None.
 */
export function evaluate<R extends RuleBase>(
  set: PolicySet,
  subject: string | null,
  evaluation: RuleEvaluation<R>,
): Explanation {
  const { kind } = evaluation;
  const policies = set.policies.filter((policy) => subjectMatches(policy.subjectSelector, subject));

  const matches: RuleMatch[] = [];
  let winner: RuleMatch | undefined;
  let strongestWritten: RuleAction | undefined;
  for (const policy of policies) {
    for (const rule of evaluation.rulesOf(policy)) {
      const result = evaluation.match(rule);
      if (!result) continue;
      const match = ruleMatch(kind, policy, rule, result.action, result.readOnlyWrite === true);
      matches.push(match);
      if (!winner || ACTION_STRENGTH[match.action] > ACTION_STRENGTH[winner.action]) {
        winner = match;
      }
      if (!strongestWritten || ACTION_STRENGTH[result.action] > ACTION_STRENGTH[strongestWritten]) {
        strongestWritten = result.action;
      }
    }
  }

  const hasAllow = policies.some((policy) =>
    evaluation.rulesOf(policy).some((rule) => rule.action === 'Allow'),
  );
  const combined = policies.length > 0 ? combinePostures(policies, kind) : null;

  let decision: Decision;
  if (winner) {
    decision = {
      action: winner.action,
      reason: 'rule',
      denied: winner.action === 'Block',
      policy: winner.policy,
      rule: winner.rule,
    };
    if (strongestWritten === 'Block' && winner.action !== 'Block') decision.wouldBlock = true;
  } else if (hasAllow && combined) {
    decision = {
      action: combined.posture,
      reason: 'posture',
      denied: combined.posture === 'Block',
    };
    if (combined.wouldBlock) decision.wouldBlock = true;
  } else {
    decision = { action: 'None', reason: 'no-policy', denied: false };
  }
  return {
    kind,
    decision,
    ...(winner ? { decidingMatch: winner } : {}),
    matches,
    policies: policies.map((policy) => policy.name),
    hasAllow,
    posture: combined?.posture ?? null,
    postureWouldBlock: combined?.wouldBlock ?? false,
  };
}

function ruleMatch(
  kind: RuleKind,
  policy: Policy,
  rule: RuleBase,
  written: RuleAction,
  readOnlyWrite: boolean,
): RuleMatch {
  const action = effectiveAction(written, policy.mode);
  const match: RuleMatch = {
    policy: policy.name,
    rule: rule.name,
    action,
    file: rule.position.file,
    line: rule.position.line,
    kind,
    writtenAction: rule.action,
  };
  if (rule.severity !== undefined) match.severity = rule.severity;
  if (rule.tags.length > 0) match.tags = rule.tags;
  if (rule.message !== undefined) match.message = rule.message;
  if (action !== written) match.wouldBlock = true;
  if (readOnlyWrite) match.readOnlyWrite = true;
  return match;
}

/** Returns the canonical SPIFFE ID of a query field, or throws `Error` naming the query. */
export function canonicalQueryId(
  text: string | null,
  operation: string,
  field: string,
): string | null {
  if (text === null) return null;
  try {
    return canonicalSpiffeId(text);
  } catch (error) {
    throw new Error(`invalid ${operation} query: ${field}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}
