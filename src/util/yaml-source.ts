import { readFileSync } from 'node:fs';
import { Document, isMap, isScalar, isSeq, LineCounter, Node, parseAllDocuments } from 'yaml';
import { ConfigIssue, SourcePosition } from './config-error';

/** A YAML file parsed with source positions, one entry per `---` document. */
export interface YamlSource {
  file: string;
  documents: Document.Parsed[];
  lineCounter: LineCounter;
}

/** Parses YAML text; syntax errors come back as issues with their positions. */
export function parseYamlSource(text: string, file: string): { source: YamlSource; issues: ConfigIssue[] } {
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
        message: `invalid YAML: ${error.message.split('\n')[0]}`,
        severity: 'error',
      });
    }
    parsed.push(document);
  }
  return { source: { file, documents: parsed, lineCounter }, issues };
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
