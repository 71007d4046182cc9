/**
 * Registration files: the list of SPIFFE IDs and the selectors a process must have to get one.
 *
 * ```yaml
 * apiVersion: sigil.dev/v1alpha1
 * kind: Registration
 * trustDomain: example.org        # optional: when set, every entry must be in it
 * entries:
 *   - spiffeId: spiffe://example.org/web
 *     selectors:
 *       - unix:uid:1001
 *       - cgroup:path:/sigil-demo/web
 * ```
 *
 * An empty file, or a file without entries, is a valid registration with zero entries.
 */

import { Document, isAlias, isMap, isScalar, isSeq, Node, Scalar, YAMLMap, YAMLSeq } from 'yaml';
import { ConfigError, ConfigIssue, SourcePosition } from '../util/config-error';
import {
  formatFieldPath,
  parseYamlSource,
  positionOf,
  readYamlSource,
  YamlSource,
} from '../util/yaml-source';
import { parseSelector, Selector, SelectorError } from './selector';
import { parseSpiffeId, parseTrustDomain, SpiffeIdError } from './spiffe-id';

export const REGISTRATION_API_VERSION = 'sigil.dev/v1alpha1';
export const REGISTRATION_KIND = 'Registration';

/** One SPIFFE ID and the selectors that a process must all have to receive it. */
export interface RegistrationEntry {
  /** The SPIFFE ID in its normalised string form. */
  spiffeId: string;
  selectors: Selector[];
  /** Position of the entry in the registration file. */
  position: SourcePosition;
}

/** A validated registration file. */
export interface Registration {
  file: string;
  /** The `trustDomain` field as a bare name, or null when the file does not set one. */
  trustDomain: string | null;
  /** Entries in file order. Attestation gives a process the first entry that matches it. */
  entries: RegistrationEntry[];
  /** Problems that do not make the file invalid, such as an entry that can never be chosen. */
  warnings: ConfigIssue[];
}

const TOP_LEVEL_FIELDS = ['apiVersion', 'kind', 'trustDomain', 'entries'];
const ENTRY_FIELDS = ['spiffeId', 'selectors'];
const SPIFFE_ID_HINT = 'expected spiffe://<trust domain>/<path>, e.g. spiffe://example.org/web';

type FieldPath = (string | number)[];

/**
 * Parses and validates registration YAML. Throws `ConfigError` listing every problem in the
 * file, each with its line, column and field path.
 */
export function parseRegistration(text: string, file: string): Registration {
  const { source, issues } = parseYamlSource(text, file);
  if (issues.length > 0) {
    throw new ConfigError(issues);
  }
  return new RegistrationReader(source).read();
}

/**
 * Reads and validates a registration file. Throws `ConfigError` for invalid content and a plain
 * `Error` naming the path when the file cannot be read.
 */
export function loadRegistrationFile(file: string): Registration {
  const { source, issues } = readYamlSource(file);
  if (issues.length > 0) {
    throw new ConfigError(issues);
  }
  return new RegistrationReader(source).read();
}

/** Walks one parsed file and collects the entries and every issue found. */
class RegistrationReader {
  private readonly issues: ConfigIssue[] = [];
  private readonly warnings: ConfigIssue[] = [];
  private readonly entries: RegistrationEntry[] = [];
  /** Index in the YAML `entries` list of each valid entry, which can differ after errors. */
  private readonly entryListIndexes: number[] = [];
  private trustDomain: string | null = null;
  private trustDomainLine = 0;

  constructor(private readonly source: YamlSource) {}

  read(): Registration {
    this.readDocuments();
    if (this.issues.length > 0) {
      throw new ConfigError([...this.issues, ...this.warnings]);
    }
    return {
      file: this.source.file,
      trustDomain: this.trustDomain,
      entries: this.entries,
      warnings: this.warnings,
    };
  }

  private get document(): Document.Parsed {
    return this.source.documents[0];
  }

