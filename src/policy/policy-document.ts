import { Document, isScalar, Node } from 'yaml';
import { SpiffeIdError } from '../identity/spiffe-id';
import { ConfigIssue, SourcePosition } from '../util/config-error';
import { YamlSource } from '../util/yaml-source';
import { formatPrefix, parseCidr } from './cidr';
import { mergePortRanges, parsePortEntry } from './ports';
import { canonicalSpiffeId, canonicalSpiffeIdPrefix, selectorKey } from './spiffe-selector';
import {
  Cidr,
  EgressDestination,
  EgressPosture,
  EgressRule,
  Policy,
  POLICY_API_VERSION,
  POLICY_KIND,
  PortRange,
  RuleAction,
  RuleProtocol,
  SpiffeSelector,
} from './types';
import { describeNode, FieldPath, YamlField, YamlFieldReader } from './yaml-fields';

const ROOT_FIELDS = ['apiVersion', 'kind', 'metadata', 'spec'] as const;
const METADATA_FIELDS = ['name'] as const;
const SPEC_FIELDS = ['subject', 'egressPosture', 'egress'] as const;
const SELECTOR_FIELDS = ['spiffeId', 'spiffeIdPrefix'] as const;
const RULE_FIELDS = ['name', 'action', 'to', 'ports', 'protocol'] as const;
const DESTINATION_FIELDS = ['spiffeId', 'spiffeIdPrefix', 'cidrs'] as const;

const ACTIONS: readonly RuleAction[] = ['Allow', 'Audit', 'Block'];
const POSTURES: readonly EgressPosture[] = ['Block', 'Audit'];
const PROTOCOLS: readonly RuleProtocol[] = ['TCP', 'UDP', 'Any'];

/** Kubernetes-style DNS label, the format of policy and rule names. */
const NAME_PATTERN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const NAME_MAX_LENGTH = 63;
const NAME_HINT =
  `use at most ${NAME_MAX_LENGTH} lowercase letters, digits and '-', ` +
  'starting and ending with a letter or digit';

const SPIFFE_ID_HINT = 'expected spiffe://<trust-domain>/<path>';
const SPIFFE_ID_PREFIX_HINT =
  'expected spiffe://<trust-domain> or spiffe://<trust-domain>/<path prefix>';

/** A name read from a document, with where it was written, for duplicate checks. */
export interface NamedAt {
  name: string;
  position: SourcePosition;
}

/** Formats a position as `file:line:column`. */
export function formatPosition(position: SourcePosition): string {
  return `${position.file}:${position.line}:${position.column}`;
}

/** Result of reading one document: the policy when it is valid, and its name when that is. */
export interface PolicyDocumentResult {
  policy?: Policy;
  name?: NamedAt;
}

/** A rule being read, with the facts that the contradiction check needs. */
interface ReadRule {
  rule: EgressRule;
  /** The name with the position of its value, or of the rule when the name is the default. */
  name: NamedAt;
  actionNode: Node | null;
  path: FieldPath;
}

/**
 * Validates one YAML document as an `IdentityPolicy` and records every problem in `issues`.
 * Returns undefined for an empty document. The policy is returned only when the document has
 * no errors, but its name is returned whenever it is valid, so duplicate names across a set
 * are still reported for documents with other errors.
 */
export function readPolicyDocument(
  source: YamlSource,
  document: Document.Parsed,
  issues: ConfigIssue[],
): PolicyDocumentResult | undefined {
  const root = document.contents;
  if (root === null || (isScalar(root) && root.value === null)) return undefined;

  const issueCountBefore = issues.length;
  const reader = new YamlFieldReader(source, document, issues);
  const fields = reader.readMap(root, [], ROOT_FIELDS);
  if (!fields) return {};

  checkHeader(reader, fields, root);
  const name = readMetadata(reader, fields, root);
  const spec = readSpec(reader, fields, root);

  if (issues.length > issueCountBefore || !name || !spec) return { name };
  const policy: Policy = {
    name: name.name,
    subject: spec.subject,
    egressPosture: spec.egressPosture,
    egress: spec.egress,
    position: reader.positionOf(root),
  };
  return { policy, name };
}

