/**
 * Compiles the process (exec) and file rules of a policy set into the input of
 * publishLsmRuleSet (src/kernel/lsm-maps.ts), for the same subjects that
 * compilePolicySet resolves: identity ids of the known SPIFFE IDs, and id 0 for
 * `unidentified` policies.
 *
 * Rule table: the LSM programs report an index into a table of their own,
 * `rules` here, numbered from 0 in (policy, process rules, file rules) order.
 * It is separate from the egress table of CompiledRuleSet, because the exec
 * and file records (types 16 and 17) and the connect records come from
 * different programs and the agent keeps one table per record kind.
 */
import { existsSync } from 'node:fs';
import { KernelAction } from '../kernel/layout';
import { LsmDirectoryRule, LsmInodeRule, LsmRuleSet, LsmSubjectPostures, resolveInode } from '../kernel/lsm-maps';
import { ConfigIssue } from '../util/config-error';
import { combinePostures, effectiveAction } from './actions';
import { RuleRef } from './compiled-rule-set';
import { KnownIdentity } from './compile';
import { canonicalSpiffeId, subjectMatches } from './spiffe-selector';
import { FileRule, Policy, PolicySet, ProcessRule, RuleAction, SubjectSelector } from './types';

/** An entry of the LSM rule table. */
export interface LsmRuleRef extends RuleRef {
  /** The policy rule list the rule comes from. */
  kind: 'process' | 'file';
  /** File rules only: the action applies to reads, and writes are blocked. */
  readOnly?: true;
}

/** The result of compileLsmPolicySet. */
export interface LsmPolicyCompilation {
  ruleSet: {
    subjects: LsmSubjectPostures[];
    inodeRules: LsmInodeRule[];
    directoryRules: LsmDirectoryRule[];
  } & LsmRuleSet;
  /** The rule table: `rules[i]` is the rule that the kernel reports as rule index i. */
  rules: LsmRuleRef[];
  /** Names of the policies that select each subject id, for decisions by posture. */
  policiesBySubject: Map<number, string[]>;
  /** Paths and rules that the kernel cannot enforce, one issue per rule and path. */
  warnings: ConfigIssue[];
}

/** Function that returns the (device, inode) of an existing file, resolveInode by default. */
export type InodeResolver = (path: string) => { dev: number; ino: bigint };

const KERNEL_ACTIONS: Record<RuleAction, KernelAction.Allow | KernelAction.Audit | KernelAction.Block> = {
  Allow: KernelAction.Allow,
  Audit: KernelAction.Audit,
  Block: KernelAction.Block,
};

const GLOB_CHARACTER = '*';

/** Returns the identity ids a subject selector resolves to, as compilePolicySet resolves them. */
function resolveSubject(selector: SubjectSelector, known: readonly KnownIdentity[]): number[] {
  if (selector.kind === 'unidentified') return [0];
  return known.filter((identity) => subjectMatches(selector, identity.spiffeId)).map((identity) => identity.id);
}

function ruleRef(policy: Policy, rule: ProcessRule | FileRule, kind: 'process' | 'file'): LsmRuleRef {
  const ref: LsmRuleRef = {
    policy: policy.name,
    rule: rule.name,
    action: rule.action,
    file: rule.position.file,
    line: rule.position.line,
    kind,
  };
  if (rule.severity !== undefined) ref.severity = rule.severity;
  if (rule.tags.length > 0) ref.tags = rule.tags;
  if (rule.message !== undefined) ref.message = rule.message;
  if (effectiveAction(rule.action, policy.mode) !== rule.action) ref.wouldBlock = true;
  if ('readOnly' in rule && rule.readOnly) ref.readOnly = true;
  return ref;
}

function warning(rule: ProcessRule | FileRule, policy: Policy, kind: string, message: string, hint: string): ConfigIssue {
  return {
    position: rule.position,
    fieldPath: '',
    message: `${kind} rule "${rule.name}" of policy "${policy.name}": ${message}`,
    hint,
    severity: 'warning',
  };
}

/** A rule's objects in kernel form, shared by every subject of its policy. */
interface RuleObjects {
  ruleIndex: number;
  kind: 'exec' | 'file';
  action: KernelAction.Allow | KernelAction.Audit | KernelAction.Block;
  readOnly: boolean;
  inodes: { dev: number; ino: bigint }[];
  directories: string[];
  recursive: boolean;
}

/**
 * Compiles the process and file rules of every policy for the known identities
 * (ids >= 1, validated by compilePolicySet) and id 0. Exact paths become
 * exact-file rules on the inode that `resolveInodeOf` returns now, so a path
 * that does not exist is skipped with a warning and a file created there later
 * is not covered until the next compilation. Directories become directory
 * rules. A glob path (in a rule with `glob: true`) cannot be expressed in the
 * kernel maps, so it is skipped with a warning while the rule's other paths
 * still compile.
 *
 * Audit mode turns Block rules and Block postures into Audit, as for egress.
 * Every subject that a policy selects gets a subject entry with its combined
 * process and file postures. The kernel applies a posture when the subject's
 * policies have Allow rules of that kind, also when every path of those rules
 * was skipped, so a missing allow-listed file does not turn an allowlist off.
 */
