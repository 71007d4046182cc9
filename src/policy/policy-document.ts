import { Document, isScalar, Node } from 'yaml';
import { parseTrustDomain, SpiffeIdError } from '../identity/spiffe-id';
import { ConfigIssue, SourcePosition } from '../util/config-error';
import { YamlSource } from '../util/yaml-source';
import { readCapabilityRules } from './capability-rules';
import { readEgressRules, readIngressRules } from './network-rules';
import { readFileRules, readProcessRules } from './path-rules';
import { checkExactlyOne, NAME_HINT, NamedAt, readName, readSelectorFields } from './rule-fields';
import {
  fieldNames,
  METADATA_SCHEMA,
  POLICY_SCHEMA,
  SPEC_SCHEMA,
  StringSchema,
  SUBJECT_SCHEMA,
} from './schema';
import {
  CapabilityRule,
  EgressRule,
  FileRule,
  IngressRule,
  Policy,
  POLICY_API_VERSION,
  POLICY_KIND,
  PolicyMode,
  Posture,
  ProcessRule,
  RuleKind,
  SpiffeSelector,
  SubjectSelector,
} from './types';
import { YamlField, YamlFieldReader } from './yaml-fields';

export { formatPosition, NamedAt } from './rule-fields';

const TRUST_DOMAIN_HINT = 'expected a trust domain such as example.org';

/** Result of reading one document: the policy when it is valid, and its name when that is. */
export interface PolicyDocumentResult {
  policy?: Policy;
  name?: NamedAt;
}

/**
 * Validates one YAML document as an `IdentityPolicy` and records every problem in `issues`.
 * Returns undefined for an empty document. The policy is returned only when the document has
 * no errors, but its name is returned whenever it is valid, so duplicate names across a set
 * are still reported for documents with other errors.
 */
export function readPolicyDocument(
  source: YamlSource,
  document: Document.Parsed,
  issues: ConfigIssue[],
): PolicyDocumentResult | undefined {
  const root = document.contents;
  if (root === null || (isScalar(root) && root.value === null)) return undefined;

  const issueCountBefore = issues.length;
  const reader = new YamlFieldReader(source, document, issues);
  const fields = reader.readMap(root, [], fieldNames(POLICY_SCHEMA));
  if (!fields) return {};

  checkHeader(reader, fields, root);
  const name = readMetadata(reader, fields, root);
  const spec = readSpec(reader, fields, root);

  if (issues.length > issueCountBefore || !name || !spec) return { name };
  const { subject, ...settingsAndRules } = spec;
  const policy: Policy = {
    name: name.name,
    subject: compatibleSubject(subject),
    subjectSelector: subject,
    ...settingsAndRules,
    position: reader.positionOf(root),
  };
  return { policy, name };
}

/** Returns the `Policy.subject` form of a subject, as that field's comment describes. */
function compatibleSubject(subject: SubjectSelector): SpiffeSelector {
  switch (subject.kind) {
    case 'trustDomain':
      return { kind: 'spiffeIdPrefix', spiffeIdPrefix: `spiffe://${subject.trustDomain}` };
    case 'unidentified':
      return { kind: 'spiffeId', spiffeId: '' };
    default:
      return subject;
  }
}

function checkHeader(reader: YamlFieldReader, fields: Map<string, YamlField>, root: Node): void {
  const apiVersionHint = `use ${POLICY_API_VERSION}`;
  const apiVersion = reader.requireField(fields, 'apiVersion', root, [], apiVersionHint);
  if (apiVersion) {
    const text = reader.readString(apiVersion, apiVersionHint);
    if (text !== undefined && text !== POLICY_API_VERSION) {
      reader.error(
        apiVersion.value,
        apiVersion.path,
        `unsupported apiVersion "${text}"`,
        apiVersionHint,
      );
    }
  }

  const kindHint = `use ${POLICY_KIND}`;
  const kind = reader.requireField(fields, 'kind', root, [], kindHint);
  if (kind) {
    const text = reader.readString(kind, kindHint);
    if (text !== undefined && text !== POLICY_KIND) {
      reader.error(kind.value, kind.path, `unsupported kind "${text}"`, kindHint);
    }
  }
}

function readMetadata(
  reader: YamlFieldReader,
  fields: Map<string, YamlField>,
  root: Node,
): NamedAt | undefined {
  const metadata = reader.requireField(fields, 'metadata', root, [], 'add metadata.name');
  if (!metadata) return undefined;
  const metadataFields = reader.readMap(metadata.value, metadata.path, fieldNames(METADATA_SCHEMA));
  if (!metadataFields) return undefined;
  const nameField = reader.requireField(
    metadataFields,
    'name',
    metadata.value,
    metadata.path,
    NAME_HINT,
  );
  if (!nameField) return undefined;
  const name = readName(reader, nameField);
  return name === undefined ? undefined : { name, position: reader.positionOf(nameField.value) };
}

