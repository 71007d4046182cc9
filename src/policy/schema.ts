import { MAX_PORT, MIN_PORT } from './ports';
import {
  POLICY_API_VERSION,
  POLICY_KIND,
  PolicyMode,
  Posture,
  RuleAction,
  RuleProtocol,
  Severity,
} from './types';

/**
 * The one description of the `IdentityPolicy` format. The loader takes its field names, allowed
 * values, defaults, length limits, patterns and cross-field constraints from these objects, and
 * `policyJsonSchema()` turns them into the JSON Schema that editors use. The loader also makes
 * checks that JSON Schema cannot state: SPIFFE ID syntax, CIDR host bits, path normalisation,
 * duplicate names and contradictory rules. Each field's `description` names the ones it gets.
 */

/** A string field; `T` narrows the allowed values when the field is an enumeration. */
export interface StringSchema<T extends string = string> {
  readonly type: 'string';
  readonly description: string;
  readonly enum?: readonly T[];
  readonly default?: T;
  /** ECMAScript regular expression that every valid value matches (the loader may check more). */
  readonly pattern?: string;
  readonly minLength?: number;
  /** Maximum length in Unicode code points, as JSON Schema counts it. */
  readonly maxLength?: number;
  readonly examples: readonly T[];
}

export interface BooleanSchema {
  readonly type: 'boolean';
  readonly description: string;
  readonly default?: boolean;
  /** The only value allowed, for flags such as `unidentified: true`. */
  readonly const?: boolean;
  readonly examples: readonly boolean[];
}

/** A port entry: an integer 1-65535 or a string `"lo-hi"`. */
export interface PortSchema {
  readonly type: 'port';
  readonly description: string;
  readonly examples: readonly (number | string)[];
}

export interface ListSchema {
  readonly type: 'list';
  readonly description: string;
  readonly items: FieldSchema;
  readonly minItems?: number;
  readonly uniqueItems?: boolean;
  /** The list the loader uses when the field is absent. */
  readonly default?: readonly never[];
}

/** A field whose value depends on another field of the same map. */
export type FieldConstraint =
  /** When `field` has `value`, the map must also have `requires`. */
  | {
      readonly kind: 'requires';
      readonly field: string;
      readonly value: boolean | string;
      readonly requires: string;
    }
  /** When `field` has `value`, `restricted` may only have one of `allowed`. */
  | {
      readonly kind: 'restricts';
      readonly field: string;
      readonly value: boolean | string;
      readonly restricted: string;
      readonly allowed: readonly string[];
    };

export interface MapSchema<F extends Record<string, FieldSchema> = Record<string, FieldSchema>> {
  readonly type: 'map';
  readonly description: string;
  /** Allowed fields in the order that messages list them. */
  readonly fields: F;
  readonly required: readonly string[];
  /** When set, the map must have exactly one of these fields. */
  readonly exactlyOneOf?: readonly string[];
  /** When set, the map must have at least one of these fields. */
  readonly atLeastOneOf?: readonly string[];
  readonly constraints?: readonly FieldConstraint[];
}

export type FieldSchema = StringSchema | BooleanSchema | PortSchema | ListSchema | MapSchema;

const ACTIONS: readonly RuleAction[] = ['Allow', 'Audit', 'Block'];
const POSTURES: readonly Posture[] = ['Block', 'Audit'];
const PROTOCOLS: readonly RuleProtocol[] = ['TCP', 'UDP', 'Any'];
const MODES: readonly PolicyMode[] = ['Enforce', 'Audit'];
const SEVERITIES: readonly Severity[] = ['info', 'low', 'medium', 'high', 'critical'];

/** Kubernetes-style DNS label, the format of policy and rule names. */
export const NAME_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
export const NAME_MAX_LENGTH = 63;
export const TAG_PATTERN = '^[a-z0-9:._-]+$';
export const TAG_MAX_LENGTH = 63;
export const MESSAGE_MAX_LENGTH = 256;
/** PATH_MAX on Linux is 4096 bytes including the terminating NUL. */
export const PATH_MAX_LENGTH = 4095;

