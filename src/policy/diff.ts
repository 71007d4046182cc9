import { postureField } from './actions';
import { formatPrefix } from './cidr';
import { describeRule, describeSubject, KindedRule, rulesOf } from './describe';
import { Decision, Explanation } from './evaluate';
import { explainOperation, Operation } from './operations';
import { mergePortRanges } from './ports';
import { CAPABILITY_NAMES } from './schema';
import { subjectKey, subjectMatches } from './spiffe-selector';
import {
  EgressDestination,
  PathObjects,
  Policy,
  PolicySet,
  PortRange,
  RULE_KINDS,
  RuleKind,
  RuleProtocol,
} from './types';

/** A rule that exists in only one of two sets, or differs between them. */
export interface RuleChange {
  /** Subject of the rule's policy, as `describeSubject` writes it. */
  subject: string;
  kind: RuleKind;
  policy: string;
  rule: string;
  change: 'added' | 'removed' | 'changed';
  /** `describeRule` text in the old set, absent for an added rule. */
  before?: string;
  /** `describeRule` text in the new set, absent for a removed rule. */
  after?: string;
}

/** A policy added or removed, or a policy-level setting that changed. */
export interface SettingChange {
  policy: string;
  subject: string;
  /** `policy` for an added or removed policy, otherwise the setting's field name. */
  setting:
    | 'policy'
    | 'mode'
    | 'egressPosture'
    | 'ingressPosture'
    | 'processPosture'
    | 'filePosture'
    | 'capabilityPosture';
  /** The old value, or `absent`. */
  before: string;
  /** The new value, or `absent`. */
  after: string;
}

/** An operation of a sampled subject whose verdict differs between two sets. */
export interface VerdictChange {
  /** The sampled subject's SPIFFE ID, or null for a process without one. */
  subject: string | null;
  operation: Operation;
  before: Explanation;
  after: Explanation;
}

/** Differences between an old and a new policy set. */
export interface PolicySetDiff {
  rules: RuleChange[];
  settings: SettingChange[];
  verdicts: VerdictChange[];
  /** Number of (subject, operation) pairs decided with both sets. */
  sampledOperations: number;
}

/** Returns whether two sets differ in rules, settings or sampled verdicts. */
export function hasChanges(diff: PolicySetDiff): boolean {
  return diff.rules.length > 0 || diff.settings.length > 0 || diff.verdicts.length > 0;
}

/**
 * Compares two policy sets. Rules are matched by policy name and rule name and compared by
 * what they match and do (`describeRule`), so reordered CIDRs or paths are no change.
 * Verdicts are compared on a sample with one concrete subject per subject that a policy of
 * either set names. Each such subject gets the operations derived from the objects of the
 * rules that apply to it in either set, plus one operation per rule kind that no rule matches.
 * NOTE: the sample can miss a change that shows only for other operations, such as a port
 * inside a changed range.
 */
export function diffPolicySets(before: PolicySet, after: PolicySet): PolicySetDiff {
  const verdicts: VerdictChange[] = [];
  let sampledOperations = 0;
  for (const subject of sampleSubjects([...before.policies, ...after.policies])) {
    const relevant = [...before.policies, ...after.policies].filter((policy) =>
      subjectMatches(policy.subjectSelector, subject),
    );
    for (const operation of sampleOperations(relevant, before, after, subject)) {
      sampledOperations++;
      const old = explainOperation(before, subject, operation);
      const current = explainOperation(after, subject, operation);
      if (!sameVerdict(old.decision, current.decision)) {
        verdicts.push({ subject, operation, before: old, after: current });
      }
    }
  }
  return {
    rules: diffRules(before.policies, after.policies),
    settings: diffSettings(before.policies, after.policies),
    verdicts,
    sampledOperations,
  };
}

function sameVerdict(a: Decision, b: Decision): boolean {
  return a.action === b.action && a.denied === b.denied && a.wouldBlock === b.wouldBlock;
}

/** Identifies a rule across sets: its subject, kind, policy and name. */
function ruleKey(policy: Policy, kinded: KindedRule): string {
  return JSON.stringify([
    subjectKey(policy.subjectSelector),
    kinded.kind,
    policy.name,
    kinded.rule.name,
  ]);
}

