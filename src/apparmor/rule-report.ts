import { RuleKind } from '../policy/types';

/**
 * Effect of one profile on one rule or posture of a policy:
 * - `enforces`: the profile allows and denies what the rule allows and denies;
 * - `audits`: the profile logs what the rule matches, but denies nothing for it;
 * - `partial`: the profile enforces part of the rule (such as the socket type but not the port);
 * - `cannot-express`: the profile does nothing for the rule; only the BPF enforcers apply it.
 */
export type RuleStatus = 'enforces' | 'audits' | 'partial' | 'cannot-express';

/** Name used in reports for a kind's posture instead of a rule name. */
export const POSTURE_RULE = '(posture)';

/** The AppArmor status of one rule (or posture) of one policy in one profile. */
export interface RuleReport {
  profile: string;
  spiffeId: string;
  policy: string;
  kind: RuleKind;
  /** Rule name, or `(posture)` for the action on operations that no rule matches. */
  rule: string;
  file: string;
  line: number;
  status: RuleStatus;
  /** Why, in one sentence. */
  detail: string;
}
