import { describe, expect, it } from 'vitest';
import { parseRegistration } from '../../src/identity/registration';
import { parsePolicies } from '../../src/policy/loader';
import { ConfigError, formatIssue } from '../../src/util/config-error';
import { MAX_EXPANDED_NODES, parseYamlSource } from '../../src/util/yaml-source';

/** A "billion laughs" document: each level contains ten aliases of the level before. */
function nestedAliases(levels: number): string {
  const out = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
  for (let level = 1; level <= levels; level += 1) {
    const refs = Array.from({ length: 10 }, () => `*a${level - 1}`).join(', ');
    out.push(`a${level}: &a${level} [${refs}]`);
  }
  return `${out.join('\n')}\n`;
}

describe('parseYamlSource syntax errors', () => {
  it('names a duplicate key once, with a fix', () => {
    const { issues } = parseYamlSource('spec: {}\nkind: x\nspec: {}\n', 'dup.yaml');
    expect(issues.map(formatIssue)).toEqual([
      'dup.yaml:3:1: error: invalid YAML: Map keys must be unique ' +
        '(remove or rename one of the two keys)',
    ]);
  });

  it('gives a fix for tab indentation', () => {
    const { issues } = parseYamlSource('spec:\n\tkind: x\n', 'tab.yaml');
    expect(issues.map(formatIssue)).toEqual([
      'tab.yaml:2:1: error: invalid YAML: Tabs are not allowed as indentation (indent with spaces)',
    ]);
  });
});

describe('parseYamlSource alias bound', () => {
  it('accepts a few aliases', () => {
    const { issues } = parseYamlSource('base: &b {port: 80}\nuse: [*b, *b]\n', 'a.yaml');
    expect(issues).toEqual([]);
  });

  it('rejects aliases that expand past the bound, with the count and a fix', () => {
    const started = process.hrtime.bigint();
    const { issues } = parseYamlSource(nestedAliases(9), 'laughs.yaml');
    const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
    expect(issues.map(formatIssue)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^laughs\\.yaml:10:10: error: the document's aliases expand to \\d+ nodes, more than ${MAX_EXPANDED_NODES} ` +
            '\\(use fewer or smaller aliases, or split the document\\)$',
        ),
      ),
    ]);
    // Counting is linear in the written document, not in its expansion (10^10 nodes here).
    expect(elapsedMs).toBeLessThan(1000);
  });

  it('places the error at the largest alias of a later document', () => {
    const text = `first: 1\n---\n${nestedAliases(5)}`;
    const { issues } = parseYamlSource(text, 'two.yaml');
    expect(issues.map(formatIssue)).toEqual([
      expect.stringMatching(/^two\.yaml:8:10: error: the document's aliases expand to \d+ nodes/),
    ]);
  });

  it('rejects an alias to a node that contains it', () => {
    const { issues } = parseYamlSource('spec: &s\n  inner: *s\n', 'loop.yaml');
    expect(issues.map(formatIssue)).toEqual([
      'loop.yaml:2:10: error: alias *s refers to a node that contains it ' +
        '(YAML that refers to itself cannot be read as a policy; write the values out)',
    ]);
  });

  it('stops a policy file with nested aliases before any field is read', () => {
    let error: unknown;
    try {
      parsePolicies(nestedAliases(7), 'p.yaml');
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues.map(formatIssue)[0]).toMatch(/aliases expand to/);
  });

  it('stops a registration file the same way', () => {
    expect(() => parseRegistration(nestedAliases(7), 'registration.yaml')).toThrow(
      /aliases expand to/,
    );
  });
});
