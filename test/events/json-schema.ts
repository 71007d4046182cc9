/**
 * A JSON Schema (draft 2020-12) validator for the keywords that
 * src/events/ocsf-1.3.0.schema.json uses. It throws on any other keyword, so
 * a schema edit cannot silently stop checking something. The repository has
 * no JSON Schema library among its dependencies; this one is small enough to
 * read in full.
 */
type Schema = boolean | Record<string, unknown>;

const ANNOTATIONS = new Set(['$schema', '$id', '$comment', 'title', 'description', '$defs']);
const CHECKED = new Set([
  'type',
  'required',
  'properties',
  'enum',
  'const',
  'items',
  'minimum',
  'maximum',
  'minLength',
  '$ref',
  'allOf',
  'anyOf',
  'if',
  'then',
]);

function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function typeMatches(value: unknown, expected: string): boolean {
  const actual = typeOf(value);
  return actual === expected || (expected === 'number' && actual === 'integer');
}

export class JsonSchemaValidator {
  constructor(private readonly root: Record<string, unknown>) {}

  /** Returns every violation as "path: message"; empty when the value is valid. */
  validate(value: unknown): string[] {
    const errors: string[] = [];
    this.check(this.root, value, '$', errors);
    return errors;
  }

  private resolve(ref: string): Schema {
    if (!ref.startsWith('#/')) throw new Error(`unsupported $ref ${ref}: only local references are implemented`);
    let node: unknown = this.root;
    for (const part of ref.slice(2).split('/')) node = (node as Record<string, unknown>)[part];
    if (node === undefined) throw new Error(`$ref ${ref} not found in the schema`);
    return node as Schema;
  }

  private check(schema: Schema, value: unknown, path: string, errors: string[]): void {
    if (schema === true) return;
    if (schema === false) {
      errors.push(`${path}: no value is allowed here`);
      return;
    }
    for (const keyword of Object.keys(schema)) {
      if (!ANNOTATIONS.has(keyword) && !CHECKED.has(keyword)) {
        throw new Error(`unsupported JSON Schema keyword ${keyword} at ${path}`);
      }
    }

    if (schema.$ref !== undefined) this.check(this.resolve(schema.$ref as string), value, path, errors);
    if (schema.type !== undefined && !typeMatches(value, schema.type as string)) {
      errors.push(`${path}: expected ${schema.type as string}, got ${typeOf(value)}`);
      return;
    }
    if (schema.const !== undefined && value !== schema.const) {
      errors.push(`${path}: expected ${JSON.stringify(schema.const)}, got ${JSON.stringify(value)}`);
    }
    if (schema.enum !== undefined && !(schema.enum as unknown[]).includes(value)) {
      errors.push(`${path}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
    }

    if (typeof value === 'number') this.checkNumber(schema, value, path, errors);
    if (typeof value === 'string' && schema.minLength !== undefined && value.length < (schema.minLength as number)) {
      errors.push(`${path}: shorter than ${schema.minLength as number} characters`);
    }
    if (Array.isArray(value) && schema.items !== undefined) {
      value.forEach((item, i) => this.check(schema.items as Schema, item, `${path}[${i}]`, errors));
    }
    if (typeOf(value) === 'object') this.checkObject(schema, value as Record<string, unknown>, path, errors);
    this.checkCombinators(schema, value, path, errors);
  }

  private checkNumber(schema: Record<string, unknown>, value: number, path: string, errors: string[]): void {
    if (schema.minimum !== undefined && value < (schema.minimum as number)) {
      errors.push(`${path}: ${value} is below the minimum ${schema.minimum as number}`);
    }
    if (schema.maximum !== undefined && value > (schema.maximum as number)) {
      errors.push(`${path}: ${value} is above the maximum ${schema.maximum as number}`);
    }
  }

  private checkObject(
    schema: Record<string, unknown>,
    value: Record<string, unknown>,
    path: string,
    errors: string[],
  ): void {
    for (const name of (schema.required as string[] | undefined) ?? []) {
      if (!(name in value)) errors.push(`${path}: missing required property ${name}`);
    }
    const properties = (schema.properties as Record<string, Schema> | undefined) ?? {};
    for (const [name, propertySchema] of Object.entries(properties)) {
      if (name in value) this.check(propertySchema, value[name], `${path}.${name}`, errors);
    }
  }

  private checkCombinators(schema: Record<string, unknown>, value: unknown, path: string, errors: string[]): void {
    for (const sub of (schema.allOf as Schema[] | undefined) ?? []) this.check(sub, value, path, errors);
    if (schema.anyOf !== undefined) {
      const branches = schema.anyOf as Schema[];
      const passing = branches.filter((sub) => this.validateAt(sub, value, path).length === 0);
      if (passing.length === 0) errors.push(`${path}: matches none of the ${branches.length} anyOf alternatives`);
    }
    if (schema.if !== undefined && this.validateAt(schema.if as Schema, value, path).length === 0) {
      if (schema.then !== undefined) this.check(schema.then as Schema, value, path, errors);
    }
  }

  private validateAt(schema: Schema, value: unknown, path: string): string[] {
    const errors: string[] = [];
    this.check(schema, value, path, errors);
    return errors;
  }
}