function diffRules(before: readonly Policy[], after: readonly Policy[]): RuleChange[] {
  const index = (policies: readonly Policy[]) => {
    const rules = new Map<string, { policy: Policy; kinded: KindedRule; text: string }>();
    for (const policy of policies) {
      for (const kinded of rulesOf(policy)) {
        rules.set(ruleKey(policy, kinded), { policy, kinded, text: describeRule(kinded) });
      }
    }
    return rules;
  };
  const old = index(before);
  const current = index(after);
  const changes: RuleChange[] = [];
  const entry = (found: { policy: Policy; kinded: KindedRule }) => ({
    subject: describeSubject(found.policy.subjectSelector),
    kind: found.kinded.kind,
    policy: found.policy.name,
    rule: found.kinded.rule.name,
  });
  for (const [key, was] of old) {
    const now = current.get(key);
    if (!now) changes.push({ ...entry(was), change: 'removed', before: was.text });
    else if (now.text !== was.text) {
      changes.push({ ...entry(now), change: 'changed', before: was.text, after: now.text });
    }
  }
  for (const [key, now] of current) {
    if (!old.has(key)) changes.push({ ...entry(now), change: 'added', after: now.text });
  }
  return changes.sort(
    (a, b) =>
      compareText(a.subject, b.subject) ||
      RULE_KINDS.indexOf(a.kind) - RULE_KINDS.indexOf(b.kind) ||
      compareText(a.policy, b.policy) ||
      compareText(a.rule, b.rule),
  );
}

function diffSettings(before: readonly Policy[], after: readonly Policy[]): SettingChange[] {
  const old = new Map(before.map((policy) => [policy.name, policy]));
  const current = new Map(after.map((policy) => [policy.name, policy]));
  const changes: SettingChange[] = [];
  for (const [name, was] of old) {
    const now = current.get(name);
    const subject = describeSubject((now ?? was).subjectSelector);
    if (!now) {
      changes.push({
        policy: name,
        subject,
        setting: 'policy',
        before: 'present',
        after: 'absent',
      });
      continue;
    }
    const settings = ['mode', ...RULE_KINDS.map(postureField)] as const;
    for (const setting of settings) {
      if (was[setting] !== now[setting]) {
        changes.push({ policy: name, subject, setting, before: was[setting], after: now[setting] });
      }
    }
  }
  for (const [name, now] of current) {
    if (old.has(name)) continue;
    const subject = describeSubject(now.subjectSelector);
    changes.push({ policy: name, subject, setting: 'policy', before: 'absent', after: 'present' });
  }
  return changes.sort((a, b) => compareText(a.policy, b.policy));
}

/** Compares by UTF-16 code units, so the order does not depend on the locale. */
function compareText(a: string, b: string): number {
  if (a < b) return -1;
  if (a > b) return 1;
  return 0;
}

/** Returns one concrete subject per distinct policy subject, in first-seen order. */
function sampleSubjects(policies: readonly Policy[]): (string | null)[] {
  const subjects = new Map<string, string | null>();
  for (const policy of policies) {
    const subject = policy.subjectSelector;
    let sample: string | null;
    if (subject.kind === 'unidentified') sample = null;
    else if (subject.kind === 'trustDomain') sample = `spiffe://${subject.trustDomain}`;
    else if (subject.kind === 'spiffeIdPrefix') sample = subject.spiffeIdPrefix;
    else sample = subject.spiffeId;
    subjects.set(sample ?? '', sample);
  }
  return [...subjects.values()];
}

/** Returns a SPIFFE ID that a selector matches: the ID itself or the prefix as an ID. */
function sampleIdentity(peer: EgressDestination): string | null {
  if (peer.kind !== 'peer') return null;
  return peer.peer.kind === 'spiffeId' ? peer.peer.spiffeId : peer.peer.spiffeIdPrefix;
}

// Documentation address ranges (RFC 5737, RFC 3849) and paths that policies rarely name.
const MISS_ADDRESSES = ['203.0.113.77', '198.51.100.77', '192.0.2.77', '2001:db8:ffff::77'];
const MISS_PORT = 65001;
const MISS_PATHS = ['/nonexistent/sigil-diff-sample', '/var/empty/sigil-diff-sample/entry'];
// Values for rules that match every destination or every port.
const ANY_ADDRESS = '192.0.2.1';
const ANY_PORT = 443;