export function compileLsmPolicySet(
  set: PolicySet,
  identities: ReadonlyArray<KnownIdentity>,
  resolveInodeOf: InodeResolver = resolveInode,
): LsmPolicyCompilation {
  const known = identities.map((identity) => ({ id: identity.id, spiffeId: canonicalSpiffeId(identity.spiffeId) }));
  const rules: LsmRuleRef[] = [];
  const warnings: ConfigIssue[] = [];
  const inodeCache = new Map<string, { dev: number; ino: bigint } | null>();

  const inodeOf = (path: string): { dev: number; ino: bigint } | null => {
    if (!inodeCache.has(path)) {
      inodeCache.set(path, existsSync(path) ? resolveInodeOf(path) : null);
    }
    return inodeCache.get(path)!;
  };

  // Rules are numbered and resolved once, then emitted for every subject of their policy.
  const objectsByPolicy = set.policies.map((policy) => {
    const lists: ['process' | 'file', readonly (ProcessRule | FileRule)[]][] = [
      ['process', policy.process],
      ['file', policy.file],
    ];
    const compiled: RuleObjects[] = [];
    for (const [kind, list] of lists) {
      for (const rule of list) {
        const ruleIndex = rules.length;
        rules.push(ruleRef(policy, rule, kind));
        const objects: RuleObjects = {
          ruleIndex,
          kind: kind === 'process' ? 'exec' : 'file',
          action: KERNEL_ACTIONS[effectiveAction(rule.action, policy.mode)],
          readOnly: 'readOnly' in rule && rule.readOnly,
          inodes: [],
          directories: [],
          recursive: rule.recursive,
        };
        for (const path of rule.paths) {
          if (rule.glob && path.includes(GLOB_CHARACTER)) {
            warnings.push(
              warning(rule, policy, kind, `glob path ${path} cannot be enforced by BPF LSM and is skipped`,
                'list the files, or use directories with recursive: true'),
            );
            continue;
          }
          const inode = inodeOf(path);
          if (!inode) {
            warnings.push(
              warning(rule, policy, kind, `path ${path} does not exist, so BPF LSM does not enforce it`,
                'the rule applies once the file exists and the agent reloads its policies'),
            );
            continue;
          }
          objects.inodes.push(inode);
        }
        for (const directory of rule.directories) {
          if (rule.glob && directory.includes(GLOB_CHARACTER)) {
            warnings.push(
              warning(rule, policy, kind, `glob directory ${directory} cannot be enforced by BPF LSM and is skipped`,
                'list the directories without glob characters'),
            );
            continue;
          }
          objects.directories.push(directory);
        }
        compiled.push(objects);
      }
    }
    return compiled;
  });

  const policyIndexesBySubject = new Map<number, number[]>();
  set.policies.forEach((policy, policyIndex) => {
    for (const subject of resolveSubject(policy.subjectSelector, known)) {
      const indexes = policyIndexesBySubject.get(subject) ?? [];
      indexes.push(policyIndex);
      policyIndexesBySubject.set(subject, indexes);
    }
  });

  const subjects: LsmSubjectPostures[] = [];
  const inodeRules: LsmInodeRule[] = [];
  const directoryRules: LsmDirectoryRule[] = [];
  const policiesBySubject = new Map<number, string[]>();
  for (const subject of [...policyIndexesBySubject.keys()].sort((a, b) => a - b)) {
    const policyIndexes = policyIndexesBySubject.get(subject)!;
    const policies = policyIndexes.map((index) => set.policies[index]);
    policiesBySubject.set(subject, policies.map((policy) => policy.name));
    // The postures apply when the policies have Allow rules of the kind, as decideExec and
    // decideOpen decide, also when those rules compiled to no map entry (a missing path).
    subjects.push({
      id: subject,
      execPosture: combinePostures(policies, 'process').posture === 'Block' ? KernelAction.Block : KernelAction.Audit,
      filePosture: combinePostures(policies, 'file').posture === 'Block' ? KernelAction.Block : KernelAction.Audit,
      hasExecAllow: policies.some((policy) => policy.process.some((rule) => rule.action === 'Allow')),
      hasFileAllow: policies.some((policy) => policy.file.some((rule) => rule.action === 'Allow')),
    });
    for (const policyIndex of policyIndexes) {
      for (const objects of objectsByPolicy[policyIndex]) {
        const base = { subject, kind: objects.kind, action: objects.action, ruleIndex: objects.ruleIndex };
        const readOnly = objects.readOnly ? { readOnly: true } : {};
        for (const inode of objects.inodes) inodeRules.push({ ...base, ...readOnly, ...inode });
        for (const path of objects.directories) {
          directoryRules.push({ ...base, ...readOnly, path, recursive: objects.recursive });
        }
      }
    }
  }
  return { ruleSet: { subjects, inodeRules, directoryRules }, rules, policiesBySubject, warnings };
}
