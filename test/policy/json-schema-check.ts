/**
 * A JSON Schema (draft 2020-12) validator for the keywords that the generated policy schema
 * uses, so tests can check documents against it without another dependency. It throws on any
 * other keyword, so a schema change cannot make it skip a check silently.
 */

type Schema = Record<string, unknown>;

const ANNOTATIONS = new Set(['$schema', 'title', 'description', 'examples', 'default']);
const ASSERTIONS = new Set([
  'type',
  'enum',
  'const',
  'pattern',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'items',
  'minItems',
  'uniqueItems',
  'properties',
  'additionalProperties',
  'required',
  'oneOf',
  'anyOf',
  'allOf',
  'if',
  'then',
]);

/** Returns the problems of a value against a schema, each as `path: message`; [] when valid. */
export function validateJsonSchema(schema: Schema, value: unknown, path = '$'): string[] {
  for (const keyword of Object.keys(schema)) {
    if (!ANNOTATIONS.has(keyword) && !ASSERTIONS.has(keyword)) {
      throw new Error(`json-schema-check does not support the keyword "${keyword}" at ${path}`);
    }
  }
  const problems: string[] = [];
  const fail = (message: string) => problems.push(`${path}: ${message}`);

  if (schema.type !== undefined && !hasType(value, schema.type as string)) {
    fail(`expected ${String(schema.type)}`);
    return problems;
  }
  if (
    schema.enum !== undefined &&
    !(schema.enum as unknown[]).some((item) => deepEqual(item, value))
  ) {
    fail(`not one of ${JSON.stringify(schema.enum)}`);
  }
  if (schema.const !== undefined && !deepEqual(schema.const, value)) {
    fail(`expected ${JSON.stringify(schema.const)}`);
  }
  if (typeof value === 'string') checkString(schema, value, fail);
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < (schema.minimum as number)) fail('below minimum');
    if (schema.maximum !== undefined && value > (schema.maximum as number)) fail('above maximum');
  }
  if (Array.isArray(value)) problems.push(...checkArray(schema, value, path));
  if (isObject(value)) problems.push(...checkObject(schema, value, path));

  if (schema.oneOf !== undefined) {
    const passing = (schema.oneOf as Schema[]).filter(
      (branch) => validateJsonSchema(branch, value, path).length === 0,
    );
    if (passing.length !== 1) fail(`matches ${passing.length} oneOf branches, expected 1`);
  }
  if (schema.anyOf !== undefined) {
    const passing = (schema.anyOf as Schema[]).some(
      (branch) => validateJsonSchema(branch, value, path).length === 0,
    );
    if (!passing) fail('matches no anyOf branch');
  }
  for (const branch of (schema.allOf as Schema[] | undefined) ?? []) {
    problems.push(...validateJsonSchema(branch, value, path));
  }
  if (schema.if !== undefined) {
    const applies = validateJsonSchema(schema.if as Schema, value, path).length === 0;
    if (applies && schema.then !== undefined) {
      problems.push(...validateJsonSchema(schema.then as Schema, value, path));
    }
  }
  return problems;
}

function checkString(schema: Schema, value: string, fail: (message: string) => void): void {
  const length = [...value].length;
  if (schema.minLength !== undefined && length < (schema.minLength as number)) fail('too short');
  if (schema.maxLength !== undefined && length > (schema.maxLength as number)) fail('too long');
  if (schema.pattern !== undefined && !new RegExp(schema.pattern as string, 'u').test(value)) {
    fail(`does not match ${String(schema.pattern)}`);
  }
}

function checkArray(schema: Schema, value: unknown[], path: string): string[] {
  const problems: string[] = [];
  if (schema.minItems !== undefined && value.length < (schema.minItems as number)) {
    problems.push(`${path}: fewer than ${String(schema.minItems)} items`);
  }
  if (schema.uniqueItems === true) {
    const texts = value.map((item) => JSON.stringify(item));
    if (new Set(texts).size !== texts.length) problems.push(`${path}: items are not unique`);
  }
  if (schema.items !== undefined) {
    value.forEach((item, index) => {
      problems.push(...validateJsonSchema(schema.items as Schema, item, `${path}[${index}]`));
    });
  }
  return problems;
}

function checkObject(schema: Schema, value: Record<string, unknown>, path: string): string[] {
  const problems: string[] = [];
  const properties = (schema.properties as Record<string, Schema> | undefined) ?? {};
  for (const name of (schema.required as string[] | undefined) ?? []) {
    if (!(name in value)) problems.push(`${path}: missing ${name}`);
  }
  for (const [name, item] of Object.entries(value)) {
    const property = properties[name];
    if (property) problems.push(...validateJsonSchema(property, item, `${path}.${name}`));
    else if (schema.additionalProperties === false) {
      problems.push(`${path}: unknown property ${name}`);
    }
  }
  return problems;
}

function hasType(value: unknown, type: string): boolean {
  switch (type) {
    case 'string':
      return typeof value === 'string';
    case 'boolean':
      return typeof value === 'boolean';
    case 'integer':
      return Number.isInteger(value);
    case 'number':
      return typeof value === 'number';
    case 'array':
      return Array.isArray(value);
    case 'object':
      return isObject(value);
    default:
      throw new Error(`json-schema-check does not support the type "${type}"`);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
