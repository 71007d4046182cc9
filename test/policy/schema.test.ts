import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { parsePolicies } from '../../src/policy/loader';
import {
  FieldSchema,
  MapSchema,
  POLICY_SCHEMA,
  policyJsonSchema,
  policyJsonSchemaText,
} from '../../src/policy/schema';
import { Policy } from '../../src/policy/types';
import { ConfigError, formatIssue } from '../../src/util/config-error';
import { validateJsonSchema } from './json-schema-check';

const REPOSITORY = join(__dirname, '..', '..');
const SCHEMA_FILE = join(REPOSITORY, 'schema', 'identity-policy.schema.json');

type Json = Record<string, unknown>;
type Path = (string | number)[];

/** Returns a document with every map of the format, so every field has a place to be tested. */
function baseDocument(): Json {
  return {
    apiVersion: 'sigil.dev/v1alpha1',
    kind: 'IdentityPolicy',
    metadata: { name: 'p' },
    spec: {
      subject: { spiffeId: 'spiffe://example.org/web' },
      egress: [{ action: 'Allow', to: { spiffeId: 'spiffe://example.org/api' } }],
      ingress: [{ action: 'Allow', from: { spiffeId: 'spiffe://example.org/api' } }],
      process: [{ action: 'Allow', paths: ['/usr/bin/env'] }],
      file: [{ action: 'Allow', paths: ['/etc/hosts'] }],
      capability: [{ action: 'Allow', capabilities: ['NET_BIND_SERVICE'] }],
    },
  };
}

function getAt(document: Json, path: Path): unknown {
  let value: unknown = document;
  for (const key of path) value = (value as Record<string | number, unknown>)[key];
  return value;
}

/** Returns a copy of the document with the map at `mapPath` changed by `edit`. */
function editMap(document: Json, mapPath: Path, edit: (map: Json) => void): Json {
  const copy = structuredClone(document);
  edit(getAt(copy, mapPath) as Json);
  return copy;
}

interface Outcome {
  loader: boolean;
  loaderIssues: string[];
  schema: boolean;
  schemaProblems: string[];
  policy?: Policy;
}

const JSON_SCHEMA = policyJsonSchema();

function check(document: Json): Outcome {
  const schemaProblems = validateJsonSchema(JSON_SCHEMA, document);
  try {
    const [policy] = parsePolicies(stringify(document), 'doc.yaml');
    return {
      loader: true,
      loaderIssues: [],
      schema: schemaProblems.length === 0,
      schemaProblems,
      policy,
    };
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return {
      loader: false,
      loaderIssues: error.issues.map(formatIssue),
      schema: schemaProblems.length === 0,
      schemaProblems,
    };
  }
}

interface Case {
  name: string;
  document: Json;
  valid: boolean;
  /** A value that the loaded policy must have at a path: a default, or the written value. */
  expectValue?: { path: Path; value: unknown };
}

/** Returns a value of the wrong type for a field. */
function wrongType(schema: FieldSchema): unknown {
  switch (schema.type) {
    case 'string':
      return 7;
    case 'boolean':
      return 'yes';
    case 'port':
      return true;
    case 'list':
      return 'not-a-list';
    case 'map':
      return 'not-a-map';
  }
}

/** Returns a string that breaks the field's pattern, or undefined when it has none. */
function patternBreaker(path: Path): string | undefined {
  const field = String(path[path.length - 1]);
  const breakers: Record<string, string> = {
    name: 'Not_A_Name',
    spiffeId: 'http://example.org/web',
    spiffeIdPrefix: 'http://example.org/',
    trustDomain: 'Example.org',
    cidrs: 'ten.zero/8',
    tags: 'Bad Tag',
    paths: 'relative/path',
    directories: 'relative/dir',
  };
  return breakers[field];
}

/** Returns the path of a spec value in the loaded `Policy` (spec fields sit at its top level). */
function policyPath(documentPath: Path): Path | undefined {
  if (documentPath[0] !== 'spec') return undefined;
  const path: Path = [];
  for (const part of documentPath.slice(1)) {
    if (part === 'subject') path.push('subjectSelector');
    else if ((path.at(-1) === 'to' || path.at(-1) === 'from') && part !== 'cidrs')
      path.push('peer', part);
    else path.push(part);
  }
  return path;
}

