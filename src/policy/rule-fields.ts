import { isScalar, Node } from 'yaml';
import { SpiffeIdError } from '../identity/spiffe-id';
import { SourcePosition } from '../util/config-error';
import {
  FieldConstraint,
  MapSchema,
  MESSAGE_MAX_LENGTH,
  NAME_MAX_LENGTH,
  NAME_PATTERN,
  RULE_SCHEMAS,
  TAG_MAX_LENGTH,
  TAG_PATTERN,
} from './schema';
import { canonicalSpiffeId, canonicalSpiffeIdPrefix } from './spiffe-selector';
import { RuleAction, RuleBase, RuleKind, Severity, SpiffeSelector } from './types';
import { describeNode, FieldPath, YamlField, YamlFieldReader } from './yaml-fields';

const NAME_REGEXP = new RegExp(NAME_PATTERN);
const TAG_REGEXP = new RegExp(TAG_PATTERN);

export const NAME_HINT =
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

/** A rule being read, with the facts that the duplicate and contradiction checks need. */
export interface ReadRule<R extends RuleBase> {
  rule: R;
  /** The name with the position of its value, or of the rule when the name is the default. */
  name: NamedAt;
  actionNode: Node | null;
  path: FieldPath;
}

/** Result of reading one rule: no `rule` when it has errors, no `name` when that is invalid. */
export type RuleReadResult<R extends RuleBase> = Partial<ReadRule<R>>;

/** Reads a policy or rule name and checks its format. */
export function readName(reader: YamlFieldReader, field: YamlField): string | undefined {
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
  if (!NAME_REGEXP.test(name)) {
    reader.error(field.value, field.path, `invalid name "${name}"`, NAME_HINT);
    return undefined;
  }
  return name;
}