// Patterns that editors can check. The loader parses SPIFFE IDs and CIDRs fully.
const SPIFFE_ID_PATTERN = '^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$';
const SPIFFE_ID_PREFIX_PATTERN = '^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*/?$';
const TRUST_DOMAIN_PATTERN = '^(spiffe://)?[a-z0-9._-]+$';
const CIDR_PATTERN = '^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$';
const PORT_RANGE_PATTERN = '^\\s*[0-9]+\\s*(-\\s*[0-9]+\\s*)?$';
const ABSOLUTE_PATH_PATTERN = '^/';

/** Builds a string field with a fixed set of values. */
function choice<T extends string>(
  description: string,
  values: readonly T[],
  defaultValue?: T,
): StringSchema<T> {
  return {
    type: 'string',
    description,
    enum: values,
    ...(defaultValue === undefined ? {} : { default: defaultValue }),
    examples: values,
  };
}

function map<F extends Record<string, FieldSchema>>(
  description: string,
  fields: F,
  options: Omit<MapSchema<F>, 'type' | 'description' | 'fields'>,
): MapSchema<F> {
  return { type: 'map', description, fields, ...options };
}

function flag(description: string, defaultValue: boolean): BooleanSchema {
  return { type: 'boolean', description, default: defaultValue, examples: [true, false] };
}

const NAME_DESCRIPTION =
  `At most ${NAME_MAX_LENGTH} lowercase letters, digits and '-', starting and ending with a ` +
  'letter or digit.';

const SPIFFE_ID: StringSchema = {
  type: 'string',
  description:
    'Written spiffe://<trust domain>/<path>: the trust domain is lowercase, and path segments ' +
    "use a-z, A-Z, 0-9, '.', '-' and '_' and are not '.' or '..'.",
  pattern: SPIFFE_ID_PATTERN,
  examples: ['spiffe://example.org/api'],
};

const SPIFFE_ID_PREFIX: StringSchema = {
  type: 'string',
  description:
    'The prefix matches on a path segment boundary: spiffe://example.org/ns matches ' +
    'spiffe://example.org/ns and spiffe://example.org/ns/web but not spiffe://example.org/nsx. ' +
    'One trailing / is allowed and ignored.',
  pattern: SPIFFE_ID_PREFIX_PATTERN,
  examples: ['spiffe://example.org/ns/'],
};

const CIDRS: ListSchema = {
  type: 'list',
  description:
    'IPv4 and IPv6 prefixes, or bare addresses (a /32 or /128). Host bits after the prefix ' +
    'must be zero. IPv4 prefixes also match IPv4-mapped IPv6 addresses (::ffff:a.b.c.d), and ' +
    'an IPv6 prefix that covers ::ffff:0:0/96, such as ::/0, also matches IPv4 addresses.',
  minItems: 1,
  items: {
    type: 'string',
    description: 'An address or prefix such as 10.0.0.0/8, 2001:db8::/32 or 127.0.0.2.',
    pattern: CIDR_PATTERN,
    examples: ['10.0.0.0/8', '2001:db8::/32', '127.0.0.2'],
  },
};

const PORTS: ListSchema = {
  type: 'list',
  description: 'Ports and inclusive port ranges. Without ports the rule matches every port.',
  minItems: 1,
  items: {
    type: 'port',
    description: `A port ${MIN_PORT}-${MAX_PORT}, or a string "lo-hi" with lo <= hi.`,
    examples: [8080, '9000-9100'],
  },
};

const PROTOCOL = choice('Transport protocol. Any matches TCP and UDP.', PROTOCOLS, 'Any');

