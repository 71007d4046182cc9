import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadRegistrationFile, parseRegistration } from '../../src/identity/registration';
import { ConfigError, formatIssue } from '../../src/util/config-error';

const FILE = 'registration.yaml';

const header = 'apiVersion: sigil.dev/v1alpha1\nkind: Registration\n';

/** Returns the ConfigError that parsing `text` throws, failing the test when it throws none. */
function catchConfigError(text: string): ConfigError {
  try {
    parseRegistration(text, FILE);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError, but parsing succeeded');
}

describe('parseRegistration', () => {
  it('reads entries with positions', () => {
    const text = `${header}trustDomain: example.org
entries:
  - spiffeId: spiffe://example.org/web
    selectors:
      - unix:uid:1001
      - cgroup:path:/sigil-demo/web
  - spiffeId: spiffe://example.org/db
    selectors: [unix:user:postgres]
`;
    const registration = parseRegistration(text, FILE);
    expect(registration.file).toBe(FILE);
    expect(registration.trustDomain).toBe('example.org');
    expect(registration.warnings).toEqual([]);
    expect(registration.entries).toHaveLength(2);

    const [web, db] = registration.entries;
    expect(web.spiffeId).toBe('spiffe://example.org/web');
    expect(web.selectors).toEqual([
      { type: 'unix', value: 'uid:1001', text: 'unix:uid:1001' },
      { type: 'cgroup', value: 'path:/sigil-demo/web', text: 'cgroup:path:/sigil-demo/web' },
    ]);
    expect(web.position).toEqual({ file: FILE, line: 5, column: 5 });
    expect(db.spiffeId).toBe('spiffe://example.org/db');
    expect(db.selectors.map((selector) => selector.text)).toEqual(['unix:user:postgres']);
    expect(db.position).toEqual({ file: FILE, line: 9, column: 5 });
  });

  it.each([
    ['an empty file', ''],
    ['a file of comments', '# nothing registered yet\n'],
    ['a null document', '---\n'],
    ['no entries field', header],
    ['an empty entries field', `${header}entries:\n`],
    ['an empty entries list', `${header}entries: []\n`],
  ])('accepts %s with zero entries', (_name, text) => {
    const registration = parseRegistration(text, FILE);
    expect(registration.entries).toEqual([]);
    expect(registration.trustDomain).toBeNull();
  });

  it('accepts trustDomain in spiffe:// form', () => {
    const registration = parseRegistration(`${header}trustDomain: spiffe://example.org\n`, FILE);
    expect(registration.trustDomain).toBe('example.org');
  });

  it('accepts the same selectors under different IDs with a warning', () => {
    const text = `${header}entries:
  - spiffeId: spiffe://example.org/a
    selectors: [unix:uid:1]
  - spiffeId: spiffe://example.org/b
    selectors: [unix:gid:2, unix:uid:1]
  - spiffeId: spiffe://example.org/c
    selectors: [unix:gid:2]
`;
    const registration = parseRegistration(text, FILE);
    expect(registration.entries).toHaveLength(3);
    expect(registration.warnings).toHaveLength(1);
    const [warning] = registration.warnings;
    expect(warning.severity).toBe('warning');
    expect(warning.position).toEqual({ file: FILE, line: 6, column: 5 });
    expect(warning.fieldPath).toBe('entries[1]');
    expect(warning.message).toContain('never chosen');
    expect(warning.message).toContain('entries[0] (spiffe://example.org/a, line 4)');
    expect(warning.hint).toBe('move this more specific entry before entries[0]');
  });

  it.each<[string, string, string[]]>([
    [
      'unknown fields at both levels',
      `${header}spec: {}
entries:
  - spiffeId: spiffe://example.org/web
    selector: [unix:uid:1]
    selectors: [unix:uid:1]
`,
      [
        '3:1: error: unknown field "spec" ' +
          '(allowed fields are apiVersion, kind, trustDomain, entries)',
        '6:5: error: entries[0]: unknown field "selector" (allowed fields are spiffeId, selectors)',
      ],
    ],
    [
      'missing and wrong header fields',
      'apiVersion: sigil.dev/v1\nentries: []\n',
      [
        '1:13: error: apiVersion: unsupported apiVersion "sigil.dev/v1" (a string) ' +
          '(expected apiVersion: sigil.dev/v1alpha1)',
        '1:1: error: kind: missing required field kind (add kind: Registration)',
      ],
    ],
    [
      'a document that is not a mapping',
      '- a\n- b\n',
      ['1:1: error: the document is a list, expected a mapping'],
    ],
    [
      'two documents',
      `${header}---\n${header}`,
      ["4:1: error: the file contains 2 YAML documents, expected one (remove the '---'"],
    ],
    [
      'invalid trust domain',
      `${header}trustDomain: Example.org\n`,
      [
        '3:14: error: trustDomain: invalid trust domain "Example.org": the trust domain contains ' +
          "the character 'E' (the trust domain must be lowercase)",
      ],
    ],
    [
      'entries that is not a list',
      `${header}entries:\n  spiffeId: spiffe://example.org/web\n`,
      ['4:3: error: entries: entries is a mapping, expected a list'],
    ],
    [
      'bad SPIFFE IDs and selectors in several entries',
      `${header}trustDomain: example.org
entries:
  - spiffeId: spiffe://example.org/web/
    selectors:
      - unix:uid:1001
      - unix:uid:abc
  - spiffeId: spiffe://other.org/db
    selectors: []
  - selectors: [k8s:ns:default, unix:sha256:ABC]
  - spiffeId: spiffe://example.org
    selectors:
  - spiffeId: 42
    selectors: unix:uid:1
  - just a string
`,
      [
        '5:15: error: entries[0].spiffeId: invalid SPIFFE ID "spiffe://example.org/web/": ' +
          "the path must not end with '/' (expected spiffe://<trust domain>/<path>",
        '8:9: error: entries[0].selectors[1]: invalid selector "unix:uid:abc": \'abc\' is not a ' +
          'decimal number without sign or leading zeros ' +
          '(expected unix:uid:<uid>, e.g. unix:uid:1000)',
        '9:15: error: entries[1].spiffeId: SPIFFE ID "spiffe://other.org/db" is not in the trust ' +
          'domain example.org set by trustDomain at line 3',
        '10:16: error: entries[1].selectors: the selector list is empty (add a selector such as ' +
          'unix:uid:1000; an empty list would match every process)',
        '11:5: error: entries[2].spiffeId: missing required field spiffeId',
        '11:17: error: entries[2].selectors[0]: invalid selector "k8s:ns:default": unsupported ' +
          "selector type 'k8s'",
        '11:33: error: entries[2].selectors[1]: invalid selector "unix:sha256:ABC": the digest ' +
          'has 3 characters, expected 64 hex digits',
        '12:15: error: entries[3].spiffeId: SPIFFE ID "spiffe://example.org" has no path, but a ' +
          'workload ID needs one (add a path, e.g. spiffe://example.org/web)',
        '13:15: error: entries[3].selectors: the selector list is empty',
        '14:15: error: entries[4].spiffeId: expected a string, got 42 (a number)',
        '15:16: error: entries[4].selectors: selectors is "unix:uid:1" (a string), expected a list',
        '16:5: error: entries[5]: the entry is "just a string" (a string), expected a mapping',
      ],
    ],
    [
      'duplicate entries and selectors',
      `${header}entries:
  - spiffeId: spiffe://example.org/web
    selectors: [unix:uid:1, unix:gid:2]
  - spiffeId: spiffe://example.org/web
    selectors: [unix:gid:2, unix:uid:1]
  - spiffeId: spiffe://example.org/db
    selectors: [unix:uid:3, unix:uid:3]
`,
      [
        '6:5: error: entries[1]: duplicate entry: same SPIFFE ID and selectors as entries[0] ' +
          'at line 4 (remove one of the two entries)',
        '9:29: error: entries[2].selectors[1]: duplicate selector "unix:uid:3", also at index 0',
      ],
    ],
    [
      'a duplicate after an invalid entry',
      `${header}entries:
  - spiffeId: spiffe://example.org/bad/
    selectors: [unix:uid:1]
  - spiffeId: spiffe://example.org/web
    selectors: [unix:uid:1]
  - spiffeId: spiffe://example.org/web
    selectors: [unix:uid:1]
`,
      [
        '4:15: error: entries[0].spiffeId: invalid SPIFFE ID',
        '8:5: error: entries[2]: duplicate entry: same SPIFFE ID and selectors as entries[1] ' +
          'at line 6',
      ],
    ],
    ['a YAML syntax error', `${header}entries:\n  - spiffeId: [\n`, ['5:1: error: invalid YAML:']],
    [
      'a duplicate key',
      `${header}kind: Registration\n`,
      ['3:1: error: invalid YAML: Map keys must be unique'],
    ],
  ])('reports %s', (_name, text, expectedLines) => {
    const error = catchConfigError(text);
    const lines = error.issues.map(formatIssue);
    expect(lines).toHaveLength(expectedLines.length);
    expectedLines.forEach((expected, index) => {
      expect(lines[index]).toContain(`${FILE}:${expected}`);
    });
    const count = expectedLines.length === 1 ? '1 error' : `${expectedLines.length} errors`;
    expect(error.message).toContain(`invalid configuration (${count})`);
  });

  it('includes warnings with errors', () => {
    const text = `${header}entries:
  - spiffeId: spiffe://example.org/a
    selectors: [unix:uid:1]
  - spiffeId: spiffe://example.org/b
    selectors: [unix:uid:1, unix:gid:x]
  - spiffeId: spiffe://example.org/c
    selectors: [unix:uid:1, unix:gid:2]
`;
    const error = catchConfigError(text);
    expect(error.issues.map((issue) => issue.severity)).toEqual(['error', 'warning']);
    expect(error.message).toContain('invalid configuration (1 error)');
  });

  it('resolves YAML aliases', () => {
    const text = `${header}entries:
  - spiffeId: spiffe://example.org/a
    selectors: &web [unix:uid:1, cgroup:path:/web]
  - spiffeId: spiffe://example.org/b
    selectors: *web
`;
    const registration = parseRegistration(text, FILE);
    expect(registration.entries[1].selectors.map((selector) => selector.text)).toEqual([
      'unix:uid:1',
      'cgroup:path:/web',
    ]);
  });
});

describe('loadRegistrationFile', () => {
  const directory = mkdtempSync(join(tmpdir(), 'sigil-registration-'));

  afterAll(() => {
    rmSync(directory, { recursive: true, force: true });
  });

  it('reads a file from disk', () => {
    const file = join(directory, 'good.yaml');
    writeFileSync(
      file,
      `${header}entries:\n  - spiffeId: spiffe://example.org/web\n    selectors: [unix:uid:1]\n`,
    );
    const registration = loadRegistrationFile(file);
    expect(registration.file).toBe(file);
    expect(registration.entries[0].position).toEqual({ file, line: 4, column: 5 });
  });

  it('names the file in issues', () => {
    const file = join(directory, 'bad.yaml');
    writeFileSync(file, `${header}color: blue\n`);
    let caught: unknown;
    try {
      loadRegistrationFile(file);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).message).toContain(`${file}:3:1: error: unknown field "color"`);
  });

  it('names a missing file', () => {
    const file = join(directory, 'missing.yaml');
    expect(() => loadRegistrationFile(file)).toThrow(`read ${file}: ENOENT`);
  });
});