type RuleListReader<R> = (
  reader: YamlFieldReader,
  field: YamlField,
  names: Map<string, SourcePosition>,
) => R[] | undefined;

/** The fields of `Policy` that `spec` gives. */
interface ReadSpec {
  subject: SubjectSelector;
  mode: PolicyMode;
  egressPosture: Posture;
  egress: EgressRule[];
  ingressPosture: Posture;
  ingress: IngressRule[];
  processPosture: Posture;
  process: ProcessRule[];
  filePosture: Posture;
  file: FileRule[];
  capabilityPosture: Posture;
  capability: CapabilityRule[];
}

function readSpec(
  reader: YamlFieldReader,
  fields: Map<string, YamlField>,
  root: Node,
): ReadSpec | undefined {
  const spec = reader.requireField(fields, 'spec', root, [], 'add spec.subject and spec.egress');
  if (!spec) return undefined;
  const specFields = reader.readMap(spec.value, spec.path, fieldNames(SPEC_SCHEMA));
  if (!specFields) return undefined;
  const schema = SPEC_SCHEMA.fields;

  let subject: SubjectSelector | undefined;
  const subjectField = reader.requireField(
    specFields,
    'subject',
    spec.value,
    spec.path,
    `add one of ${SUBJECT_SCHEMA.exactlyOneOf?.join(', ')}`,
  );
  if (subjectField) subject = readSubject(reader, subjectField);

  const readSetting = <T extends string>(name: string, setting: StringSchema<T>) => {
    const field = specFields.get(name);
    return field ? reader.readChoice(field, setting.enum ?? []) : setting.default;
  };
  const mode = readSetting('mode', schema.mode);
  const egressPosture = readSetting('egressPosture', schema.egressPosture);
  const ingressPosture = readSetting('ingressPosture', schema.ingressPosture);
  const processPosture = readSetting('processPosture', schema.processPosture);
  const filePosture = readSetting('filePosture', schema.filePosture);
  const capabilityPosture = readSetting('capabilityPosture', schema.capabilityPosture);

  // Rule names are unique across the lists of one policy.
  const names = new Map<string, SourcePosition>();
  const readList = <R>(name: RuleKind, read: RuleListReader<R>): R[] | undefined => {
    const field = specFields.get(name);
    return field ? read(reader, field, names) : [];
  };
  const egress = readList('egress', readEgressRules);
  const ingress = readList('ingress', readIngressRules);
  const processRules = readList('process', readProcessRules);
  const fileRules = readList('file', readFileRules);
  const capabilityRules = readList('capability', readCapabilityRules);

  if (
    !subject ||
    !mode ||
    !egressPosture ||
    !ingressPosture ||
    !processPosture ||
    !filePosture ||
    !capabilityPosture ||
    !egress ||
    !ingress ||
    !processRules ||
    !fileRules ||
    !capabilityRules
  ) {
    return undefined;
  }
  return {
    subject,
    mode,
    egressPosture,
    egress,
    ingressPosture,
    ingress,
    processPosture,
    process: processRules,
    filePosture,
    file: fileRules,
    capabilityPosture,
    capability: capabilityRules,
  };
}

function readSubject(reader: YamlFieldReader, field: YamlField): SubjectSelector | undefined {
  const fields = reader.readMap(field.value, field.path, fieldNames(SUBJECT_SCHEMA));
  if (!fields) return undefined;
  const choices = SUBJECT_SCHEMA.exactlyOneOf ?? [];
  const exactlyOne = checkExactlyOne(reader, field, fields, choices);

  // Every present field is validated, so all errors show even when several are given.
  let subject: SubjectSelector | undefined = readSelectorFields(reader, fields);
  const trustDomainField = fields.get('trustDomain');
  if (trustDomainField) {
    const trustDomain = readTrustDomain(reader, trustDomainField);
    if (trustDomain !== undefined) subject ??= { kind: 'trustDomain', trustDomain };
  }
  const unidentifiedField = fields.get('unidentified');
  if (unidentifiedField) {
    const unidentified = reader.readBoolean(unidentifiedField);
    if (unidentified === false) {
      reader.error(
        unidentifiedField.value,
        unidentifiedField.path,
        'unidentified must be true',
        `to select processes with a SPIFFE ID, use ${choices.filter((name) => name !== 'unidentified').join(', ')}`,
      );
    } else if (unidentified) {
      subject ??= { kind: 'unidentified' };
    }
  }
  return exactlyOne ? subject : undefined;
}

function readTrustDomain(reader: YamlFieldReader, field: YamlField): string | undefined {
  const text = reader.readString(field, TRUST_DOMAIN_HINT);
  if (text === undefined) return undefined;
  try {
    return parseTrustDomain(text);
  } catch (error) {
    if (!(error instanceof SpiffeIdError)) throw error;
    reader.error(field.value, field.path, error.message, TRUST_DOMAIN_HINT);
    return undefined;
  }
}
