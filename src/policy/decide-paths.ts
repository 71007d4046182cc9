import { capabilityNameProblem } from './capability-rules';
import { canonicalQueryId, Decision, evaluate, Explanation } from './evaluate';
import { normaliseOperationPath, pathMatcher } from './paths';
import { PolicySet } from './types';

/**
 * An exec() by the subject. No enforcer of this version applies process rules (they need BPF
 * LSM), so only this model decides them.
 */
export interface ExecQuery {
  /** SPIFFE ID of the process that calls exec(), or null when it has no identity. */
  subject: string | null;
  /** Absolute path of the executed file. `//` and a trailing `/` are normalised away. */
  path: string;
}

/**
 * An open() by the subject. No enforcer of this version applies file rules (they need BPF LSM),
 * so only this model decides them.
 */
export interface OpenQuery {
  /** SPIFFE ID of the opening process, or null when it has no identity. */
  subject: string | null;
  /** Absolute path of the opened file. */
  path: string;
  /** True when the file is opened for writing (write-only or read-write). */
  write: boolean;
  /**
   * True when the opened file is a directory. Then the rules whose directories name it match
   * too, recursive or not, as they match its entries.
   */
  directory?: boolean;
}

/**
 * Decides an exec() with the process rules, by the same rules of combination as
 * `decideConnect`. Throws `Error` for an invalid SPIFFE ID, or a path that is relative or has
 * `.` or `..` segments.
 */
export function decideExec(set: PolicySet, query: ExecQuery): Decision {
  return explainExec(set, query).decision;
}

/** Decides an exec() like `decideExec` and also lists every matching rule. */
export function explainExec(set: PolicySet, query: ExecQuery): Explanation {
  const subject = canonicalQueryId(query.subject, 'exec', 'subject');
  const path = checkPath(query.path, 'exec');
  return evaluate(set, subject, {
    kind: 'process',
    rulesOf: (policy) => policy.process,
    match: (rule) => (pathMatcher(rule)(path) ? { action: rule.action } : null),
  });
}

/**
 * Decides an open() with the file rules, by the same rules of combination as
 * `decideConnect`. A `readOnly` rule applies its action to reads and Blocks writes. Throws
 * `Error` like `decideExec`.
 */
export function decideOpen(set: PolicySet, query: OpenQuery): Decision {
  return explainOpen(set, query).decision;
}

/** Decides an open() like `decideOpen` and also lists every matching rule. */
export function explainOpen(set: PolicySet, query: OpenQuery): Explanation {
  const subject = canonicalQueryId(query.subject, 'open', 'subject');
  const path = checkPath(query.path, 'open');
  return evaluate(set, subject, {
    kind: 'file',
    rulesOf: (policy) => policy.file,
    match: (rule) => {
      if (!pathMatcher(rule)(path, query.directory === true)) return null;
      if (rule.readOnly && query.write) return { action: 'Block', readOnlyWrite: true };
      return { action: rule.action };
    },
  });
}

/** A use of a Linux capability by the subject, such as opening a raw socket (NET_RAW). */
export interface CapabilityQuery {
  /** SPIFFE ID of the process, or null when it has no identity. */
  subject: string | null;
  /** Capability name as capabilities(7) gives it without CAP_, such as NET_RAW. */
  capability: string;
}

/**
 * Decides a capability use with the capability rules, by the same rules of combination as
 * `decideConnect`. Throws `Error` for an invalid SPIFFE ID or capability name.
 */
export function decideCapability(set: PolicySet, query: CapabilityQuery): Decision {
  return explainCapability(set, query).decision;
}

/** Decides a capability use like `decideCapability` and also lists every matching rule. */
export function explainCapability(set: PolicySet, query: CapabilityQuery): Explanation {
  const subject = canonicalQueryId(query.subject, 'capability', 'subject');
  const problem = capabilityNameProblem(query.capability);
  if (problem) {
    throw new Error(`invalid capability query: capability "${query.capability}": ${problem}`);
  }
  return evaluate(set, subject, {
    kind: 'capability',
    rulesOf: (policy) => policy.capability,
    match: (rule) => (rule.capabilities.includes(query.capability) ? { action: rule.action } : null),
  });
}

function checkPath(path: string, operation: 'exec' | 'open'): string {
  try {
    return normaliseOperationPath(path);
  } catch (error) {
    throw new Error(`invalid ${operation} query: ${(error as Error).message}`, { cause: error });
  }
}
