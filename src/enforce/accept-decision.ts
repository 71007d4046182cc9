import { AcceptRecord } from '../kernel/codec';
import { explainAccept } from '../policy/decide';
import { subjectMatches } from '../policy/spiffe-selector';
import { PolicySet } from '../policy/types';
import { Action } from '../events/audit-event';
import { AcceptDecision } from './event-builder';

const ACTIONS: Record<string, Action> = {
  Allow: 'allow',
  Audit: 'audit',
  Block: 'block',
  None: 'none',
};

/**
 * Decides an accepted connection with the ingress rules of the policy set, for its audit event.
 * The policy set is the one loaded when the record is handled, which after a reload may be newer
 * than the one in force at the accept. Throws `Error` when the record has an address or port the
 * decision function rejects.
 */
export function decideAcceptRecord(
  set: PolicySet,
  record: AcceptRecord,
  subject: string | null,
  peer: string | null,
): AcceptDecision {
  const explanation = explainAccept(set, {
    subject,
    peer,
    address: record.address,
    port: record.localPort,
    // The kernel writes accept records for TCP sockets only.
    protocol: 'TCP',
  });
  const { decision, decidingMatch } = explanation;
  const action = ACTIONS[decision.action];
  if (decision.reason === 'rule' && decidingMatch) {
    const { severity, tags, message } = decidingMatch;
    return {
      action,
      reason: 'rule',
      policy: decidingMatch.policy,
      rule: decidingMatch.rule,
      details: { severity, tags, message },
    };
  }
  if (decision.reason === 'posture') {
    return { action, reason: 'posture', policy: explanation.policies.join(','), rule: 'ingressPosture' };
  }
  return { action, reason: 'no-policy', policy: '', rule: '' };
}

/**
 * Returns whether a policy with ingress rules selects processes without a SPIFFE ID, so the
 * kernel must report accepts where neither end has an identity.
 */
export function ingressSelectsUnidentified(set: PolicySet): boolean {
  return set.policies.some(
    (policy) => policy.ingress.length > 0 && subjectMatches(policy.subjectSelector, null),
  );
}