// Fields whose loaded value is not the written one: canonical prefixes, parsed CIDRs and ports,
// and the `unidentified` flag, which becomes the subject kind.
const TRANSFORMED_FIELDS = new Set(['spiffeIdPrefix', 'cidrs', 'ports', 'unidentified']);

/** Sets a field in a map, replacing the other fields of an exactly-one group and meeting constraints. */
function setField(map: Json, schema: MapSchema, name: string, value: unknown): void {
  if (schema.exactlyOneOf?.includes(name)) {
    for (const other of schema.exactlyOneOf) delete map[other];
  }
  map[name] = value;
  for (const constraint of schema.constraints ?? []) {
    if (constraint.field !== name || constraint.value !== value) continue;
    if (constraint.kind === 'requires') map[constraint.requires] ??= ['/usr/lib'];
  }
}

function fieldCases(mapSchema: MapSchema, mapPath: Path, cases: Case[]): void {
  const base = baseDocument();
  const label = (path: Path, text: string) => `${path.join('.')}: ${text}`;
  cases.push({
    name: label(mapPath, 'unknown field'),
    document: editMap(base, mapPath, (map) => (map.bogusField = 1)),
    valid: false,
  });
  if (mapSchema.exactlyOneOf) {
    cases.push({
      name: label(mapPath, 'none of the exactly-one fields'),
      document: editMap(base, mapPath, (map) => {
        for (const name of mapSchema.exactlyOneOf!) delete map[name];
      }),
      valid: false,
    });
  }
  if (mapSchema.atLeastOneOf) {
    cases.push({
      name: label(mapPath, 'none of the at-least-one fields'),
      document: editMap(base, mapPath, (map) => {
        for (const name of mapSchema.atLeastOneOf!) delete map[name];
      }),
      valid: false,
    });
  }
  for (const constraint of mapSchema.constraints ?? []) {
    cases.push({
      name: label(mapPath, `constraint on ${constraint.field}`),
      document: editMap(base, mapPath, (map) => {
        map[constraint.field] = constraint.value;
        if (constraint.kind === 'requires') delete map[constraint.requires];
        else map[constraint.restricted] = 'Block';
      }),
      valid: false,
    });
  }

  for (const [name, field] of Object.entries(mapSchema.fields)) {
    const path = [...mapPath, name];
    const set = (value: unknown) =>
      editMap(base, mapPath, (map) => setField(map, mapSchema, name, value));
    if (field.type === 'map') {
      fieldCases(field, path, cases);
    } else if (field.type === 'list' && field.items.type === 'map') {
      fieldCases(field.items, [...path, 0], cases);
    }

    // Valid values.
    const examples: unknown[] =
      field.type === 'list'
        ? field.items.type === 'map'
          ? []
          : (field.items as { examples: readonly unknown[] }).examples.map((example) => [example])
        : field.type === 'map'
          ? []
          : [...field.examples];
    const loadedPath = policyPath(path);
    for (const example of examples) {
      const expectValue =
        loadedPath && !TRANSFORMED_FIELDS.has(name)
          ? { path: loadedPath, value: example }
          : undefined;
      cases.push({
        name: label(path, `valid ${JSON.stringify(example)}`),
        document: set(example),
        valid: true,
        expectValue,
      });
    }

    // Values of the wrong shape.
    cases.push({ name: label(path, 'wrong type'), document: set(wrongType(field)), valid: false });
    if (field.type === 'list' && field.items.type !== 'map') {
      cases.push({
        name: label(path, 'wrong item type'),
        document: set([wrongType(field.items)]),
        valid: false,
      });
    }
    if (field.type === 'string' && field.enum) {
      cases.push({ name: label(path, 'value not allowed'), document: set('Bogus'), valid: false });
    }
    if (field.type === 'boolean' && field.const !== undefined) {
      cases.push({
        name: label(path, 'value not allowed'),
        document: set(!field.const),
        valid: false,
      });
    }
    const itemSchema = field.type === 'list' ? field.items : field;
    const wrap = (value: unknown) => (field.type === 'list' ? [value] : value);
    const breaker = patternBreaker(path.filter((part) => typeof part === 'string'));
    if (itemSchema.type === 'string' && itemSchema.pattern !== undefined && breaker !== undefined) {
      cases.push({
        name: label(path, 'pattern broken'),
        document: set(wrap(breaker)),
        valid: false,
      });
    }
    if (itemSchema.type === 'string' && itemSchema.maxLength !== undefined) {
      const tooLong =
        itemSchema.pattern === '^/'
          ? `/${'a'.repeat(itemSchema.maxLength)}`
          : 'a'.repeat(itemSchema.maxLength + 1);
      cases.push({ name: label(path, 'too long'), document: set(wrap(tooLong)), valid: false });
    }
    if (field.type === 'list' && field.minItems !== undefined) {
      cases.push({ name: label(path, 'empty list'), document: set([]), valid: false });
    }
    if (field.type === 'list' && field.uniqueItems && field.items.type === 'string') {
      const [example] = field.items.examples;
      cases.push({
        name: label(path, 'duplicate items'),
        document: set([example, example]),
        valid: false,
      });
    }

    // Absent values: required fields are missing, others take their default.
    const without = editMap(base, mapPath, (map) => delete map[name]);
    if (mapSchema.required.includes(name)) {
      cases.push({ name: label(path, 'missing'), document: without, valid: false });
    } else if ('default' in field && field.default !== undefined && loadedPath) {
      cases.push({
        name: label(path, 'default'),
        document: without,
        valid: true,
        expectValue: { path: loadedPath, value: field.default },
      });
    }
  }
}

