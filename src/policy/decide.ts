import { parseIpAddress, prefixContains } from './cidr';
import { canonicalQueryId, Decision, evaluate, Explanation } from './evaluate';
import { selectorMatches } from './spiffe-selector';
import { EgressDestination, EgressPosture, PolicySet, PortRange, RuleProtocol } from './types';

export { Decision, Explanation, RuleMatch } from './evaluate';

export {
  decideExec,
  decideOpen,
  ExecQuery,
  explainExec,
  explainOpen,
  OpenQuery,
} from './decide-paths';

const IPV4_MAPPED_PREFIX = Buffer.from('00000000000000000000ffff', 'hex');
const IPV4_LOOPBACK = parseIpAddress('127.0.0.1')!.addr;
const IPV6_LOOPBACK = parseIpAddress('::1')!.addr;

/** A connect() to decide, described by the values the kernel decides on. */
export interface ConnectQuery {
  /** SPIFFE ID of the connecting process, or null when it has no identity. */
  subject: string | null;
  /** SPIFFE ID of the local listener's owner, or null when the destination is not one. */
  peer: string | null;
  /**
   * Destination IPv4 or IPv6 address. `::ffff:a.b.c.d` is the same as `a.b.c.d`. The unspecified
   * address is decided as the loopback address it reaches: `0.0.0.0` and `::ffff:0.0.0.0` as
   * `127.0.0.1`, and `::` as `::1`.
   */
  address: string;
  /** Destination port, 0-65535. */
  port: number;
  protocol: 'TCP' | 'UDP';
}

/**
 * A connection accepted by a listening socket of the subject. No enforcer of this version
 * applies ingress rules, so only this model decides them.
 */
export interface AcceptQuery {
  /** SPIFFE ID of the listening socket's owner, or null when it has no identity. */
  subject: string | null;
  /** SPIFFE ID of the connecting process when it is local, or null. */
  peer: string | null;
  /** Source IPv4 or IPv6 address of the connection. */
  address: string;
  /** Local port that the connection reaches, 0-65535. */
  port: number;
  protocol: 'TCP' | 'UDP';
}

/** A connect decision with the facts behind it. */
export interface ConnectExplanation extends Explanation {
  /** The same as `hasAllow`. */
  hasEgressAllow: boolean;
  /** The same as `posture`. */
  egressPosture: EgressPosture | null;
}

/**
 * Decides a connect() from the source policies, independently of the compiled maps, so it can
 * check what the kernel does. Every rule of every policy that selects the subject is tested.
 * The strongest action wins (Block > Audit > Allow), and a tie goes to the first rule in
 * (policy set order, rule order). With no match, a subject with Allow rules gets its posture
 * (Block when any of its policies sets Block), and any other connect is allowed with action
 * None. A null subject is selected by `unidentified` policies only. Throws `Error` when the
 * query has an invalid SPIFFE ID, address, port or protocol.
 */
export function decideConnect(set: PolicySet, query: ConnectQuery): Decision {
  return explainConnect(set, query).decision;
}

/** Decides a connect() like `decideConnect` and also lists every matching rule. */
export function explainConnect(set: PolicySet, query: ConnectQuery): ConnectExplanation {
  const { subject, peer, addr: written } = checkNetworkQuery(query, 'connect');
  const addr = connectDestination(written);
  const explanation = evaluate(set, subject, {
    kind: 'egress',
    rulesOf: (policy) => policy.egress,
    match: (rule) =>
      networkRuleMatches(rule.to, rule.ports, rule.protocol, peer, addr, query)
        ? { action: rule.action }
        : null,
  });
  return {
    ...explanation,
    hasEgressAllow: explanation.hasAllow,
    egressPosture: explanation.posture,
  };
}

/**
 * Decides a connection accepted by the subject with the ingress rules, by the same rules of
 * combination as `decideConnect`. Throws `Error` for an invalid query.
 */
export function decideAccept(set: PolicySet, query: AcceptQuery): Decision {
  return explainAccept(set, query).decision;
}

/** Decides an accepted connection like `decideAccept` and also lists every matching rule. */
export function explainAccept(set: PolicySet, query: AcceptQuery): Explanation {
  const { subject, peer, addr } = checkNetworkQuery(query, 'accept');
  return evaluate(set, subject, {
    kind: 'ingress',
    rulesOf: (policy) => policy.ingress,
    match: (rule) =>
      networkRuleMatches(rule.from, rule.ports, rule.protocol, peer, addr, query)
        ? { action: rule.action }
        : null,
  });
}

/**
 * Returns the address a connect() to addr reaches. Linux sends a connect to the unspecified
 * address to loopback, and bpf/connect.bpf.c decides on the loopback address, as it must,
 * because a rule on 0.0.0.0 would otherwise let a process reach 127.0.0.1.
 */
function connectDestination(addr: Buffer): Buffer {
  const ipv4Mapped = addr.subarray(0, 12).equals(IPV4_MAPPED_PREFIX);
  const isZero = (bytes: Buffer) => bytes.every((byte) => byte === 0);
  if (ipv4Mapped && isZero(addr.subarray(12))) return IPV4_LOOPBACK;
  if (isZero(addr)) return IPV6_LOOPBACK;
  return addr;
}

function checkNetworkQuery(
  query: ConnectQuery | AcceptQuery,
  operation: 'connect' | 'accept',
): { subject: string | null; peer: string | null; addr: Buffer } {
  const address = parseIpAddress(query.address);
  if (!address) {
    throw new Error(`invalid ${operation} query: address "${query.address}" is not IPv4 or IPv6`);
  }
  if (!Number.isInteger(query.port) || query.port < 0 || query.port > 65535) {
    throw new Error(
      `invalid ${operation} query: port ${query.port} is not an integer from 0 to 65535`,
    );
  }
  if (query.protocol !== 'TCP' && query.protocol !== 'UDP') {
    throw new Error(
      `invalid ${operation} query: protocol "${String(query.protocol)}" is not TCP or UDP`,
    );
  }
  return {
    subject: canonicalQueryId(query.subject, operation, 'subject'),
    peer: canonicalQueryId(query.peer, operation, 'peer'),
    addr: address.addr,
  };
}

function networkRuleMatches(
  other: EgressDestination,
  ports: readonly PortRange[] | null,
  protocol: RuleProtocol,
  peer: string | null,
  addr: Buffer,
  query: ConnectQuery | AcceptQuery,
): boolean {
  if (protocol !== 'Any' && protocol !== query.protocol) return false;
  if (ports !== null && !ports.some((range) => range.lo <= query.port && query.port <= range.hi)) {
    return false;
  }
  switch (other.kind) {
    case 'any':
      return true;
    case 'peer':
      return peer !== null && selectorMatches(other.peer, peer);
    case 'cidrs':
      return other.cidrs.some((cidr) => prefixContains(cidr.addr, cidr.prefixLen, addr));
  }
}
