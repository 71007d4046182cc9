import { AUDIT_MESSAGE_FIELDS, AuditEvent, AuditMessageName, FieldSpec } from './audit-event';

type WireObject = Record<string, unknown>;

/**
 * Converts a sigil.audit.v1.Event as @grpc/proto-loader decodes it (with
 * defaults: true and longs: String) to the AuditEvent shape the agent
 * publishes: uint64 sequence numbers and counts become numbers, and optional
 * fields that hold the proto3 default ('', 0, empty list, no message) are
 * left out, so an event reads the same from the stream as from the JSON log.
 */
export function eventFromWire(wire: WireObject): AuditEvent {
  return messageFromWire(wire, 'Event') as unknown as AuditEvent;
}

function messageFromWire(wire: WireObject, name: AuditMessageName): WireObject {
  const fields: Record<string, FieldSpec> = AUDIT_MESSAGE_FIELDS[name];
  const out: WireObject = {};
  for (const [field, spec] of Object.entries(fields)) {
    const value = convertField(wire[field], spec);
    if (value === undefined) continue;
    if (spec.optional && !spec.presence && isProtoDefault(value)) continue;
    out[field] = value;
  }
  return out;
}

function convertField(value: unknown, spec: FieldSpec): unknown {
  if (value === undefined || value === null) return undefined;
  if (spec.repeated) return (value as unknown[]).map((item) => convertScalarOrMessage(item, spec));
  return convertScalarOrMessage(value, spec);
}

function convertScalarOrMessage(value: unknown, spec: FieldSpec): unknown {
  const kind = spec.kind;
  if (typeof kind === 'object') return messageFromWire(value as WireObject, kind.message);
  if (kind === 'uint64-number') return Number(value);
  if (kind === 'uint64-string') return String(value);
  return value;
}

function isProtoDefault(value: unknown): boolean {
  if (value === '' || value === 0) return true;
  return Array.isArray(value) && value.length === 0;
}
