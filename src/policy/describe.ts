import { formatPrefix } from './cidr';
import { mergePortRanges } from './ports';
import {
  CapabilityRule,
  EgressDestination,
  EgressRule,
  FileRule,
  IngressRule,
  PathObjects,
  PortRange,
  ProcessRule,
  RuleBase,
  RuleKind,
  RuleProtocol,
  SubjectSelector,
} from './types';

/** A rule of any kind with its kind, as the CLI and the diff handle rules. */
export type KindedRule =
  | { kind: 'egress'; rule: EgressRule }
  | { kind: 'ingress'; rule: IngressRule }
  | { kind: 'process'; rule: ProcessRule }
  | { kind: 'file'; rule: FileRule }
  | { kind: 'capability'; rule: CapabilityRule };

/** Describes a policy subject, such as `spiffeIdPrefix spiffe://example.org/ns`. */
export function describeSubject(subject: SubjectSelector): string {
  switch (subject.kind) {
    case 'spiffeId':
      return subject.spiffeId;
    case 'spiffeIdPrefix':
      return `spiffeIdPrefix ${subject.spiffeIdPrefix}`;
    case 'trustDomain':
      return `trustDomain ${subject.trustDomain}`;
    case 'unidentified':
      return 'unidentified (processes without a SPIFFE ID)';
  }
}

/**
 * Describes what a rule matches and does, without its name and position, such as
 * `Allow to cidrs 10.0.0.0/8 ports 5432 TCP`. Sets are sorted and port ranges merged, so two
 * rules that match the same operations the same way have the same text.
 */
export function describeRule(kinded: KindedRule): string {
  const { rule } = kinded;
  let objects: string;
  switch (kinded.kind) {
    case 'egress':
      objects = `to ${describePeer(kinded.rule.to)}${describeNetwork(kinded.rule.ports, kinded.rule.protocol)}`;
      break;
    case 'ingress':
      objects = `from ${describePeer(kinded.rule.from)}${describeNetwork(kinded.rule.ports, kinded.rule.protocol)}`;
      break;
    case 'process':
      objects = `exec of ${describePaths(kinded.rule)}`;
      break;
    case 'file': {
      const readOnly = kinded.rule.readOnly ? ' (readOnly: writes Blocked)' : '';
      objects = `open of ${describePaths(kinded.rule)}${readOnly}`;
      break;
    }
    case 'capability':
      objects = `use of capabilities ${[...kinded.rule.capabilities].sort().join(', ')}`;
      break;
  }
  return `${rule.action} ${objects}${describeAnnotations(rule)}`;
}

/** Returns the rules of a policy with their kinds, in kind order and then list order. */
export function rulesOf(policy: {
  egress: readonly EgressRule[];
  ingress: readonly IngressRule[];
  process: readonly ProcessRule[];
  file: readonly FileRule[];
  capability: readonly CapabilityRule[];
}): KindedRule[] {
  return [
    ...policy.egress.map((rule) => ({ kind: 'egress' as const, rule })),
    ...policy.ingress.map((rule) => ({ kind: 'ingress' as const, rule })),
    ...policy.process.map((rule) => ({ kind: 'process' as const, rule })),
    ...policy.file.map((rule) => ({ kind: 'file' as const, rule })),
    ...policy.capability.map((rule) => ({ kind: 'capability' as const, rule })),
  ];
}

/** Names a rule kind as the operation it governs, such as `egress (connect)`. */
export function describeKind(kind: RuleKind): string {
  const operations: Record<RuleKind, string> = {
    egress: 'egress (connect)',
    ingress: 'ingress (accept)',
    process: 'process (exec)',
    file: 'file (open)',
    capability: 'capability (use)',
  };
  return operations[kind];
}

function describePeer(peer: EgressDestination): string {
  switch (peer.kind) {
    case 'any':
      return 'anywhere';
    case 'peer':
      return peer.peer.kind === 'spiffeId'
        ? `spiffeId ${peer.peer.spiffeId}`
        : `spiffeIdPrefix ${peer.peer.spiffeIdPrefix}`;
    case 'cidrs': {
      const prefixes = new Set(peer.cidrs.map((cidr) => formatPrefix(cidr.addr, cidr.prefixLen)));
      return `cidrs ${[...prefixes].sort().join(', ')}`;
    }
  }
}

function describeNetwork(ports: readonly PortRange[] | null, protocol: RuleProtocol): string {
  const portText =
    ports === null
      ? 'every port'
      : `ports ${mergePortRanges(ports)
          .map((range) => (range.lo === range.hi ? `${range.lo}` : `${range.lo}-${range.hi}`))
          .join(', ')}`;
  const protocolText = protocol === 'Any' ? 'TCP and UDP' : protocol;
  return ` ${portText} ${protocolText}`;
}

function describePaths(objects: PathObjects): string {
  const parts: string[] = [];
  if (objects.paths.length > 0) parts.push(`paths ${[...objects.paths].sort().join(', ')}`);
  if (objects.directories.length > 0) {
    const depth = objects.recursive ? ' (recursive)' : '';
    parts.push(`directories ${[...objects.directories].sort().join(', ')}${depth}`);
  }
  // Only a rule with glob: true can contain '*', so the flag needs no words of its own.
  return parts.join('; ');
}

function describeAnnotations(rule: RuleBase): string {
  let text = '';
  if (rule.severity !== undefined) text += ` severity ${rule.severity}`;
  if (rule.tags.length > 0) text += ` tags ${[...rule.tags].sort().join(', ')}`;
  if (rule.message !== undefined) text += ` message ${JSON.stringify(rule.message)}`;
  return text;
}
