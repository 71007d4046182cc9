import { readFileSync } from 'node:fs';
import {
  Document,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  Node,
  parseAllDocuments,
  YAMLParseError,
} from 'yaml';
import { ConfigIssue, SourcePosition } from './config-error';

/** A YAML file parsed with source positions, one entry per `---` document. */
export interface YamlSource {
  file: string;
  documents: Document.Parsed[];
  lineCounter: LineCounter;
}

/** Parses YAML text; syntax errors come back as issues with their positions. */
export function parseYamlSource(
  text: string,
  file: string,
): { source: YamlSource; issues: ConfigIssue[] } {
  const lineCounter = new LineCounter();
  const documents = parseAllDocuments(text, { lineCounter, uniqueKeys: true });
  const issues: ConfigIssue[] = [];
  const parsed: Document.Parsed[] = [];
  for (const document of Array.isArray(documents) ? documents : []) {
    for (const error of document.errors) {
      const { line, col } = lineCounter.linePos(error.pos[0]);
      issues.push({
        position: { file, line, column: col },
        fieldPath: '',
        message: `invalid YAML: ${yamlErrorSummary(error)}`,
        hint: YAML_ERROR_HINTS[error.code] ?? 'correct the YAML syntax at this position',
        severity: 'error',
      });
    }
    if (document.errors.length === 0) {
      const aliasIssue = checkAliases(document);
      if (aliasIssue) {
        const { line, col } = lineCounter.linePos(aliasIssue.offset);
        issues.push({
          position: { file, line, column: col },
          fieldPath: '',
          message: aliasIssue.message,
          hint: aliasIssue.hint,
          severity: 'error',
        });
        // Readers would walk the same aliases; the document is reported and skipped.
        document.errors.push(
          new YAMLParseError(
            [aliasIssue.offset, aliasIssue.offset + 1],
            'ALIAS_PROPS',
            aliasIssue.message,
          ),
        );
      }
    }
    parsed.push(document);
  }
  return { source: { file, documents: parsed, lineCounter }, issues };
}

/** Fixes for the yaml package's error codes that a hand-edited policy hits most. */
const YAML_ERROR_HINTS: Partial<Record<YAMLParseError['code'], string>> = {
  DUPLICATE_KEY: 'remove or rename one of the two keys',
  TAB_AS_INDENT: 'indent with spaces',
  BAD_INDENT: 'align the line with the other entries of its map or list',
  MISSING_CHAR: 'add the missing bracket, brace or quote',
};

/**
 * Returns the first line of a yaml package error without its trailing
 * " at line L, column C:", because the reported position already gives it.
 */
function yamlErrorSummary(error: YAMLParseError): string {
  return error.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
}

/**
 * Bound on the nodes a document may hold once its aliases are expanded. Readers visit aliased
 * content once per alias, so without a bound a few lines of nested aliases ("billion laughs")
 * would cost the agent seconds of CPU on every reload.
 */
export const MAX_EXPANDED_NODES = 100_000;

interface AliasIssue {
  offset: number;
  message: string;
  hint: string;
}

/**
 * Counts the nodes of a document with its aliases expanded, and finds aliases that refer to a
 * node that contains them (a cycle that readers would follow for ever). Linear in the size of
 * the document: the size of each anchored node is computed once.
 */
function checkAliases(document: Document.Parsed): AliasIssue | null {
  const anchors = new Map<string, Node>();
  const sizes = new Map<Node, number>();
  const open = new Set<Node>();
  let failure: AliasIssue | null = null;
  // The alias that expands to the most nodes, where an oversized document is reported.
  let largestAlias = { offset: 0, size: 0 };

  const sizeOf = (node: unknown): number => {
    if (failure) return 0;
    if (isAlias(node)) {
      const target = anchors.get(node.source);
      // An alias without an earlier anchor is already a parse error.
      if (!target) return 1;
      if (open.has(target)) {
        failure = {
          offset: node.range?.[0] ?? 0,
          message: `alias *${node.source} refers to a node that contains it`,
          hint: 'YAML that refers to itself cannot be read as a policy; write the values out',
        };
        return 0;
      }
      const size = sizes.get(target) ?? 1;
      if (size > largestAlias.size) largestAlias = { offset: node.range?.[0] ?? 0, size };
      return size;
    }
    if (isPair(node)) return sizeOf(node.key) + sizeOf(node.value);
    if (!isMap(node) && !isSeq(node) && !isScalar(node)) return 0;
    const anchor = (node as Node).anchor;
    if (anchor) anchors.set(anchor, node as Node);
    let size = 1;
    if (isMap(node) || isSeq(node)) {
      open.add(node);
      for (const item of node.items) size += sizeOf(item);
      open.delete(node);
    }
    sizes.set(node as Node, size);
    return size;
  };

  const total = sizeOf(document.contents);
  if (failure) return failure;
  if (total > MAX_EXPANDED_NODES) {
    return {
      offset: largestAlias.offset,
      message: `the document's aliases expand to ${total} nodes, more than ${MAX_EXPANDED_NODES}`,
      hint: 'use fewer or smaller aliases, or split the document',
    };
  }
  return null;
}

/** Reads and parses a YAML file; a read failure throws with the path in the message. */
export function readYamlSource(file: string): { source: YamlSource; issues: ConfigIssue[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    throw new Error(`read ${file}: ${(cause as Error).message}`, { cause });
  }
  return parseYamlSource(text, file);
}

/** Returns the position of a node (or of the document start when the node is absent). */
export function positionOf(source: YamlSource, node: Node | null | undefined): SourcePosition {
  const offset = node?.range?.[0] ?? 0;
  const { line, col } = source.lineCounter.linePos(offset);
  return { file: source.file, line, column: col };
}

/** Returns the YAML node at a path of keys and indexes, or undefined. */
export function nodeAt(document: Document.Parsed, path: (string | number)[]): Node | undefined {
  const node = document.getIn(path, true);
  return isMap(node) || isSeq(node) || isScalar(node) ? node : undefined;
}

/** Formats a path of keys and indexes as `spec.egress[2].ports`. */
export function formatFieldPath(path: (string | number)[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${part}` : part;
  }
  return out;
}
