import { Document, isAlias, isMap, isScalar, isSeq, Node, Scalar } from 'yaml';
import { ConfigIssue, SourcePosition } from '../util/config-error';
import { formatFieldPath, positionOf, YamlSource } from '../util/yaml-source';

/** Path of keys and list indexes from the document root, as `formatFieldPath` takes it. */
export type FieldPath = (string | number)[];

/** One `key: value` entry of a YAML map, with the path of its value. */
export interface YamlField {
  key: Scalar;
  /** The value node with aliases resolved, or null when the entry has no value node at all. */
  value: Node | null;
  path: FieldPath;
}

/** One item of a YAML list with its path. */
export interface YamlItem {
  value: Node | null;
  path: FieldPath;
}

/**
 * Reads typed values out of one YAML document and records an issue, with position and field
 * path, for every value that has the wrong shape. The read methods return undefined after
 * recording an issue, so callers can keep going and report every problem in one pass.
 */
export class YamlFieldReader {
  constructor(
    private readonly source: YamlSource,
    private readonly document: Document.Parsed,
    readonly issues: ConfigIssue[],
  ) {}

  /** Returns the position of a node, or of the document start when it has none. */
  positionOf(node: Node | null | undefined): SourcePosition {
    return positionOf(this.source, node);
  }

  /** Records an error at a node. */
  error(node: Node | null | undefined, path: FieldPath, message: string, hint?: string): void {
    this.errorAt(this.positionOf(node), path, message, hint);
  }

  /** Records an error at a position. */
  errorAt(position: SourcePosition, path: FieldPath, message: string, hint?: string): void {
    this.issues.push({
      position,
      fieldPath: formatFieldPath(path),
      message,
      ...(hint === undefined ? {} : { hint }),
      severity: 'error',
    });
  }

  /**
   * Returns the fields of a map keyed by name. Records an issue for a value that is not a map,
   * for a non-string key, and for every key not in `allowed`.
   */
  readMap(
    node: Node | null,
    path: FieldPath,
    allowed: readonly string[],
  ): Map<string, YamlField> | undefined {
    const value = this.resolve(node);
    if (!isMap(value)) {
      this.error(value, path, `expected a map, found ${describeNode(value)}`, allowedHint(allowed));
      return undefined;
    }
    const fields = new Map<string, YamlField>();
    for (const pair of value.items) {
      const key = pair.key;
      if (!isScalar(key) || typeof key.value !== 'string') {
        this.error(isScalar(key) ? key : value, path, 'map keys must be strings');
        continue;
      }
      const fieldPath = [...path, key.value];
      if (!allowed.includes(key.value)) {
        const suggestion = suggestField(key.value, allowed);
        const hint = suggestion ? `did you mean "${suggestion}"? ` : '';
        this.error(key, fieldPath, `unknown field "${key.value}"`, hint + allowedHint(allowed));
        continue;
      }
      const fieldValue = isNode(pair.value) ? this.resolve(pair.value) : null;
      fields.set(key.value, { key, value: fieldValue, path: fieldPath });
    }
    return fields;
  }

  /** Records an issue at the map node when a required field is absent. */
  requireField(
    fields: Map<string, YamlField>,
    name: string,
    mapNode: Node | null,
    mapPath: FieldPath,
    hint?: string,
  ): YamlField | undefined {
    const field = fields.get(name);
    if (!field) this.error(mapNode, [...mapPath, name], `missing required field "${name}"`, hint);
    return field;
  }

  /** Returns the value of a field when it is a string scalar. */
  readString(field: YamlField, hint?: string): string | undefined {
    const node = field.value;
    if (isScalar(node) && typeof node.value === 'string') return node.value;
    this.error(
      node ?? field.key,
      field.path,
      `expected a string, found ${describeNode(node)}`,
      hint,
    );
    return undefined;
  }

  /** Returns the value of a field when it is one of `choices`, compared case-sensitively. */
  readChoice<T extends string>(field: YamlField, choices: readonly T[]): T | undefined {
    const hint = `valid values: ${choices.join(', ')}`;
    const text = this.readString(field, hint);
    if (text === undefined) return undefined;
    const choice = choices.find((candidate) => candidate === text);
    if (choice !== undefined) return choice;
    const caseMatch = choices.find((candidate) => candidate.toLowerCase() === text.toLowerCase());
    const fix = caseMatch ? `did you mean "${caseMatch}"? ` : '';
    const fieldName = String(field.key.value);
    this.error(field.value, field.path, `invalid ${fieldName} "${text}"`, fix + hint);
    return undefined;
  }

  /** Returns the value of a field when it is a boolean scalar (`true` or `false`, unquoted). */
  readBoolean(field: YamlField): boolean | undefined {
    const node = field.value;
    if (isScalar(node) && typeof node.value === 'boolean') return node.value;
    this.error(
      node ?? field.key,
      field.path,
      `expected true or false, found ${describeNode(node)}`,
      'write true or false without quotes',
    );
    return undefined;
  }

  /** Returns the items of a list field. */
  readList(field: YamlField, hint?: string): YamlItem[] | undefined {
    const node = field.value;
    if (!isSeq(node)) {
      this.error(
        node ?? field.key,
        field.path,
        `expected a list, found ${describeNode(node)}`,
        hint,
      );
      return undefined;
    }
    return node.items.map((item, index) => ({
      value: isNode(item) ? this.resolve(item) : null,
      path: [...field.path, index],
    }));
  }

  private resolve(node: Node | null | undefined): Node | null {
    if (isAlias(node)) return node.resolve(this.document) ?? null;
    return node ?? null;
  }
}

function isNode(value: unknown): value is Node {
  return isScalar(value) || isMap(value) || isSeq(value) || isAlias(value);
}

/** Describes a value for an error message: the scalar itself, or its kind. */
export function describeNode(node: Node | null | undefined): string {
  if (isMap(node)) return 'a map';
  if (isSeq(node)) return 'a list';
  if (!isScalar(node) || node.value === null || node.value === undefined) return 'an empty value';
  const value = node.value;
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  if (typeof value === 'number' || typeof value === 'boolean') {
    return `the ${typeof value} ${String(value)}`;
  }
  return JSON.stringify(value) ?? String(value);
}

function allowedHint(allowed: readonly string[]): string {
  return `allowed fields: ${allowed.join(', ')}`;
}

/** Returns the allowed field closest to a misspelled one, within two edits, or undefined. */
function suggestField(field: string, allowed: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of allowed) {
    const distance = editDistance(field.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/** Levenshtein distance between two strings. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length];
}