function checkHeader(reader: YamlFieldReader, fields: Map<string, YamlField>, root: Node): void {
  const apiVersionHint = `use ${POLICY_API_VERSION}`;
  const apiVersion = reader.requireField(fields, 'apiVersion', root, [], apiVersionHint);
  if (apiVersion) {
    const text = reader.readString(apiVersion, apiVersionHint);
    if (text !== undefined && text !== POLICY_API_VERSION) {
      reader.error(
        apiVersion.value,
        apiVersion.path,
        `unsupported apiVersion "${text}"`,
        apiVersionHint,
      );
    }
  }

  const kindHint = `use ${POLICY_KIND}`;
  const kind = reader.requireField(fields, 'kind', root, [], kindHint);
  if (kind) {
    const text = reader.readString(kind, kindHint);
    if (text !== undefined && text !== POLICY_KIND) {
      reader.error(kind.value, kind.path, `unsupported kind "${text}"`, kindHint);
    }
  }
}

function readMetadata(
  reader: YamlFieldReader,
  fields: Map<string, YamlField>,
  root: Node,
): NamedAt | undefined {
  const metadata = reader.requireField(fields, 'metadata', root, [], 'add metadata.name');
  if (!metadata) return undefined;
  const metadataFields = reader.readMap(metadata.value, metadata.path, METADATA_FIELDS);
  if (!metadataFields) return undefined;
  const nameField = reader.requireField(
    metadataFields,
    'name',
    metadata.value,
    metadata.path,
    NAME_HINT,
  );
  if (!nameField) return undefined;
  const name = readName(reader, nameField);
  return name === undefined ? undefined : { name, position: reader.positionOf(nameField.value) };
}

/** Reads a policy or rule name and checks its format. */
function readName(reader: YamlFieldReader, field: YamlField): string | undefined {
  const name = reader.readString(field, NAME_HINT);
  if (name === undefined) return undefined;
  if (name.length > NAME_MAX_LENGTH) {
    reader.error(
      field.value,
      field.path,
      `name "${name}" is ${name.length} characters long`,
      NAME_HINT,
    );
    return undefined;
  }
  if (!NAME_PATTERN.test(name)) {
    reader.error(field.value, field.path, `invalid name "${name}"`, NAME_HINT);
    return undefined;
  }
  return name;
}

interface ReadSpec {
  subject: SpiffeSelector;
  egressPosture: EgressPosture;
  egress: EgressRule[];
}

function readSpec(
  reader: YamlFieldReader,
  fields: Map<string, YamlField>,
  root: Node,
): ReadSpec | undefined {
  const spec = reader.requireField(fields, 'spec', root, [], 'add spec.subject and spec.egress');
  if (!spec) return undefined;
  const specFields = reader.readMap(spec.value, spec.path, SPEC_FIELDS);
  if (!specFields) return undefined;

  let subject: SpiffeSelector | undefined;
  const subjectField = reader.requireField(
    specFields,
    'subject',
    spec.value,
    spec.path,
    'add spiffeId or spiffeIdPrefix',
  );
  if (subjectField) subject = readSubject(reader, subjectField);

  let egressPosture: EgressPosture | undefined = 'Block';
  const postureField = specFields.get('egressPosture');
  if (postureField) egressPosture = reader.readChoice(postureField, POSTURES);

  let egress: EgressRule[] | undefined = [];
  const egressField = specFields.get('egress');
  if (egressField) egress = readEgress(reader, egressField);

  if (!subject || !egressPosture || !egress) return undefined;
  return { subject, egressPosture, egress };
}

function readSubject(reader: YamlFieldReader, field: YamlField): SpiffeSelector | undefined {
  const fields = reader.readMap(field.value, field.path, SELECTOR_FIELDS);
  if (!fields) return undefined;
  const exactlyOne = checkExactlyOne(reader, field, fields, SELECTOR_FIELDS);
  const selector = readSelectorFields(reader, fields);
  return exactlyOne ? selector : undefined;
}

/** Records an issue unless the map has exactly one of the fields in `choices`. */
function checkExactlyOne(
  reader: YamlFieldReader,
  field: YamlField,
  fields: Map<string, YamlField>,
  choices: readonly string[],
  hint?: string,
): boolean {
  const present = choices.filter((name) => fields.has(name));
  if (present.length === 1) return true;
  const found = present.length === 0 ? 'none' : present.join(' and ');
  reader.error(
    field.value,
    field.path,
    `expected exactly one of ${choices.join(', ')}, found ${found}`,
    hint,
  );
  return false;
}

/**
 * Validates the `spiffeId` and `spiffeIdPrefix` fields that are present, and returns the
 * selector of the first valid one. Callers check separately that only one is present.
 */