  private readDocuments(): void {
    const documents = this.source.documents;
    if (documents.length === 0) {
      return;
    }
    if (documents.length > 1) {
      this.error(
        positionOf(this.source, documents[1].contents),
        [],
        `the file contains ${documents.length} YAML documents, expected one`,
        "remove the '---' separators or split the file",
      );
      return;
    }
    const root = this.resolve(this.document.contents);
    if (root === undefined || isNullScalar(root)) {
      return;
    }
    if (!isMap(root)) {
      this.error(
        positionOf(this.source, root),
        [],
        `the document is ${describeNode(root)}, expected a mapping`,
        `start the file with apiVersion: ${REGISTRATION_API_VERSION}`,
      );
      return;
    }
    this.readTopLevel(root);
  }

  private readTopLevel(root: YAMLMap): void {
    const fields = this.readFields(root, [], TOP_LEVEL_FIELDS);
    this.readFixedString(root, fields.get('apiVersion'), 'apiVersion', REGISTRATION_API_VERSION);
    this.readFixedString(root, fields.get('kind'), 'kind', REGISTRATION_KIND);

    const trustDomainNode = fields.get('trustDomain');
    if (trustDomainNode !== undefined) {
      this.readTrustDomain(trustDomainNode);
    }

    const entriesNode = fields.get('entries');
    if (entriesNode === undefined || isNullScalar(entriesNode)) {
      return;
    }
    if (!isSeq(entriesNode)) {
      this.error(
        positionOf(this.source, entriesNode),
        ['entries'],
        `entries is ${describeNode(entriesNode)}, expected a list`,
        'write each entry as a list item starting with "- spiffeId:"',
      );
      return;
    }
    this.readEntries(entriesNode);
  }

  /**
   * Returns the value nodes of a mapping by key, reporting keys that are unknown or not strings.
   */
  private readFields(map: YAMLMap, path: FieldPath, allowed: string[]): Map<string, Node> {
    const fields = new Map<string, Node>();
    for (const pair of map.items) {
      const keyNode = this.resolve(pair.key);
      const key = isScalar(keyNode) ? keyNode.value : undefined;
      const position = positionOf(this.source, keyNode ?? map);
      if (typeof key !== 'string' || !allowed.includes(key)) {
        this.error(
          position,
          path,
          `unknown field ${JSON.stringify(key ?? null)}`,
          `allowed fields are ${allowed.join(', ')}`,
        );
        continue;
      }
      let value = this.resolve(pair.value);
      if (value === undefined) {
        // A flow-style `{key}` has no value node, so an empty one is placed at the key.
        value = new Scalar(null);
        value.range = keyNode?.range;
      }
      fields.set(key, value);
    }
    return fields;
  }

  private readFixedString(
    map: YAMLMap,
    node: Node | undefined,
    field: string,
    expected: string,
  ): void {
    if (node === undefined) {
      this.error(
        positionOf(this.source, map),
        [field],
        `missing required field ${field}`,
        `add ${field}: ${expected}`,
      );
      return;
    }
    const value = isScalar(node) ? node.value : undefined;
    if (value !== expected) {
      this.error(
        positionOf(this.source, node),
        [field],
        `unsupported ${field} ${describeNode(node)}`,
        `expected ${field}: ${expected}`,
      );
    }
  }

  private readTrustDomain(node: Node): void {
    const text = this.readString(node, ['trustDomain'], 'expected a name such as example.org');
    if (text === undefined) {
      return;
    }
    try {
      this.trustDomain = parseTrustDomain(text);
      this.trustDomainLine = positionOf(this.source, node).line;
    } catch (error) {
      if (!(error instanceof SpiffeIdError)) {
        throw error;
      }
      this.error(
        positionOf(this.source, node),
        ['trustDomain'],
        error.message,
        'expected a name such as example.org',
      );
    }
  }

