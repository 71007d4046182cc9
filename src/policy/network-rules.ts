import { isScalar, Node } from 'yaml';
import { SourcePosition } from '../util/config-error';
import { formatPrefix, parseCidr } from './cidr';
import { mergePortRanges, parsePortEntry } from './ports';
import {
  checkContradictions,
  checkExactlyOne,
  readRuleBase,
  readRuleList,
  readSelectorFields,
  ReadRule,
  RuleReadResult,
  ruleBaseOf,
} from './rule-fields';
import {
  EGRESS_DESTINATION_SCHEMA,
  EGRESS_RULE_SCHEMA,
  fieldNames,
  INGRESS_RULE_SCHEMA,
  INGRESS_SOURCE_SCHEMA,
} from './schema';
import { selectorKey } from './spiffe-selector';
import { readStringList } from './string-list';
import { Cidr, EgressDestination, EgressRule, IngressRule, PortRange, RuleProtocol } from './types';
import { FieldPath, YamlField, YamlFieldReader } from './yaml-fields';

/** Fields that egress and ingress rules share beyond `RuleBase`. */
interface NetworkFields {
  peer: EgressDestination;
  ports: readonly PortRange[] | null;
  protocol: RuleProtocol;
}

/** Reads `spec.egress`. */
export function readEgressRules(
  reader: YamlFieldReader,
  field: YamlField,
  namePositions: Map<string, SourcePosition>,
): EgressRule[] | undefined {
  return readRuleList<EgressRule>(
    reader,
    field,
    'egress',
    namePositions,
    (node, path, index) => readEgressRule(reader, node, path, index),
    (_, rules) => checkNetworkContradictions(reader, rules, (rule) => rule.to),
  );
}

/** Reads `spec.ingress`. */
export function readIngressRules(
  reader: YamlFieldReader,
  field: YamlField,
  namePositions: Map<string, SourcePosition>,
): IngressRule[] | undefined {
  return readRuleList<IngressRule>(
    reader,
    field,
    'ingress',
    namePositions,
    (node, path, index) => readIngressRule(reader, node, path, index),
    (_, rules) => checkNetworkContradictions(reader, rules, (rule) => rule.from),
  );
}

function readEgressRule(
  reader: YamlFieldReader,
  node: Node | null,
  path: FieldPath,
  index: number,
): RuleReadResult<EgressRule> {
  const fields = reader.readMap(node, path, fieldNames(EGRESS_RULE_SCHEMA));
  if (!fields) return {};
  const base = readRuleBase(reader, fields, node, path, 'egress', index);
  const network = readNetworkFields(reader, fields, 'to');
  if (!base.valid || !network) return { name: base.namedAt };
  const rule: EgressRule = {
    ...ruleBaseOf(base),
    to: network.peer,
    ports: network.ports,
    protocol: network.protocol,
    position: reader.positionOf(node),
  };
  return { rule, name: base.namedAt, actionNode: base.actionNode, path };
}

function readIngressRule(
  reader: YamlFieldReader,
  node: Node | null,
  path: FieldPath,
  index: number,
): RuleReadResult<IngressRule> {
  const fields = reader.readMap(node, path, fieldNames(INGRESS_RULE_SCHEMA));
  if (!fields) return {};
  const base = readRuleBase(reader, fields, node, path, 'ingress', index);
  const network = readNetworkFields(reader, fields, 'from');
  if (!base.valid || !network) return { name: base.namedAt };
  const rule: IngressRule = {
    ...ruleBaseOf(base),
    from: network.peer,
    ports: network.ports,
    protocol: network.protocol,
    position: reader.positionOf(node),
  };
  return { rule, name: base.namedAt, actionNode: base.actionNode, path };
}

/** Reads `to` or `from`, `ports` and `protocol`; returns undefined when any has an error. */
function readNetworkFields(
  reader: YamlFieldReader,
  fields: Map<string, YamlField>,
  peerField: 'to' | 'from',
): NetworkFields | undefined {
  let peer: EgressDestination | undefined = { kind: 'any' };
  const peerYaml = fields.get(peerField);
  if (peerYaml) peer = readPeer(reader, peerYaml, peerField);

  let ports: PortRange[] | null | undefined = null;
  const portsField = fields.get('ports');
  if (portsField) ports = readPorts(reader, portsField);

  const protocolSchema = EGRESS_RULE_SCHEMA.fields.protocol;
  let protocol: RuleProtocol | undefined = protocolSchema.default;
  const protocolField = fields.get('protocol');
  if (protocolField) protocol = reader.readChoice(protocolField, protocolSchema.enum ?? []);

  if (!peer || ports === undefined || !protocol) return undefined;
  return { peer, ports, protocol };
}

