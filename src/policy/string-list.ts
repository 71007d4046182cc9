import { isScalar } from 'yaml';
import { describeNode, YamlField, YamlFieldReader } from './yaml-fields';

/** Result of parsing one entry of a string list: the value, or the error to report. */
export type StringEntryResult<T> =
  { ok: true; value: T } | { ok: false; message: string; hint?: string };

/** Wording and parser of one list field whose entries are strings, such as cidrs or paths. */
export interface StringListSpec<T> {
  /** Field name in the error for an empty list. */
  name: string;
  /** Hint for a value that is not a list or an entry that is not a string. */
  listHint: string;
  /** Alternative to an empty list in its error's hint, after "or", such as 'remove it'. */
  emptyFix: string;
  /** The entry that is expected, in the error for one that is not a string, such as 'a path string'. */
  entry: string;
  parse(text: string): StringEntryResult<T>;
  /** Whether a value that the list contains twice is kept once, compared with ===. */
  unique?: boolean;
}

/**
 * Reads a non-empty YAML list of strings and parses each entry, and returns
 * the values in list order. Reports an error for an empty list and for each
 * entry that is not a string or does not parse, and then returns undefined.
 */
export function readStringList<T>(
  reader: YamlFieldReader,
  field: YamlField,
  spec: StringListSpec<T>,
): T[] | undefined {
  const items = reader.readList(field, spec.listHint);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.error(
      field.value,
      field.path,
      `${spec.name} is empty`,
      `${spec.listHint}, or ${spec.emptyFix}`,
    );
    return undefined;
  }
  const values: T[] = [];
  let valid = true;
  for (const item of items) {
    const node = item.value;
    if (!isScalar(node) || typeof node.value !== 'string') {
      reader.error(
        node,
        item.path,
        `expected ${spec.entry}, found ${describeNode(node)}`,
        spec.listHint,
      );
      valid = false;
      continue;
    }
    const result = spec.parse(node.value);
    if (!result.ok) {
      reader.error(node, item.path, result.message, result.hint);
      valid = false;
      continue;
    }
    if (!spec.unique || !values.includes(result.value)) values.push(result.value);
  }
  return valid ? values : undefined;
}