  private readEntries(list: YAMLSeq): void {
    // Maps the SPIFFE ID and selector set of each valid entry to that entry's index.
    const entryKeys = new Map<string, number>();
    list.items.forEach((item, index) => {
      const entry = this.readEntry(this.resolve(item), index);
      if (entry === undefined) {
        return;
      }
      const key = entryKey(entry);
      const firstIndex = entryKeys.get(key);
      if (firstIndex !== undefined) {
        const first = this.entries[firstIndex];
        this.error(
          entry.position,
          ['entries', index],
          `duplicate entry: same SPIFFE ID and selectors as entries[` +
            `${this.entryListIndexes[firstIndex]}] at line ${first.position.line}`,
          'remove one of the two entries',
        );
        return;
      }
      this.warnIfShadowed(entry, index);
      entryKeys.set(key, this.entries.length);
      this.entries.push(entry);
      this.entryListIndexes.push(index);
    });
  }

  /** Reads one entry, or returns undefined when it has any error. */
  private readEntry(node: Node | undefined, index: number): RegistrationEntry | undefined {
    const path: FieldPath = ['entries', index];
    if (node === undefined || !isMap(node)) {
      this.error(
        positionOf(this.source, node),
        path,
        `the entry is ${describeNode(node)}, expected a mapping`,
        'write the entry as "- spiffeId: ..." followed by "selectors:"',
      );
      return undefined;
    }
    const issueCount = this.issues.length;
    const position = positionOf(this.source, node);
    const fields = this.readFields(node, path, ENTRY_FIELDS);

    const spiffeIdNode = fields.get('spiffeId');
    let spiffeId: string | undefined;
    if (spiffeIdNode === undefined) {
      this.error(
        position,
        [...path, 'spiffeId'],
        'missing required field spiffeId',
        SPIFFE_ID_HINT,
      );
    } else {
      spiffeId = this.readEntrySpiffeId(spiffeIdNode, [...path, 'spiffeId']);
    }

    const selectorsNode = fields.get('selectors');
    let selectors: Selector[] = [];
    if (selectorsNode === undefined) {
      this.error(
        position,
        [...path, 'selectors'],
        'missing required field selectors',
        'add a list of selectors, e.g. "selectors: [unix:uid:1000]"',
      );
    } else {
      selectors = this.readSelectors(selectorsNode, [...path, 'selectors']);
    }

    if (this.issues.length > issueCount || spiffeId === undefined) {
      return undefined;
    }
    return { spiffeId, selectors, position };
  }

  private readEntrySpiffeId(node: Node, path: FieldPath): string | undefined {
    const text = this.readString(node, path, SPIFFE_ID_HINT);
    if (text === undefined) {
      return undefined;
    }
    const position = positionOf(this.source, node);
    let id;
    try {
      id = parseSpiffeId(text);
    } catch (error) {
      if (!(error instanceof SpiffeIdError)) {
        throw error;
      }
      this.error(position, path, error.message, SPIFFE_ID_HINT);
      return undefined;
    }
    if (id.path === '') {
      // X.509-SVIDs for workloads need a path, and SPIRE rejects entries without one.
      this.error(
        position,
        path,
        `SPIFFE ID ${JSON.stringify(text)} has no path, but a workload ID needs one`,
        `add a path, e.g. ${id.toString()}/web`,
      );
      return undefined;
    }
    if (this.trustDomain !== null && id.trustDomain !== this.trustDomain) {
      this.error(
        position,
        path,
        `SPIFFE ID ${JSON.stringify(text)} is not in the trust domain ` +
          `${this.trustDomain} set by trustDomain at line ${this.trustDomainLine}`,
        `use spiffe://${this.trustDomain}/... or change trustDomain`,
      );
      return undefined;
    }
    return id.toString();
  }