function readPeer(
  reader: YamlFieldReader,
  field: YamlField,
  peerField: 'to' | 'from',
): EgressDestination | undefined {
  const schema = peerField === 'to' ? EGRESS_DESTINATION_SCHEMA : INGRESS_SOURCE_SCHEMA;
  const fields = reader.readMap(field.value, field.path, fieldNames(schema));
  if (!fields) return undefined;
  const everything = peerField === 'to' ? 'destination' : 'source';
  const hint = `remove "${peerField}" to match every ${everything}`;
  const exactlyOne = checkExactlyOne(reader, field, fields, schema.exactlyOneOf ?? [], hint);
  const peer = readSelectorFields(reader, fields);
  const cidrsField = fields.get('cidrs');
  const cidrs = cidrsField ? readCidrs(reader, cidrsField, hint) : undefined;
  if (!exactlyOne) return undefined;
  if (cidrsField) return cidrs ? { kind: 'cidrs', cidrs } : undefined;
  return peer ? { kind: 'peer', peer } : undefined;
}

function readCidrs(
  reader: YamlFieldReader,
  field: YamlField,
  everythingHint: string,
): Cidr[] | undefined {
  return readStringList(reader, field, {
    name: 'cidrs',
    listHint: 'expected a list such as [10.0.0.0/8, "2001:db8::/32"]',
    emptyFix: everythingHint,
    entry: 'a CIDR string',
    parse: (text) => {
      const result = parseCidr(text);
      if (result.ok) return { ok: true, value: result.cidr };
      return { ok: false, message: `invalid CIDR "${text}": ${result.reason}`, hint: result.hint };
    },
  });
}

function readPorts(reader: YamlFieldReader, field: YamlField): PortRange[] | undefined {
  const listHint = 'expected a list such as [8080, "9000-9100"]';
  const items = reader.readList(field, listHint);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.error(
      field.value,
      field.path,
      'ports is empty',
      `${listHint}, or remove "ports" to match every port`,
    );
    return undefined;
  }
  const ranges: PortRange[] = [];
  let valid = true;
  for (const item of items) {
    const node = item.value;
    const value = isScalar(node) ? node.value : node;
    const result = parsePortEntry(value);
    if (!result.ok) {
      reader.error(node, item.path, `invalid port: ${result.reason}`, result.hint);
      valid = false;
      continue;
    }
    ranges.push(result.range);
  }
  return valid ? ranges : undefined;
}

/**
 * Reports pairs of rules in one list with the same peer or addresses, ports and protocol
 * where one allows and the other blocks. Returns false when it found any.
 */
function checkNetworkContradictions<R extends EgressRule | IngressRule>(
  reader: YamlFieldReader,
  rules: readonly ReadRule<R>[],
  peerOf: (rule: R) => EgressDestination,
): boolean {
  const direction = rules[0] && 'from' in rules[0].rule ? 'source' : 'destination';
  return checkContradictions(
    reader,
    rules,
    (rule) => [networkMatchKey(peerOf(rule), rule.ports, rule.protocol)],
    () => `have the same ${direction}, ports and protocol`,
  );
}

/** Returns a text key that is equal for network rules matching the same connections. */
export function networkMatchKey(
  peer: EgressDestination,
  portRanges: readonly PortRange[] | null,
  protocol: RuleProtocol,
): string {
  let destination: string;
  if (peer.kind === 'any') {
    destination = 'any';
  } else if (peer.kind === 'peer') {
    destination = selectorKey(peer.peer);
  } else {
    const prefixes = new Set(peer.cidrs.map((cidr) => formatPrefix(cidr.addr, cidr.prefixLen)));
    destination = `cidrs:${[...prefixes].sort().join(',')}`;
  }
  const ports =
    portRanges === null
      ? 'any'
      : mergePortRanges(portRanges)
          .map((range) => `${range.lo}-${range.hi}`)
          .join(',');
  return `${destination}|${ports}|${protocol}`;
}