function allCases(): Case[] {
  const cases: Case[] = [];
  fieldCases(POLICY_SCHEMA, [], cases);
  return cases;
}

describe('policy JSON Schema', () => {
  it('matches the committed schema file', () => {
    expect(readFileSync(SCHEMA_FILE, 'utf8')).toBe(policyJsonSchemaText());
  });

  it('declares draft 2020-12', () => {
    expect(JSON_SCHEMA.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
  });

  it('accepts the base document', () => {
    const outcome = check(baseDocument());
    expect(outcome.loaderIssues).toEqual([]);
    expect(outcome.schemaProblems).toEqual([]);
  });

  const cases = allCases();

  it('covers every field of the schema', () => {
    const names = new Set(cases.map((testCase) => testCase.name.split(':')[0]));
    for (const expected of [
      'apiVersion',
      'spec.subject.unidentified',
      'spec.egress.0.to.cidrs',
      'spec.ingress.0.from.spiffeIdPrefix',
      'spec.process.0.recursive',
      'spec.file.0.readOnly',
      'spec.file.0.tags',
      'spec.mode',
      'spec.filePosture',
    ]) {
      expect(names).toContain(expected);
    }
    expect(cases.length).toBeGreaterThan(200);
  });

  it.each(cases.map((testCase) => [testCase.name, testCase] as const))(
    'agrees with the loader on %s',
    (_name, testCase) => {
      const outcome = check(testCase.document);
      // The issues are in the compared objects so that a failure shows them.
      const detail = { loaderIssues: outcome.loaderIssues, schemaProblems: outcome.schemaProblems };
      expect({ loaderAccepts: outcome.loader, ...detail }).toMatchObject({
        loaderAccepts: testCase.valid,
      });
      expect({ schemaAccepts: outcome.schema, ...detail }).toMatchObject({
        schemaAccepts: testCase.valid,
      });
      if (testCase.expectValue && outcome.policy) {
        const loaded = getAt(outcome.policy as unknown as Json, testCase.expectValue.path);
        expect(loaded).toEqual(testCase.expectValue.value);
      }
    },
  );
});

describe('policy files against the JSON Schema', () => {
  const directories = ['examples/policies', 'examples/policies-doc'];
  const files = directories.flatMap((directory) =>
    readdirSync(join(REPOSITORY, directory))
      .filter((name) => name.endsWith('.yaml'))
      .map((name) => join(directory, name)),
  );

  it('finds example files', () => {
    expect(files.length).toBeGreaterThan(5);
  });

  it.each(files)('%s is valid for both', (file) => {
    const text = readFileSync(join(REPOSITORY, file), 'utf8');
    expect(() => parsePolicies(text, file)).not.toThrow();
    for (const document of parseAllDocuments(text) as ReturnType<typeof parseAllDocuments> &
      unknown[]) {
      const value = document.toJS() as unknown;
      if (value === null) continue;
      expect(validateJsonSchema(JSON_SCHEMA, value)).toEqual([]);
    }
  });
});