/** Fields that every rule kind has, with `kindName` in the descriptions. */
function ruleBaseFields(kindName: string) {
  return {
    name: {
      type: 'string',
      description:
        `Name of the rule, unique within the policy. Defaults to ${kindName}-<index in the list>. ` +
        NAME_DESCRIPTION,
      pattern: NAME_PATTERN,
      maxLength: NAME_MAX_LENGTH,
      examples: ['to-api'],
    } satisfies StringSchema,
    action: choice(
      'What happens to a matching operation: Allow lets it through, Audit lets it through and ' +
        'reports it, Block denies it. When several rules match, Block wins over Audit and Audit ' +
        'over Allow.',
      ACTIONS,
    ),
    severity: choice('Severity shown with the events and explanations of this rule.', SEVERITIES),
    tags: {
      type: 'list',
      description: 'Labels shown with the events and explanations of this rule.',
      uniqueItems: true,
      default: [],
      items: {
        type: 'string',
        description: `Lowercase letters, digits, ':', '.', '_' and '-', at most ${TAG_MAX_LENGTH}.`,
        pattern: TAG_PATTERN,
        minLength: 1,
        maxLength: TAG_MAX_LENGTH,
        examples: ['pci', 'mitre:t1059'],
      },
    } satisfies ListSchema,
    message: {
      type: 'string',
      description: `Text shown with the events and explanations of this rule, at most ${MESSAGE_MAX_LENGTH} characters.`,
      maxLength: MESSAGE_MAX_LENGTH,
      examples: ['payments may only reach the card vault'],
    } satisfies StringSchema,
  };
}

/** Fields of `to` (egress) and `from` (ingress). */
function networkPeerFields(direction: 'destination' | 'source') {
  const peerName =
    direction === 'destination' ? 'local listener owner' : 'connecting local process';
  return {
    spiffeId: {
      ...SPIFFE_ID,
      description: `The ${peerName} has this SPIFFE ID. ${SPIFFE_ID.description}`,
    },
    spiffeIdPrefix: {
      ...SPIFFE_ID_PREFIX,
      description: `The ${peerName} has a SPIFFE ID with this prefix. ${SPIFFE_ID_PREFIX.description}`,
    },
    cidrs: {
      ...CIDRS,
      description: `The ${direction} address is in one of these prefixes. ${CIDRS.description}`,
    },
  };
}

export const EGRESS_DESTINATION_SCHEMA = map(
  'Destination of the connect(): exactly one of spiffeId, spiffeIdPrefix and cidrs. Remove ' +
    '"to" to match every destination. A SPIFFE ID matches only a destination that is a local ' +
    'socket whose owner (the process that bound it) has that identity.',
  networkPeerFields('destination'),
  { required: [], exactlyOneOf: ['spiffeId', 'spiffeIdPrefix', 'cidrs'] },
);

export const EGRESS_RULE_SCHEMA = map(
  'A rule on connect() calls of the subject.',
  {
    ...ruleBaseFields('egress'),
    to: EGRESS_DESTINATION_SCHEMA,
    ports: PORTS,
    protocol: PROTOCOL,
  },
  { required: ['action'] },
);

export const INGRESS_SOURCE_SCHEMA = map(
  'Source of the connection: exactly one of spiffeId, spiffeIdPrefix and cidrs. Remove ' +
    '"from" to match every source. A SPIFFE ID matches only a local client with that identity.',
  networkPeerFields('source'),
  { required: [], exactlyOneOf: ['spiffeId', 'spiffeIdPrefix', 'cidrs'] },
);

export const INGRESS_RULE_SCHEMA = map(
  'A rule on connections to the listening sockets of the subject. No enforcer of this ' +
    'version applies ingress rules: `sigil policy explain` and `sigil policy diff` evaluate them.',
  {
    ...ruleBaseFields('ingress'),
    from: INGRESS_SOURCE_SCHEMA,
    ports: { ...PORTS, description: `Local ports of the subject. ${PORTS.description}` },
    protocol: PROTOCOL,
  },
  { required: ['action'] },
);

function pathList(description: string, example: string): ListSchema {
  return {
    type: 'list',
    description:
      `${description} Absolute paths without '.' or '..' segments; '//' is read as '/'. ` +
      "Without glob: true the characters * ? [ ] { } are not allowed. With glob: true, '*' " +
      "matches within one segment and a '**' segment matches any number of segments.",
    minItems: 1,
    items: {
      type: 'string',
      description: 'An absolute path.',
      pattern: ABSOLUTE_PATH_PATTERN,
      maxLength: PATH_MAX_LENGTH,
      examples: [example],
    },
  };
}