/** Records an issue unless the map has exactly one of the fields in `choices`. */
export function checkExactlyOne(
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
 * Records an issue for every cross-field constraint of the schema that the map breaks, and
 * for a missing `atLeastOneOf` field. Returns false when it recorded any.
 */
export function checkMapRules(
  reader: YamlFieldReader,
  schema: MapSchema,
  node: Node | null,
  path: FieldPath,
  fields: Map<string, YamlField>,
): boolean {
  let valid = true;
  if (schema.atLeastOneOf && !schema.atLeastOneOf.some((name) => fields.has(name))) {
    const names = schema.atLeastOneOf.join(' or ');
    reader.error(node, path, `missing ${names}`, `add at least one of ${names}`);
    valid = false;
  }
  for (const constraint of schema.constraints ?? []) {
    if (!checkConstraint(reader, constraint, fields)) valid = false;
  }
  return valid;
}

function checkConstraint(
  reader: YamlFieldReader,
  constraint: FieldConstraint,
  fields: Map<string, YamlField>,
): boolean {
  const field = fields.get(constraint.field);
  if (!field || !isScalar(field.value) || field.value.value !== constraint.value) return true;
  const setting = `${constraint.field}: ${String(constraint.value)}`;
  if (constraint.kind === 'requires') {
    if (fields.has(constraint.requires)) return true;
    reader.error(
      field.value,
      field.path,
      `${setting} needs ${constraint.requires}`,
      `add ${constraint.requires}, or remove ${constraint.field}`,
    );
    return false;
  }
  const restricted = fields.get(constraint.restricted);
  const actual = restricted && isScalar(restricted.value) ? restricted.value.value : undefined;
  if (typeof actual !== 'string' || constraint.allowed.includes(actual)) return true;
  reader.error(
    field.value,
    field.path,
    `${setting} is not allowed with ${constraint.restricted} ${actual}`,
    `use ${constraint.restricted} ${constraint.allowed.join(' or ')}, or remove ${constraint.field}`,
  );
  return false;
}

/**
 * Validates the `spiffeId` and `spiffeIdPrefix` fields that are present, and returns the
 * selector of the first valid one. Callers check separately that only one is present.
 */
export function readSelectorFields(
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

/** The fields of `RuleBase` read from one rule map; an invalid field is undefined. */
export interface RuleBaseFields {
  name: string | undefined;
  namedAt: NamedAt | undefined;
  action: RuleAction | undefined;
  actionNode: Node | null;
  severity: Severity | undefined;
  tags: string[] | undefined;
  message: string | undefined;
  /** False when any of these fields had an error. */
  valid: boolean;
}

/** Reads name, action, severity, tags and message of a rule of any kind. */
export function readRuleBase(
  reader: YamlFieldReader,
  fields: Map<string, YamlField>,
  node: Node | null,
  path: FieldPath,
  kind: RuleKind,
  index: number,
): RuleBaseFields {
  const schema = RULE_SCHEMAS[kind].fields;
  let valid = true;

  let name: string | undefined = `${kind}-${index}`;
  const nameField = fields.get('name');
  if (nameField) name = readName(reader, nameField);

  const actions = schema.action.enum ?? [];
  let action: RuleAction | undefined;
  const actionField = reader.requireField(
    fields,
    'action',
    node,
    path,
    `valid values: ${actions.join(', ')}`,
  );
  if (actionField) action = reader.readChoice(actionField, actions);

  let severity: Severity | undefined;
  const severityField = fields.get('severity');
  if (severityField) {
    severity = reader.readChoice(severityField, schema.severity.enum ?? []);
    if (severity === undefined) valid = false;
  }

  let tags: string[] | undefined = [];
  const tagsField = fields.get('tags');
  if (tagsField) tags = readTags(reader, tagsField);

  let message: string | undefined;
  const messageField = fields.get('message');
  if (messageField) {
    message = readMessage(reader, messageField);
    if (message === undefined) valid = false;
  }

  const namedAt =
    name === undefined
      ? undefined
      : { name, position: reader.positionOf(nameField?.value ?? node) };
  if (name === undefined || action === undefined || tags === undefined) valid = false;
  return {
    name,
    namedAt,
    action,
    actionNode: actionField?.value ?? null,
    severity,
    tags,
    message,
    valid,
  };
}

/** Returns the base fields as a `RuleBase`, without the position. */
export function ruleBaseOf(read: RuleBaseFields): Omit<RuleBase, 'position'> {
  return {
    name: read.name!,
    action: read.action!,
    ...(read.severity === undefined ? {} : { severity: read.severity }),
    tags: read.tags!,
    ...(read.message === undefined ? {} : { message: read.message }),
  };
}

function readTags(reader: YamlFieldReader, field: YamlField): string[] | undefined {
  const hint = `expected a list such as [pci, "mitre:t1059"]`;
  const items = reader.readList(field, hint);
  if (!items) return undefined;
  const tagHint = `use 1 to ${TAG_MAX_LENGTH} lowercase letters, digits, ':', '.', '_' and '-'`;
  const seen = new Set<string>();
  let valid = true;
  for (const item of items) {
    const node = item.value;
    if (!isScalar(node) || typeof node.value !== 'string') {
      reader.error(node, item.path, `expected a tag string, found ${describeNode(node)}`, hint);
      valid = false;
      continue;
    }
    const tag = node.value;
    if (tag.length > TAG_MAX_LENGTH || !TAG_REGEXP.test(tag)) {
      reader.error(node, item.path, `invalid tag "${tag}"`, tagHint);
      valid = false;
    } else if (seen.has(tag)) {
      reader.error(node, item.path, `duplicate tag "${tag}"`, 'list every tag once');
      valid = false;
    }
    seen.add(tag);
  }
  return valid ? [...seen] : undefined;
}

function readMessage(reader: YamlFieldReader, field: YamlField): string | undefined {
  const message = reader.readString(field);
  if (message === undefined) return undefined;
  const length = [...message].length;
  if (length > MESSAGE_MAX_LENGTH) {
    reader.error(
      field.value,
      field.path,
      `message is ${length} characters long`,
      `use at most ${MESSAGE_MAX_LENGTH} characters`,
    );
    return undefined;
  }
  return message;
}

/**
 * Reads one rule list. Rule names must be unique within the policy across every kind, so
 * `namePositions` is shared by the lists of one policy. Returns undefined when any rule has
 * an error or two rules contradict each other.
 */
export function readRuleList<R extends RuleBase>(
  reader: YamlFieldReader,
  field: YamlField,
  kind: RuleKind,
  namePositions: Map<string, SourcePosition>,
  readOne: (node: Node | null, path: FieldPath, index: number) => RuleReadResult<R>,
  checkContradictions: (reader: YamlFieldReader, rules: readonly ReadRule<R>[]) => boolean,
): R[] | undefined {
  const items = reader.readList(field, `expected a list of ${kind} rules`);
  if (!items) return undefined;

  const rules: ReadRule<R>[] = [];
  let valid = true;
  items.forEach((item, index) => {
    const read = readOne(item.value, item.path, index);
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
    if (read.rule) rules.push(read as ReadRule<R>);
  });
  if (!checkContradictions(reader, rules)) valid = false;
  return valid ? rules.map((read) => read.rule) : undefined;
}

/**
 * Reports rules that allow and block the same object. `keysOf` returns a text key per object
 * of a rule, equal for objects that match the same operations, and `describeKey` the words
 * that follow "both" in the message. Audit rules never contradict. Returns false when it
 * found any contradiction.
 */
export function checkContradictions<R extends RuleBase>(
  reader: YamlFieldReader,
  rules: readonly ReadRule<R>[],
  keysOf: (rule: R) => readonly string[],
  describeKey: (key: string) => string,
): boolean {
  const firstByKey = new Map<string, ReadRule<R>>();
  let valid = true;
  for (const read of rules) {
    const { rule } = read;
    if (rule.action === 'Audit') continue;
    for (const key of keysOf(rule)) {
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
          `both ${describeKey(key)}`,
        'remove one of the two rules, or make one of them Audit',
      );
      valid = false;
      // One message per rule is enough to find the pair.
      break;
    }
  }
  return valid;
}
