/**
 * The rules of one AppArmor profile before they become text. The generator builds these from
 * policies, `checkProfiles` validates them as a set, and `renderProfile` writes them.
 */

/** `allow` rules grant, `audit` rules grant and log, and `deny` rules deny and log. */
export type RuleQualifier = 'allow' | 'audit' | 'deny';

/** A file rule: an AARE and the letters it grants or denies (m r w a l k, no exec mode). */
export interface FileAccessRule {
  readonly qualifier: RuleQualifier;
  /** The path as AARE, escaped and unquoted. */
  readonly aare: string;
  readonly permissions: string;
  /** `policy/rule` names that produced the rule, for the comment above it. */
  readonly sources: readonly string[];
}

/**
 * An exec rule. Allowed execs inherit the profile (`ix`) or move to another Sigil profile with
 * a scrubbed environment (`Px -> name`); denied execs have no mode.
 */
export interface ExecRule {
  readonly qualifier: RuleQualifier;
  readonly aare: string;
  /** Exec mode of an allow or audit rule; null for deny. */
  readonly mode: 'ix' | 'Px' | null;
  /** Profile name after `->` for `Px`. */
  readonly target: string | null;
  readonly sources: readonly string[];
}

/** Socket types that Sigil's TCP and UDP rules map to. */
export type SocketType = 'stream' | 'dgram';

/** A network rule on one address family and, when set, one socket type. */
export interface NetworkRule {
  readonly qualifier: RuleQualifier;
  readonly family: 'inet' | 'inet6' | 'unix' | 'netlink';
  readonly type: SocketType | null;
}

/** A capability rule: the capability's name as AppArmor writes it, lower case without CAP_. */
export interface CapabilityRule {
  readonly qualifier: RuleQualifier;
  readonly name: string;
  readonly sources: readonly string[];
}

/** One profile, ready for `checkProfiles` and `renderProfile`. */
export interface ProfileModel {
  readonly name: string;
  readonly spiffeId: string;
  /** Literal executable paths the profile attaches to; empty for attachment by name only. */
  readonly attachments: readonly string[];
  readonly complain: boolean;
  /** Names of the policies that select the subject, in policy set order. */
  readonly policies: readonly string[];
  /**
   * Classes with no restriction. Files and execs together are written as `file,`, files alone
   * as `"/{,**}" mrwlk,`, execs alone as `"/**" ix,`, and the network as `network,`.
   */
  readonly allowAllFiles: boolean;
  readonly allowAllNetwork: boolean;
  readonly allowAllExec: boolean;
  /** True unless the subject's capability rules make an allow-list: then `capability,`. */
  readonly allowAllCapabilities: boolean;
  readonly capabilities: readonly CapabilityRule[];
  readonly network: readonly NetworkRule[];
  readonly files: readonly FileAccessRule[];
  readonly execs: readonly ExecRule[];
  /** Comment lines (without `#`) placed before the network rules. */
  readonly networkNotes: readonly string[];
}