/** Fields of process and file rules that name paths. */
function pathFields(subjectVerb: string) {
  return {
    paths: pathList(`Files the subject ${subjectVerb}, by whole path.`, '/usr/bin/curl'),
    directories: pathList(
      `Directories whose entries the subject ${subjectVerb}: direct entries, or every ` +
        'descendant with recursive: true. A trailing / is allowed and ignored.',
      '/usr/local/bin',
    ),
    recursive: flag(
      'With true, directories match every descendant; with false only direct entries. ' +
        'true needs directories.',
      false,
    ),
    glob: flag("With true, '*' and '**' in paths and directories are patterns.", false),
  };
}

export const PROCESS_RULE_SCHEMA = map(
  'A rule on exec() calls of the subject, by the path of the executed file. At least one of ' +
    'paths and directories. No enforcer of this version applies process rules (they need BPF LSM).',
  {
    ...ruleBaseFields('process'),
    ...pathFields('executes'),
  },
  {
    required: ['action'],
    atLeastOneOf: ['paths', 'directories'],
    constraints: [{ kind: 'requires', field: 'recursive', value: true, requires: 'directories' }],
  },
);

export const FILE_RULE_SCHEMA = map(
  'A rule on files the subject opens. At least one of paths and directories. No enforcer of ' +
    'this version applies file rules (they need BPF LSM).',
  {
    ...ruleBaseFields('file'),
    ...pathFields('opens'),
    readOnly: flag(
      'With true, the action applies to opens for reading and every open for writing is ' +
        'Blocked. Not allowed with action Block, which already denies both.',
      false,
    ),
  },
  {
    required: ['action'],
    atLeastOneOf: ['paths', 'directories'],
    constraints: [
      { kind: 'requires', field: 'recursive', value: true, requires: 'directories' },
      {
        kind: 'restricts',
        field: 'readOnly',
        value: true,
        restricted: 'action',
        allowed: ['Allow', 'Audit'],
      },
    ],
  },
);

/**
 * Linux capabilities by number, as capabilities(7) names them without the `CAP_` prefix. The
 * index of each name is its capability number (CAP_CHOWN is 0, CAP_CHECKPOINT_RESTORE is 40).
 */
export const CAPABILITY_NAMES = [
  'CHOWN',
  'DAC_OVERRIDE',
  'DAC_READ_SEARCH',
  'FOWNER',
  'FSETID',
  'KILL',
  'SETGID',
  'SETUID',
  'SETPCAP',
  'LINUX_IMMUTABLE',
  'NET_BIND_SERVICE',
  'NET_BROADCAST',
  'NET_ADMIN',
  'NET_RAW',
  'IPC_LOCK',
  'IPC_OWNER',
  'SYS_MODULE',
  'SYS_RAWIO',
  'SYS_CHROOT',
  'SYS_PTRACE',
  'SYS_PACCT',
  'SYS_ADMIN',
  'SYS_BOOT',
  'SYS_NICE',
  'SYS_RESOURCE',
  'SYS_TIME',
  'SYS_TTY_CONFIG',
  'MKNOD',
  'LEASE',
  'AUDIT_WRITE',
  'AUDIT_CONTROL',
  'SETFCAP',
  'MAC_OVERRIDE',
  'MAC_ADMIN',
  'SYSLOG',
  'WAKE_ALARM',
  'BLOCK_SUSPEND',
  'AUDIT_READ',
  'PERFMON',
  'BPF',
  'CHECKPOINT_RESTORE',
] as const;

export type CapabilityName = (typeof CAPABILITY_NAMES)[number];

export const CAPABILITY_RULE_SCHEMA = map(
  'A rule on the Linux capabilities the subject uses: a privileged operation that checks a ' +
    'capability, such as opening a raw socket (NET_RAW), is matched whether or not the process ' +
    'holds the capability. Enforced by AppArmor profiles; the BPF enforcers of this version do ' +
    'not apply capability rules.',
  {
    ...ruleBaseFields('capability'),
    capabilities: {
      type: 'list',
      description:
        'Capabilities as capabilities(7) names them, without the CAP_ prefix, in upper case. ' +
        'A name listed twice counts once.',
      minItems: 1,
      items: choice('A capability name such as NET_RAW or SYS_ADMIN.', CAPABILITY_NAMES),
    } satisfies ListSchema,
  },
  { required: ['action', 'capabilities'] },
);