function readSelectorFields(
  reader: YamlFieldReader,
  fields: Map<string, YamlField>,
): SpiffeSelector | undefined {
  let selector: SpiffeSelector | undefined;
  const idField = fields.get('spiffeId');
  if (idField) {
    const text = reader.readString(idField, SPIFFE_ID_HINT);
    const id = text === undefined ? undefined : parseSpiffe(reader, idField, text, 'id');
    if (id !== undefined) selector = { kind: 'spiffeId', spiffeId: id };
  }
  const prefixField = fields.get('spiffeIdPrefix');
  if (prefixField) {
    const text = reader.readString(prefixField, SPIFFE_ID_PREFIX_HINT);
    const prefix =
      text === undefined ? undefined : parseSpiffe(reader, prefixField, text, 'prefix');
    if (prefix !== undefined) selector ??= { kind: 'spiffeIdPrefix', spiffeIdPrefix: prefix };
  }
  return selector;
}

/** Returns the canonical SPIFFE ID or prefix, or records the parser's reason as an issue. */
function parseSpiffe(
  reader: YamlFieldReader,
  field: YamlField,
  text: string,
  form: 'id' | 'prefix',
): string | undefined {
  try {
    return form === 'id' ? canonicalSpiffeId(text) : canonicalSpiffeIdPrefix(text);
  } catch (error) {
    if (!(error instanceof SpiffeIdError)) throw error;
    reader.error(
      field.value,
      field.path,
      error.message,
      form === 'id' ? SPIFFE_ID_HINT : SPIFFE_ID_PREFIX_HINT,
    );
    return undefined;
  }
}

function readEgress(reader: YamlFieldReader, field: YamlField): EgressRule[] | undefined {
  const items = reader.readList(field, 'expected a list of egress rules');
  if (!items) return undefined;

  const rules: ReadRule[] = [];
  let valid = true;
  const namePositions = new Map<string, SourcePosition>();
  items.forEach((item, index) => {
    const read = readRule(reader, item.value, item.path, index);
    if (!read.rule) valid = false;
    if (read.name === undefined) return;

    // Names are checked even for rules with other errors, so every problem shows at once.
    const earlier = namePositions.get(read.name.name);
    if (earlier) {
      reader.errorAt(
        read.name.position,
        [...item.path, 'name'],
        `duplicate rule name "${read.name.name}", first used at ${formatPosition(earlier)}`,
        'give every rule of a policy a different name',
      );
      valid = false;
    } else {
      namePositions.set(read.name.name, read.name.position);
    }
    if (read.rule) rules.push(read as ReadRule);
  });
  if (!checkContradictions(reader, rules)) valid = false;
  return valid ? rules.map((read) => read.rule) : undefined;
}

/**
 * Reads one egress rule. The result has no `rule` when the rule has errors, and no `name` when
 * the name is invalid.
 */
function readRule(
  reader: YamlFieldReader,
  node: Node | null,
  path: FieldPath,
  index: number,
): Partial<ReadRule> {
  const fields = reader.readMap(node, path, RULE_FIELDS);
  if (!fields) return {};

  let name: string | undefined = `egress-${index}`;
  const nameField = fields.get('name');
  if (nameField) name = readName(reader, nameField);

  let action: RuleAction | undefined;
  const actionField = reader.requireField(
    fields,
    'action',
    node,
    path,
    `valid values: ${ACTIONS.join(', ')}`,
  );
  if (actionField) action = reader.readChoice(actionField, ACTIONS);

  let to: EgressDestination | undefined = { kind: 'any' };
  const toField = fields.get('to');
  if (toField) to = readDestination(reader, toField);

  let ports: PortRange[] | null | undefined = null;
  const portsField = fields.get('ports');
  if (portsField) ports = readPorts(reader, portsField);

  let protocol: RuleProtocol | undefined = 'Any';
  const protocolField = fields.get('protocol');
  if (protocolField) protocol = reader.readChoice(protocolField, PROTOCOLS);

  const namedAt =
    name === undefined
      ? undefined
      : { name, position: reader.positionOf(nameField?.value ?? node) };
  if (name === undefined || !action || !to || ports === undefined || !protocol) {
    return { name: namedAt };
  }
  const rule: EgressRule = { name, action, to, ports, protocol, position: reader.positionOf(node) };
  return { rule, name: namedAt, actionNode: actionField?.value ?? null, path };
}

