import { ConfigIssue, SourcePosition } from '../util/config-error';

/** API version and kind that every policy document must declare. */
export const POLICY_API_VERSION = 'sigil.dev/v1alpha1';
export const POLICY_KIND = 'IdentityPolicy';

/** Action of a matching rule on the operation it matches. */
export type RuleAction = 'Allow' | 'Audit' | 'Block';

/** Action for operations of one kind that no rule matches, used only when the subject has Allow rules of that kind. */
export type Posture = 'Block' | 'Audit';

/** Action for egress that no rule matches, used only when the subject has Allow rules. */
export type EgressPosture = Posture;

/** Kinds of rules, one list each in a policy's `spec`. */
export type RuleKind = 'egress' | 'ingress' | 'process' | 'file' | 'capability';

/** Every rule kind, in the order the `spec` lists them. */
export const RULE_KINDS: readonly RuleKind[] = ['egress', 'ingress', 'process', 'file', 'capability'];

/** `Enforce` applies every action as written; `Audit` turns every Block of the policy into Audit. */
export type PolicyMode = 'Enforce' | 'Audit';

/** Severity of a rule, carried into the events and explanations of its decisions. */
export type Severity = 'info' | 'low' | 'medium' | 'high' | 'critical';

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
 * Processes a policy applies to: a SPIFFE ID selector, every ID of one trust domain, or the
 * processes without a SPIFFE ID (identity id 0 in the kernel maps).
 */
export type SubjectSelector =
  | SpiffeSelector
  | { readonly kind: 'trustDomain'; readonly trustDomain: string }
  | { readonly kind: 'unidentified' };

/**
 * Network prefix in the 128-bit IPv6 address space. IPv4 prefixes are stored IPv4-mapped
 * (`10.0.0.0/8` is `::ffff:10.0.0.0/104`), the layout of the kernel's CIDR-rule keys, so an
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

/** Source of an ingress rule, with the same forms as an egress destination. */
export type IngressSource = EgressDestination;

/** Fields that every rule kind has. */
export interface RuleBase {
  /** Name from the file, or `<kind>-<index>` (such as `egress-0`) when the file gives none. */
  readonly name: string;
  readonly action: RuleAction;
  readonly severity?: Severity;
  /** Tags as written, empty when the file gives none. */
  readonly tags: readonly string[];
  readonly message?: string;
  /** Position of the rule's entry in its list. */
  readonly position: SourcePosition;
}

/** One entry of `spec.egress`. */
export interface EgressRule extends RuleBase {
  readonly to: EgressDestination;
  /** Port ranges as written, or null when the rule matches every port. */
  readonly ports: readonly PortRange[] | null;
  readonly protocol: RuleProtocol;
}

/**
 * One entry of `spec.ingress`: connections accepted by the subject's listeners. `from` is the
 * connecting process's identity (for local clients) or the source address, and `ports` are
 * the subject's local ports.
 */
export interface IngressRule extends RuleBase {
  readonly from: IngressSource;
  readonly ports: readonly PortRange[] | null;
  readonly protocol: RuleProtocol;
}

/**
 * The objects of a process or file rule. Paths are absolute and normalised: no `.` or `..`
 * segment, no empty segment and no trailing `/` (except the root `/` as a directory).
 */
export interface PathObjects {
  /** Files matched by their whole path. */
  readonly paths: readonly string[];
  /** Directories whose entries match: direct entries only, or every descendant with `recursive`. */
  readonly directories: readonly string[];
  readonly recursive: boolean;
  /** True when `*` (within a segment) and `**` (across segments) are patterns, not characters. */
  readonly glob: boolean;
}

/** One entry of `spec.process`: matches the executable path of an exec by the subject. */
export interface ProcessRule extends RuleBase, PathObjects {}

/** One entry of `spec.file`: matches the path of a file the subject opens. */
export interface FileRule extends RuleBase, PathObjects {
  /** True when the rule's action applies to reads only and every write open is Blocked. */
  readonly readOnly: boolean;
}

/**
 * One entry of `spec.capability`: matches the subject's use of Linux capabilities, named as
 * in capabilities(7) without the `CAP_` prefix, such as `NET_RAW`.
 */
export interface CapabilityRule extends RuleBase {
  /** Capability names, each once, in the order written. */
  readonly capabilities: readonly string[];
}

/** One validated `IdentityPolicy` document. */
export interface Policy {
  readonly name: string;
  /**
   * The subject as a SPIFFE ID selector, kept for callers written before `subjectSelector`.
   * A `trustDomain` subject appears as the prefix `spiffe://<trust domain>`, which selects the
   * same IDs. An `unidentified` subject appears as `{kind: 'spiffeId', spiffeId: ''}`, which
   * equals no SPIFFE ID, so such callers never apply it to an identified process.
   */
  readonly subject: SpiffeSelector;
  /** The subject as written. */
  readonly subjectSelector: SubjectSelector;
  /** Mode from the file, `Enforce` when the file gives none. */
  readonly mode: PolicyMode;
  /** Posture from the file, `Block` when the file gives none. */
  readonly egressPosture: EgressPosture;
  readonly egress: readonly EgressRule[];
  readonly ingressPosture: Posture;
  readonly ingress: readonly IngressRule[];
  readonly processPosture: Posture;
  readonly process: readonly ProcessRule[];
  readonly filePosture: Posture;
  readonly file: readonly FileRule[];
  readonly capabilityPosture: Posture;
  readonly capability: readonly CapabilityRule[];
  /** Position of the document's root map. */
  readonly position: SourcePosition;
}

/** Policies of every loaded file, in file order and then document order. */
export interface PolicySet {
  policies: Policy[];
  /** Files that were read, after directories were expanded. */
  files: string[];
  /**
   * Problems that do not stop the set from loading, such as rules that no enforcer on this
   * node can apply. Every issue has severity `warning`.
   */
  warnings: ConfigIssue[];
}