export const SUBJECT_SCHEMA = map(
  'Processes the policy applies to: exactly one of spiffeId, spiffeIdPrefix, trustDomain and ' +
    'unidentified.',
  {
    spiffeId: {
      ...SPIFFE_ID,
      description: `Processes with this SPIFFE ID. ${SPIFFE_ID.description}`,
    },
    spiffeIdPrefix: {
      ...SPIFFE_ID_PREFIX,
      description: `Processes with a SPIFFE ID under this prefix. ${SPIFFE_ID_PREFIX.description}`,
    },
    trustDomain: {
      type: 'string',
      description:
        'Processes with any SPIFFE ID of this trust domain, given bare (example.org) or as ' +
        'spiffe://example.org.',
      pattern: TRUST_DOMAIN_PATTERN,
      examples: ['example.org'],
    } satisfies StringSchema,
    unidentified: {
      type: 'boolean',
      description:
        'Processes without a SPIFFE ID: no registration entry matched them. Only true is allowed.',
      const: true,
      examples: [true],
    } satisfies BooleanSchema,
  },
  { required: [], exactlyOneOf: ['spiffeId', 'spiffeIdPrefix', 'trustDomain', 'unidentified'] },
);

function posture(kindName: string): StringSchema<Posture> {
  return choice(
    `Action for ${kindName} operations that no rule matches. It applies only to subjects that ` +
      `have an Allow ${kindName} rule; a subject gets Audit only when every policy that applies ` +
      'to it says Audit.',
    POSTURES,
    'Block',
  );
}

function ruleList(kindName: string, items: MapSchema): ListSchema {
  return { type: 'list', description: `${kindName} rules.`, items, default: [] };
}

export const SPEC_SCHEMA = map(
  'What the policy applies to and its rules.',
  {
    subject: SUBJECT_SCHEMA,
    mode: choice(
      'Enforce applies every action as written. Audit turns every Block of this policy (rules ' +
        'and postures) into Audit and marks the decision wouldBlock, for a safe roll-out.',
      MODES,
      'Enforce',
    ),
    egressPosture: posture('egress'),
    egress: ruleList('Egress (connect)', EGRESS_RULE_SCHEMA),
    ingressPosture: posture('ingress'),
    ingress: ruleList('Ingress (accepted connection)', INGRESS_RULE_SCHEMA),
    processPosture: posture('process'),
    process: ruleList('Process (exec)', PROCESS_RULE_SCHEMA),
    filePosture: posture('file'),
    file: ruleList('File (open)', FILE_RULE_SCHEMA),
    capabilityPosture: posture('capability'),
    capability: ruleList('Capability', CAPABILITY_RULE_SCHEMA),
  },
  { required: ['subject'] },
);

export const METADATA_SCHEMA = map(
  'Identification of the policy.',
  {
    name: {
      type: 'string',
      description: `Name of the policy, unique across all loaded policy files. ${NAME_DESCRIPTION}`,
      pattern: NAME_PATTERN,
      maxLength: NAME_MAX_LENGTH,
      examples: ['web-egress'],
    } satisfies StringSchema,
  },
  { required: ['name'] },
);

export const POLICY_SCHEMA = map(
  'A Sigil IdentityPolicy: rules for the processes of one workload identity. A file may hold ' +
    'several documents separated by ---.',
  {
    apiVersion: choice('API version of the format.', [POLICY_API_VERSION]),
    kind: choice('Kind of the document.', [POLICY_KIND]),
    metadata: METADATA_SCHEMA,
    spec: SPEC_SCHEMA,
  },
  { required: ['apiVersion', 'kind', 'metadata', 'spec'] },
);

/** Returns the allowed field names of a map, in schema order. */
export function fieldNames(schema: MapSchema): string[] {
  return Object.keys(schema.fields);
}