function readDestination(reader: YamlFieldReader, field: YamlField): EgressDestination | undefined {
  const fields = reader.readMap(field.value, field.path, DESTINATION_FIELDS);
  if (!fields) return undefined;
  const hint = 'remove "to" to match every destination';
  const exactlyOne = checkExactlyOne(reader, field, fields, DESTINATION_FIELDS, hint);
  const peer = readSelectorFields(reader, fields);
  const cidrsField = fields.get('cidrs');
  const cidrs = cidrsField ? readCidrs(reader, cidrsField) : undefined;
  if (!exactlyOne) return undefined;
  if (cidrsField) return cidrs ? { kind: 'cidrs', cidrs } : undefined;
  return peer ? { kind: 'peer', peer } : undefined;
}

function readCidrs(reader: YamlFieldReader, field: YamlField): Cidr[] | undefined {
  const listHint = 'expected a list such as [10.0.0.0/8, "2001:db8::/32"]';
  const items = reader.readList(field, listHint);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.error(
      field.value,
      field.path,
      'cidrs is empty',
      `${listHint}, or remove "to" to match every destination`,
    );
    return undefined;
  }
  const cidrs: Cidr[] = [];
  let valid = true;
  for (const item of items) {
    const node = item.value;
    if (!isScalar(node) || typeof node.value !== 'string') {
      reader.error(
        node,
        item.path,
        `expected a CIDR string, found ${describeNode(node)}`,
        listHint,
      );
      valid = false;
      continue;
    }
    const result = parseCidr(node.value);
    if (!result.ok) {
      reader.error(node, item.path, `invalid CIDR "${node.value}": ${result.reason}`, result.hint);
      valid = false;
      continue;
    }
    cidrs.push(result.cidr);
  }
  return valid ? cidrs : undefined;
}

function readPorts(reader: YamlFieldReader, field: YamlField): PortRange[] | undefined {
  const listHint = 'expected a list such as [8080, "9000-9100"]';
  const items = reader.readList(field, listHint);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.error(
      field.value,
      field.path,
      'ports is empty',
      `${listHint}, or remove "ports" to match every port`,
    );
    return undefined;
  }
  const ranges: PortRange[] = [];
  let valid = true;
  for (const item of items) {
    const node = item.value;
    const value = isScalar(node) ? node.value : node;
    const result = parsePortEntry(value);
    if (!result.ok) {
      reader.error(node, item.path, `invalid port: ${result.reason}`, result.hint);
      valid = false;
      continue;
    }
    ranges.push(result.range);
  }
  return valid ? ranges : undefined;
}

/**
 * Reports pairs of rules in one policy with the same destination, ports and protocol where
 * one allows and the other blocks. Returns false when it found any.
 */
function checkContradictions(reader: YamlFieldReader, rules: readonly ReadRule[]): boolean {
  const firstByKey = new Map<string, ReadRule>();
  let valid = true;
  for (const read of rules) {
    const { rule } = read;
    if (rule.action === 'Audit') continue;
    const key = matchKey(rule);
    const earlier = firstByKey.get(key);
    if (!earlier) {
      firstByKey.set(key, read);
      continue;
    }
    if (earlier.rule.action === rule.action) continue;
    reader.error(
      read.actionNode,
      [...read.path, 'action'],
      `rule "${rule.name}" (${rule.action}) contradicts rule "${earlier.rule.name}" ` +
        `(${earlier.rule.action}) at ${formatPosition(earlier.rule.position)}: ` +
        'both have the same destination, ports and protocol',
      'remove one of the two rules, or make one of them Audit',
    );
    valid = false;
  }
  return valid;
}

/** Returns a text key that is equal for rules matching the same connections. */
function matchKey(rule: EgressRule): string {
  let destination: string;
  if (rule.to.kind === 'any') {
    destination = 'any';
  } else if (rule.to.kind === 'peer') {
    destination = selectorKey(rule.to.peer);
  } else {
    const prefixes = new Set(rule.to.cidrs.map((cidr) => formatPrefix(cidr.addr, cidr.prefixLen)));
    destination = `cidrs:${[...prefixes].sort().join(',')}`;
  }
  const ports =
    rule.ports === null
      ? 'any'
      : mergePortRanges(rule.ports)
          .map((range) => `${range.lo}-${range.hi}`)
          .join(',');
  return `${destination}|${ports}|${rule.protocol}`;
}
