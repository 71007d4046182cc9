import { Node } from 'yaml';
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
import { readStringList } from './string-list';
import { CapabilityRule } from './types';
import { FieldPath, YamlField, YamlFieldReader } from './yaml-fields';

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
  return readStringList(reader, field, {
    name: 'capabilities',
    listHint: LIST_HINT,
    emptyFix: 'remove the rule',
    entry: 'a capability name',
    parse: (text) => {
      const problem = capabilityNameProblem(text);
      if (problem) return { ok: false, message: `invalid capability "${text}"`, hint: problem };
      return { ok: true, value: text };
    },
    unique: true,
  });
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
