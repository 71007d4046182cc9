import { parseIpAddress, prefixContains } from './cidr';
import { canonicalSpiffeId, selectorMatches } from './spiffe-selector';
import { EgressPosture, EgressRule, PolicySet, RuleAction } from './types';

/** A connect() to decide, described by the values the kernel decides on. */
export interface ConnectQuery {
  /** SPIFFE ID of the connecting process, or null when it has no identity. */
  subject: string | null;
  /** SPIFFE ID of the local listener's owner, or null when the destination is not one. */
  peer: string | null;
  /** Destination IPv4 or IPv6 address. `::ffff:a.b.c.d` is the same as `a.b.c.d`. */
  address: string;
  /** Destination port, 0-65535. */
  port: number;
  protocol: 'TCP' | 'UDP';
}

/** Outcome of a connect(), with the same meaning as the kernel's connect record. */
export interface Decision {
  /** Action that applied, or None when no rule matched and no posture applied. */
  action: RuleAction | 'None';
  reason: 'rule' | 'posture' | 'no-policy';
  /** True when connect() fails with EPERM, which is exactly when the action is Block. */
  denied: boolean;
  /** Policy and rule that decided, present when the reason is `rule`. */
  policy?: string;
  rule?: string;
}

/** A rule that matches a connect. */
export interface RuleMatch {
  policy: string;
  rule: string;
  action: RuleAction;
  file: string;
  line: number;
}

/** A decision with the facts behind it. */
export interface ConnectExplanation {
  decision: Decision;
  /** Every matching rule in (policy, rule) order. The decision names the first strongest. */
  matches: RuleMatch[];
  /** Names of the policies whose subject selects the query's subject, in set order. */
  policies: string[];
  hasEgressAllow: boolean;
  /** Posture that applies when no rule matches; null when no policy selects the subject. */
  egressPosture: EgressPosture | null;
}

const ACTION_STRENGTH: Record<RuleAction, number> = { Allow: 1, Audit: 2, Block: 3 };

/**
 * Decides a connect() from the source policies, independently of the compiled maps, so it can
 * check what the kernel does. Every rule of every policy that selects the subject is tested.
 * The strongest action wins (Block > Audit > Allow), and a tie goes to the first rule in
 * (policy set order, rule order). With no match, a subject with Allow rules gets its posture
 * (Block when any of its policies sets Block), and any other connect is allowed with action
 * None. Throws `Error` when the query has an invalid SPIFFE ID, address, port or protocol.
 */
export function decideConnect(set: PolicySet, query: ConnectQuery): Decision {
  return explainConnect(set, query).decision;
}

/** Decides a connect() like `decideConnect` and also lists every matching rule. */
export function explainConnect(set: PolicySet, query: ConnectQuery): ConnectExplanation {
  const { subject, peer, addr } = checkQuery(query);
  const policies =
    subject === null
      ? []
      : set.policies.filter((policy) => selectorMatches(policy.subject, subject));

  const matches: RuleMatch[] = [];
  let winner: RuleMatch | undefined;
  for (const policy of policies) {
    for (const rule of policy.egress) {
      if (!ruleMatches(rule, peer, addr, query)) continue;
      const match: RuleMatch = {
        policy: policy.name,
        rule: rule.name,
        action: rule.action,
        file: rule.position.file,
        line: rule.position.line,
      };
      matches.push(match);
      if (!winner || ACTION_STRENGTH[match.action] > ACTION_STRENGTH[winner.action]) {
        winner = match;
      }
    }
  }

  const hasEgressAllow = policies.some((policy) =>
    policy.egress.some((rule) => rule.action === 'Allow'),
  );
  let egressPosture: EgressPosture | null = null;
  if (policies.length > 0) {
    egressPosture = policies.some((policy) => policy.egressPosture === 'Block') ? 'Block' : 'Audit';
  }

  let decision: Decision;
  if (winner) {
    decision = {
      action: winner.action,
      reason: 'rule',
      denied: winner.action === 'Block',
      policy: winner.policy,
      rule: winner.rule,
    };
  } else if (hasEgressAllow && egressPosture !== null) {
    decision = { action: egressPosture, reason: 'posture', denied: egressPosture === 'Block' };
  } else {
    decision = { action: 'None', reason: 'no-policy', denied: false };
  }
  return {
    decision,
    matches,
    policies: policies.map((policy) => policy.name),
    hasEgressAllow,
    egressPosture,
  };
}

function checkQuery(query: ConnectQuery): {
  subject: string | null;
  peer: string | null;
  addr: Buffer;
} {
  const address = parseIpAddress(query.address);
  if (!address) {
    throw new Error(`invalid connect query: address "${query.address}" is not IPv4 or IPv6`);
  }
  if (!Number.isInteger(query.port) || query.port < 0 || query.port > 65535) {
    throw new Error(`invalid connect query: port ${query.port} is not an integer from 0 to 65535`);
  }
  if (query.protocol !== 'TCP' && query.protocol !== 'UDP') {
    throw new Error(
      `invalid connect query: protocol "${String(query.protocol)}" is not TCP or UDP`,
    );
  }
  return {
    subject: canonicalQueryId(query.subject, 'subject'),
    peer: canonicalQueryId(query.peer, 'peer'),
    addr: address.addr,
  };
}

function canonicalQueryId(text: string | null, field: 'subject' | 'peer'): string | null {
  if (text === null) return null;
  try {
    return canonicalSpiffeId(text);
  } catch (error) {
    throw new Error(`invalid connect query: ${field}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function ruleMatches(
  rule: EgressRule,
  peer: string | null,
  addr: Buffer,
  query: ConnectQuery,
): boolean {
  if (rule.protocol !== 'Any' && rule.protocol !== query.protocol) return false;
  if (
    rule.ports !== null &&
    !rule.ports.some((range) => range.lo <= query.port && query.port <= range.hi)
  ) {
    return false;
  }
  switch (rule.to.kind) {
    case 'any':
      return true;
    case 'peer':
      return peer !== null && selectorMatches(rule.to.peer, peer);
    case 'cidrs':
      return rule.to.cidrs.some((cidr) => prefixContains(cidr.addr, cidr.prefixLen, addr));
  }
}
