import { SourcePosition } from '../util/config-error';

/** API version and kind that every policy document must declare. */
export const POLICY_API_VERSION = 'sigil.dev/v1alpha1';
export const POLICY_KIND = 'IdentityPolicy';

/** Action of a matching egress rule on a connect(). */
export type RuleAction = 'Allow' | 'Audit' | 'Block';

/** Action for egress that no rule matches, used only when the subject has Allow rules. */
export type EgressPosture = 'Block' | 'Audit';

/** Transport protocol of an egress rule. `Any` matches TCP and UDP. */
export type RuleProtocol = 'TCP' | 'UDP' | 'Any';

/**
 * Workload identities a policy applies to or a rule points at. Both forms contain the canonical
 * text returned by the SPIFFE ID parser. A prefix matches on a path segment boundary, and a
 * prefix of only a trust domain matches every ID in that trust domain.
 */
export type SpiffeSelector =
  | { readonly kind: 'spiffeId'; readonly spiffeId: string }
  | { readonly kind: 'spiffeIdPrefix'; readonly spiffeIdPrefix: string };

/**
 * Network prefix in the 128-bit IPv6 address space. IPv4 prefixes are stored IPv4-mapped
 * (`10.0.0.0/8` is `::ffff:10.0.0.0/104`), the layout the kernel's LPM trie uses, so an
 * IPv6 prefix that covers `::ffff:0:0/96`, such as `::/0`, also matches IPv4 destinations.
 */
export interface Cidr {
  /** Normalised text in the family it was written in, such as `10.0.0.0/8` or `2001:db8::/32`. */
  readonly text: string;
  /** Network address, 16 bytes, host bits zero. */
  readonly addr: Buffer;
  /** Prefix length in the 128-bit space, 0..128. */
  readonly prefixLen: number;
}

/** Destination of an egress rule. `any` is a rule without `to`, matching every destination. */
export type EgressDestination =
  | { readonly kind: 'any' }
  | { readonly kind: 'peer'; readonly peer: SpiffeSelector }
  | { readonly kind: 'cidrs'; readonly cidrs: readonly Cidr[] };

/** Inclusive range of destination ports, 1..65535. */
export interface PortRange {
  readonly lo: number;
  readonly hi: number;
}

/** One entry of `spec.egress`. */
export interface EgressRule {
  /** Name from the file, or `egress-<index>` when the file gives none. */
  readonly name: string;
  readonly action: RuleAction;
  readonly to: EgressDestination;
  /** Port ranges as written, or null when the rule matches every port. */
  readonly ports: readonly PortRange[] | null;
  readonly protocol: RuleProtocol;
  /** Position of the rule's entry in the `egress` list. */
  readonly position: SourcePosition;
}

/** One validated `IdentityPolicy` document. */
export interface Policy {
  readonly name: string;
  readonly subject: SpiffeSelector;
  /** Posture from the file, `Block` when the file gives none. */
  readonly egressPosture: EgressPosture;
  readonly egress: readonly EgressRule[];
  /** Position of the document's root map. */
  readonly position: SourcePosition;
}

/** Policies of every loaded file, in file order and then document order. */
export interface PolicySet {
  policies: Policy[];
  /** Files that were read, after directories were expanded. */
  files: string[];
}