/** Returns the operations to decide for one subject, without duplicates. */
function sampleOperations(
  relevant: readonly Policy[],
  before: PolicySet,
  after: PolicySet,
  subject: string | null,
): Operation[] {
  const operations = new Map<string, Operation>();
  const add = (operation: Operation) => operations.set(JSON.stringify(operation), operation);
  for (const policy of relevant) {
    for (const kinded of rulesOf(policy)) {
      for (const operation of operationsOfRule(kinded)) add(operation);
    }
  }
  for (const kind of RULE_KINDS) {
    const miss = findMiss(kind, before, after, subject);
    if (miss) add(miss);
  }
  return [...operations.values()];
}

function operationsOfRule(kinded: KindedRule): Operation[] {
  switch (kinded.kind) {
    case 'egress':
    case 'ingress': {
      const rule = kinded.rule;
      const peer = kinded.kind === 'egress' ? kinded.rule.to : kinded.rule.from;
      return networkOperations(kinded.kind, peer, rule.ports, rule.protocol);
    }
    case 'process':
      return samplePaths(kinded.rule).map((path) => ({ kind: 'process', path }));
    case 'file':
      return samplePaths(kinded.rule).flatMap((path) => [
        { kind: 'file' as const, path, write: false },
        { kind: 'file' as const, path, write: true },
      ]);
    case 'capability':
      return kinded.rule.capabilities.map((capability) => ({ kind: 'capability', capability }));
  }
}

function networkOperations(
  kind: 'egress' | 'ingress',
  peer: EgressDestination,
  ports: readonly PortRange[] | null,
  protocol: RuleProtocol,
): Operation[] {
  let endpoints: { address: string; peer: string | null }[];
  if (peer.kind === 'cidrs') {
    endpoints = peer.cidrs.map((cidr) => ({
      address: formatPrefix(cidr.addr, cidr.prefixLen).split('/')[0],
      peer: null,
    }));
  } else if (peer.kind === 'peer') {
    endpoints = [{ address: '127.0.0.1', peer: sampleIdentity(peer) }];
  } else {
    endpoints = [{ address: ANY_ADDRESS, peer: null }];
  }
  const portList =
    ports === null
      ? [ANY_PORT]
      : mergePortRanges(ports).flatMap((range) =>
          range.lo === range.hi ? [range.lo] : [range.lo, range.hi],
        );
  const protocols: ('TCP' | 'UDP')[] = protocol === 'Any' ? ['TCP', 'UDP'] : [protocol];
  const operations: Operation[] = [];
  for (const endpoint of endpoints) {
    for (const port of portList) {
      for (const transport of protocols) {
        operations.push({ kind, ...endpoint, port, protocol: transport });
      }
    }
  }
  return operations;
}

/** Returns concrete paths that a rule's paths and directories match. */
function samplePaths(objects: PathObjects): string[] {
  const concrete = (pattern: string) =>
    pattern
      .split('/')
      .map((segment) => (segment.includes('*') ? segment.replace(/\*+/g, 'sample') : segment))
      .join('/');
  const paths = objects.paths.map(concrete);
  for (const directory of objects.directories) {
    const base = directory === '/' ? '' : concrete(directory);
    paths.push(`${base}/sample`);
    // A nested entry shows whether recursive changed.
    paths.push(`${base}/sample/nested`);
  }
  return paths;
}

/** Returns an operation of a kind that no rule of either set matches for the subject. */
function findMiss(
  kind: RuleKind,
  before: PolicySet,
  after: PolicySet,
  subject: string | null,
): Operation | undefined {
  let candidates: Operation[];
  if (kind === 'egress' || kind === 'ingress') {
    candidates = MISS_ADDRESSES.map((address) => ({
      kind,
      address,
      port: MISS_PORT,
      protocol: 'TCP' as const,
      peer: null,
    }));
  } else if (kind === 'process') {
    candidates = MISS_PATHS.map((path) => ({ kind, path }));
  } else if (kind === 'capability') {
    candidates = CAPABILITY_NAMES.map((capability) => ({ kind, capability }));
  } else {
    candidates = MISS_PATHS.map((path) => ({ kind, path, write: false }));
  }
  return candidates.find(
    (operation) =>
      explainOperation(before, subject, operation).matches.length === 0 &&
      explainOperation(after, subject, operation).matches.length === 0,
  );
}
