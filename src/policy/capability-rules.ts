import { isScalar, Node } from 'yaml';
import { SourcePosition } from '../util/config-error';
import {
  checkContradictions,
  checkMapRules,
  readRuleBase,
  readRuleList,
  RuleReadResult,
  ruleBaseOf,
} from './rule-fields';
import { CAPABILITY_NAMES, CAPABILITY_RULE_SCHEMA, fieldNames } from './schema';
import { CapabilityRule } from './types';
import { describeNode, FieldPath, YamlField, YamlFieldReader } from './yaml-fields';

const LIST_HINT = 'expected a list of capability names such as [NET_RAW, SYS_ADMIN]';

/** Reads `spec.capability`. */
export function readCapabilityRules(
  reader: YamlFieldReader,
  field: YamlField,
  namePositions: Map<string, SourcePosition>,
): CapabilityRule[] | undefined {
  return readRuleList<CapabilityRule>(
    reader,
    field,
    'capability',
    namePositions,
    (node, path, index) => readCapabilityRule(reader, node, path, index),
    (_, rules) =>
      checkContradictions(
        reader,
        rules,
        (rule) => rule.capabilities,
        (name) => `match the capability ${name}`,
      ),
  );
}

function readCapabilityRule(
  reader: YamlFieldReader,
  node: Node | null,
  path: FieldPath,
  index: number,
): RuleReadResult<CapabilityRule> {
  const fields = reader.readMap(node, path, fieldNames(CAPABILITY_RULE_SCHEMA));
  if (!fields) return {};
  const base = readRuleBase(reader, fields, node, path, 'capability', index);
  const capabilitiesField = reader.requireField(
    fields,
    'capabilities',
    node,
    path,
    'add capabilities: [NET_RAW] or another list of capability names',
  );
  const capabilities = capabilitiesField
    ? readCapabilityNames(reader, capabilitiesField)
    : undefined;
  const consistent = checkMapRules(reader, CAPABILITY_RULE_SCHEMA, node, path, fields);
  if (!base.valid || !capabilities || !consistent) return { name: base.namedAt };
  const rule: CapabilityRule = {
    ...ruleBaseOf(base),
    capabilities,
    position: reader.positionOf(node),
  };
  return { rule, name: base.namedAt, actionNode: base.actionNode, path };
}

/** Reads a list of capability names; a name listed twice is kept once. */
export function readCapabilityNames(
  reader: YamlFieldReader,
  field: YamlField,
): string[] | undefined {
  const items = reader.readList(field, LIST_HINT);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.error(
      field.value,
      field.path,
      'capabilities is empty',
      `${LIST_HINT}, or remove the rule`,
    );
    return undefined;
  }
  const names: string[] = [];
  let valid = true;
  for (const item of items) {
    const node = item.value;
    if (!isScalar(node) || typeof node.value !== 'string') {
      reader.error(
        node,
        item.path,
        `expected a capability name, found ${describeNode(node)}`,
        LIST_HINT,
      );
      valid = false;
      continue;
    }
    const problem = capabilityNameProblem(node.value);
    if (problem) {
      reader.error(node, item.path, `invalid capability "${node.value}"`, problem);
      valid = false;
      continue;
    }
    if (!names.includes(node.value)) names.push(node.value);
  }
  return valid ? names : undefined;
}

/** Returns a hint for a name that is not a capability, or null for a valid name. */
export function capabilityNameProblem(text: string): string | null {
  if ((CAPABILITY_NAMES as readonly string[]).includes(text)) return null;
  const upper = text.toUpperCase();
  const bare = upper.startsWith('CAP_') ? upper.slice('CAP_'.length) : upper;
  if ((CAPABILITY_NAMES as readonly string[]).includes(bare)) {
    return `write ${bare}: capability names are upper case and have no CAP_ prefix`;
  }
  return `valid names are those of capabilities(7) without CAP_: ${CAPABILITY_NAMES.join(', ')}`;
}