/** The schema of each rule kind's list items. */
export const RULE_SCHEMAS = {
  egress: EGRESS_RULE_SCHEMA,
  ingress: INGRESS_RULE_SCHEMA,
  process: PROCESS_RULE_SCHEMA,
  file: FILE_RULE_SCHEMA,
  capability: CAPABILITY_RULE_SCHEMA,
} as const;

/** JSON Schema dialect of the generated schema. */
export const JSON_SCHEMA_DIALECT = 'https://json-schema.org/draft/2020-12/schema';

/**
 * Returns the JSON Schema (draft 2020-12) of one policy document, for editors. It checks
 * structure, types, allowed values, patterns and lengths. The loader also checks what the
 * descriptions name: SPIFFE ID and CIDR syntax, path normalisation, unique names and
 * contradictory rules.
 */
export function policyJsonSchema(): Record<string, unknown> {
  return {
    $schema: JSON_SCHEMA_DIALECT,
    title: 'Sigil IdentityPolicy',
    ...toJsonSchema(POLICY_SCHEMA),
  };
}

/** Returns the JSON text of `policyJsonSchema()` as `sigil policy schema` prints it. */
export function policyJsonSchemaText(): string {
  return `${JSON.stringify(policyJsonSchema(), null, 2)}\n`;
}

function toJsonSchema(schema: FieldSchema): Record<string, unknown> {
  switch (schema.type) {
    case 'string':
      return stringJsonSchema(schema);
    case 'boolean':
      return {
        type: 'boolean',
        description: schema.description,
        ...(schema.const === undefined ? {} : { const: schema.const }),
        ...(schema.default === undefined ? {} : { default: schema.default }),
      };
    case 'port':
      return {
        description: schema.description,
        oneOf: [
          { type: 'integer', minimum: MIN_PORT, maximum: MAX_PORT },
          { type: 'string', pattern: PORT_RANGE_PATTERN },
        ],
        examples: schema.examples,
      };
    case 'list':
      return {
        type: 'array',
        description: schema.description,
        items: toJsonSchema(schema.items),
        ...(schema.minItems === undefined ? {} : { minItems: schema.minItems }),
        ...(schema.uniqueItems ? { uniqueItems: true } : {}),
        ...(schema.default === undefined ? {} : { default: schema.default }),
      };
    case 'map':
      return mapJsonSchema(schema);
  }
}

function stringJsonSchema(schema: StringSchema): Record<string, unknown> {
  return {
    type: 'string',
    description: schema.description,
    ...(schema.enum === undefined ? {} : { enum: schema.enum }),
    ...(schema.default === undefined ? {} : { default: schema.default }),
    ...(schema.pattern === undefined ? {} : { pattern: schema.pattern }),
    ...(schema.minLength === undefined ? {} : { minLength: schema.minLength }),
    ...(schema.maxLength === undefined ? {} : { maxLength: schema.maxLength }),
    ...(schema.enum === undefined ? { examples: schema.examples } : {}),
  };
}

function mapJsonSchema(schema: MapSchema): Record<string, unknown> {
  const properties: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(schema.fields)) properties[name] = toJsonSchema(field);
  const result: Record<string, unknown> = {
    type: 'object',
    description: schema.description,
    properties,
    additionalProperties: false,
  };
  if (schema.required.length > 0) result.required = schema.required;
  if (schema.exactlyOneOf) {
    result.oneOf = schema.exactlyOneOf.map((name) => ({ required: [name] }));
  }
  if (schema.atLeastOneOf) {
    result.anyOf = schema.atLeastOneOf.map((name) => ({ required: [name] }));
  }
  const conditions = (schema.constraints ?? []).map(constraintJsonSchema);
  if (conditions.length > 0) result.allOf = conditions;
  return result;
}

function constraintJsonSchema(constraint: FieldConstraint): Record<string, unknown> {
  const condition = {
    properties: { [constraint.field]: { const: constraint.value } },
    required: [constraint.field],
  };
  if (constraint.kind === 'requires') {
    return { if: condition, then: { required: [constraint.requires] } };
  }
  return {
    if: condition,
    then: { properties: { [constraint.restricted]: { enum: constraint.allowed } } },
  };
}