  private readSelectors(node: Node, path: FieldPath): Selector[] {
    const hint = 'add a selector such as unix:uid:1000; an empty list would match every process';
    if (isNullScalar(node)) {
      this.error(positionOf(this.source, node), path, 'the selector list is empty', hint);
      return [];
    }
    if (!isSeq(node)) {
      this.error(
        positionOf(this.source, node),
        path,
        `selectors is ${describeNode(node)}, expected a list`,
        'write selectors as a list, e.g. "selectors: [unix:uid:1000]"',
      );
      return [];
    }
    if (node.items.length === 0) {
      this.error(positionOf(this.source, node), path, 'the selector list is empty', hint);
      return [];
    }

    const selectors: Selector[] = [];
    // Maps each selector text to the index where it first appears.
    const seen = new Map<string, number>();
    node.items.forEach((item, index) => {
      const selectorNode = this.resolve(item);
      const selectorPath = [...path, index];
      const text = this.readString(selectorNode, selectorPath, 'expected type:value');
      if (text === undefined) {
        return;
      }
      const position = positionOf(this.source, selectorNode);
      const firstIndex = seen.get(text);
      if (firstIndex !== undefined) {
        this.error(
          position,
          selectorPath,
          `duplicate selector ${JSON.stringify(text)}, also at index ${firstIndex}`,
          'remove the duplicate',
        );
        return;
      }
      seen.set(text, index);
      try {
        selectors.push(parseSelector(text));
      } catch (error) {
        if (!(error instanceof SelectorError)) {
          throw error;
        }
        this.error(
          position,
          selectorPath,
          `invalid selector ${JSON.stringify(text)}: ${error.problem}`,
          error.hint,
        );
      }
    });
    return selectors;
  }

  /** Returns the string value of a scalar, or reports the node's actual type. */
  private readString(node: Node | undefined, path: FieldPath, hint: string): string | undefined {
    if (isScalar(node) && typeof node.value === 'string') {
      return node.value;
    }
    this.error(
      positionOf(this.source, node),
      path,
      `expected a string, got ${describeNode(node)}`,
      hint,
    );
    return undefined;
  }

  /**
   * Warns when an earlier entry's selectors are a subset of this entry's selectors: every process
   * that matches this entry then matches the earlier one first, so this entry is never chosen.
   */
  private warnIfShadowed(entry: RegistrationEntry, index: number): void {
    const own = new Set(entry.selectors.map((selector) => selector.text));
    const earlierIndex = this.entries.findIndex((earlier) =>
      earlier.selectors.every((selector) => own.has(selector.text)),
    );
    if (earlierIndex < 0) {
      return;
    }
    const earlier = this.entries[earlierIndex];
    const earlierField = `entries[${this.entryListIndexes[earlierIndex]}]`;
    this.warnings.push({
      position: entry.position,
      fieldPath: formatFieldPath(['entries', index]),
      message:
        `entry is never chosen: every process it matches also matches ${earlierField} ` +
        `(${earlier.spiffeId}, line ${earlier.position.line}), and the first matching entry wins`,
      hint: `move this more specific entry before ${earlierField}`,
      severity: 'warning',
    });
  }

  private resolve(node: unknown): Node | undefined {
    if (isAlias(node)) {
      return node.resolve(this.document);
    }
    return isMap(node) || isSeq(node) || isScalar(node) ? node : undefined;
  }

  private error(position: SourcePosition, path: FieldPath, message: string, hint: string): void {
    this.issues.push({
      position,
      fieldPath: formatFieldPath(path),
      message,
      hint,
      severity: 'error',
    });
  }
}

function isNullScalar(node: Node): boolean {
  return isScalar(node) && node.value === null;
}

/** Describes a node for messages: its value and YAML type. */
function describeNode(node: Node | undefined): string {
  if (node === undefined) {
    return 'empty';
  }
  if (isMap(node)) {
    return 'a mapping';
  }
  if (isSeq(node)) {
    return 'a list';
  }
  if (isScalar(node)) {
    if (node.value === null) {
      return 'empty';
    }
    return `${JSON.stringify(node.value)} (a ${typeof node.value})`;
  }
  return 'an unsupported node';
}

/** Key of an entry's SPIFFE ID and selector set, ignoring selector order. */
function entryKey(entry: RegistrationEntry): string {
  const selectors = entry.selectors.map((selector) => selector.text).sort();
  return [entry.spiffeId, ...selectors].join('\n');
}
