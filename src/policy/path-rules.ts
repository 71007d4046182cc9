import { Node } from 'yaml';
import { SourcePosition } from '../util/config-error';
import { parseRulePath } from './paths';
import {
  checkContradictions,
  checkMapRules,
  readRuleBase,
  readRuleList,
  RuleReadResult,
  ruleBaseOf,
} from './rule-fields';
import { fieldNames, FILE_RULE_SCHEMA, PATH_MAX_LENGTH, PROCESS_RULE_SCHEMA } from './schema';
import { readStringList } from './string-list';
import { FileRule, PathObjects, ProcessRule } from './types';
import { FieldPath, YamlField, YamlFieldReader } from './yaml-fields';

/** Reads `spec.process`. */
export function readProcessRules(
  reader: YamlFieldReader,
  field: YamlField,
  namePositions: Map<string, SourcePosition>,
): ProcessRule[] | undefined {
  return readRuleList<ProcessRule>(
    reader,
    field,
    'process',
    namePositions,
    (node, path, index) => readProcessRule(reader, node, path, index),
    (_, rules) => checkContradictions(reader, rules, pathObjectKeys, describePathKey),
  );
}

/** Reads `spec.file`. */
export function readFileRules(
  reader: YamlFieldReader,
  field: YamlField,
  namePositions: Map<string, SourcePosition>,
): FileRule[] | undefined {
  return readRuleList<FileRule>(
    reader,
    field,
    'file',
    namePositions,
    (node, path, index) => readFileRule(reader, node, path, index),
    (_, rules) => checkContradictions(reader, rules, pathObjectKeys, describePathKey),
  );
}

function readProcessRule(
  reader: YamlFieldReader,
  node: Node | null,
  path: FieldPath,
  index: number,
): RuleReadResult<ProcessRule> {
  const fields = reader.readMap(node, path, fieldNames(PROCESS_RULE_SCHEMA));
  if (!fields) return {};
  const base = readRuleBase(reader, fields, node, path, 'process', index);
  const objects = readPathObjects(reader, fields);
  const consistent = checkMapRules(reader, PROCESS_RULE_SCHEMA, node, path, fields);
  if (!base.valid || !objects || !consistent) return { name: base.namedAt };
  const rule: ProcessRule = { ...ruleBaseOf(base), ...objects, position: reader.positionOf(node) };
  return { rule, name: base.namedAt, actionNode: base.actionNode, path };
}

function readFileRule(
  reader: YamlFieldReader,
  node: Node | null,
  path: FieldPath,
  index: number,
): RuleReadResult<FileRule> {
  const fields = reader.readMap(node, path, fieldNames(FILE_RULE_SCHEMA));
  if (!fields) return {};
  const base = readRuleBase(reader, fields, node, path, 'file', index);
  const objects = readPathObjects(reader, fields);
  let readOnly = FILE_RULE_SCHEMA.fields.readOnly.default;
  const readOnlyField = fields.get('readOnly');
  if (readOnlyField) readOnly = reader.readBoolean(readOnlyField);
  const consistent = checkMapRules(reader, FILE_RULE_SCHEMA, node, path, fields);
  if (!base.valid || !objects || readOnly === undefined || !consistent) {
    return { name: base.namedAt };
  }
  const rule: FileRule = {
    ...ruleBaseOf(base),
    ...objects,
    readOnly,
    position: reader.positionOf(node),
  };
  return { rule, name: base.namedAt, actionNode: base.actionNode, path };
}

/** Reads paths, directories, recursive and glob; returns undefined when any has an error. */
function readPathObjects(
  reader: YamlFieldReader,
  fields: Map<string, YamlField>,
): PathObjects | undefined {
  // Both kinds share these fields and their defaults.
  const schema = PROCESS_RULE_SCHEMA.fields;
  let glob = schema.glob.default;
  const globField = fields.get('glob');
  if (globField) glob = reader.readBoolean(globField);

  let recursive = schema.recursive.default;
  const recursiveField = fields.get('recursive');
  if (recursiveField) recursive = reader.readBoolean(recursiveField);

  // With an invalid glob flag the paths are read as patterns, so that the flag's error is not
  // repeated for every '*', and their other errors still show.
  const pathsField = fields.get('paths');
  const paths = pathsField ? readPathList(reader, pathsField, false, glob ?? true) : [];
  const directoriesField = fields.get('directories');
  const directories = directoriesField
    ? readPathList(reader, directoriesField, true, glob ?? true)
    : [];

  if (glob === undefined || recursive === undefined || !paths || !directories) return undefined;
  return { paths, directories, recursive, glob };
}

function readPathList(
  reader: YamlFieldReader,
  field: YamlField,
  directory: boolean,
  glob: boolean,
): string[] | undefined {
  const example = directory ? '[/usr/local/bin]' : '[/usr/bin/curl]';
  return readStringList(reader, field, {
    name: directory ? 'directories' : 'paths',
    listHint: `expected a list such as ${example}`,
    emptyFix: 'remove it',
    entry: 'a path string',
    parse: (text) => {
      const result = parseRulePath(text, { directory, glob, maxLength: PATH_MAX_LENGTH });
      if (result.ok) return { ok: true, value: result.path };
      return { ok: false, message: `invalid path "${text}": ${result.reason}`, hint: result.hint };
    },
    // A path listed twice is kept once.
    unique: true,
  });
}

/** Returns one key per object of a rule: `path:<p>` or `directory:<d>:<recursive>`. */
function pathObjectKeys(rule: PathObjects): string[] {
  return [
    ...rule.paths.map((path) => `path:${path}`),
    ...rule.directories.map((directory) => `directory:${directory}:${rule.recursive}`),
  ];
}

function describePathKey(key: string): string {
  if (key.startsWith('path:')) return `match the path ${key.slice('path:'.length)}`;
  const [, directory, recursive] = /^directory:(.*):(true|false)$/.exec(key)!;
  const depth = recursive === 'true' ? ' and everything below it' : '';
  return `match the entries of the directory ${directory}${depth}`;
}
