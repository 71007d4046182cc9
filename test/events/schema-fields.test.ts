import * as protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_MESSAGE_FIELDS, AuditEvent, AuditMessageName, FieldSpec } from '../../src/events/audit-event';
import { AUDIT_PROTO } from '../../src/events/audit-proto';
import { EventHub } from '../../src/events/event-hub';
import { Collector, sampleDrafts, ServerFixture } from './fixtures';

const PACKAGE = 'sigil.audit.v1';

function camelCase(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, letter: string) => letter.toUpperCase());
}

/** Returns the proto declaration that a FieldSpec describes: type name, repeated, and explicit presence. */
function expectedProto(spec: FieldSpec): { type: string; repeated: boolean; presence: boolean } {
  const kind = spec.kind;
  let type: string;
  if (typeof kind === 'object') type = kind.message;
  else if (kind === 'uint64-number' || kind === 'uint64-string') type = 'uint64';
  else type = kind;
  return { type, repeated: spec.repeated === true, presence: spec.presence === true };
}

function actualProto(field: protobuf.Field): { type: string; repeated: boolean; presence: boolean } {
  // proto3 `optional` is a synthetic oneof named after the field with a leading underscore.
  const presence = field.partOf !== null && field.partOf.name === `_${field.name}`;
  return { type: field.type, repeated: field.repeated, presence };
}

describe('audit proto and AuditEvent', () => {
  // keepCase: the proto names as written, snake_case.
  const root = new protobuf.Root().loadSync(AUDIT_PROTO, { keepCase: true });
  root.resolveAll();
  const messages = Object.keys(AUDIT_MESSAGE_FIELDS) as AuditMessageName[];

  it.each(messages)('%s has the same fields in the proto and in TypeScript', (name) => {
    const type = root.lookupType(`${PACKAGE}.${name}`);
    const protoFields = type.fieldsArray.map((field) => camelCase(field.name)).sort();
    const tsFields = Object.keys(AUDIT_MESSAGE_FIELDS[name]).sort();
    expect(protoFields).toEqual(tsFields);
  });

  it.each(messages)('%s declares each field with the kind TypeScript expects', (name) => {
    const type = root.lookupType(`${PACKAGE}.${name}`);
    const specs: Record<string, FieldSpec> = AUDIT_MESSAGE_FIELDS[name];
    for (const field of type.fieldsArray) {
      const spec = specs[camelCase(field.name)];
      expect(spec, `${name}.${field.name} has no TypeScript counterpart`).toBeDefined();
      expect(actualProto(field), `${name}.${field.name}`).toEqual(expectedProto(spec));
    }
  });

  it('lists every message that Event contains, and no other', () => {
    const reachable = new Set<string>();
    const visit = (type: protobuf.Type) => {
      if (reachable.has(type.name)) return;
      reachable.add(type.name);
      for (const field of type.fieldsArray) {
        if (field.resolvedType instanceof protobuf.Type) visit(field.resolvedType);
      }
    };
    visit(root.lookupType(`${PACKAGE}.Event`));
    expect([...reachable].sort()).toEqual([...messages].sort());
  });

  it('never reuses a field number within a message', () => {
    for (const name of [...messages, 'WatchRequest']) {
      const numbers = root.lookupType(`${PACKAGE}.${name}`).fieldsArray.map((field) => field.id);
      expect(new Set(numbers).size, name).toBe(numbers.length);
    }
  });

  it('keeps the field numbers of version 1.0', () => {
    const event = root.lookupType(`${PACKAGE}.Event`);
    const numbered = Object.fromEntries(event.fieldsArray.map((field) => [field.name, field.id]));
    expect(numbered).toMatchObject({
      seq: 1,
      time: 2,
      ktime_ns: 3,
      node: 4,
      type: 5,
      subject: 6,
      process: 7,
      connection: 8,
      policy: 9,
      action: 10,
      result: 11,
      errno: 12,
      enforcer: 13,
      message: 14,
      loss: 15,
    });
  });
});

describe('events over gRPC', () => {
  let fixture: ServerFixture;
  let published: AuditEvent[];

  beforeAll(async () => {
    fixture = await new ServerFixture(new EventHub('wire-node')).start();
    published = sampleDrafts().map((draft) => fixture.hub.publish(draft));
  });

  afterAll(() => fixture.close());

  it.each([false, true])('arrive equal to the published events (batched: %s)', async (batched) => {
    const collector = await new Collector({ socketPath: fixture.socket, sinceSeq: 1, batched }).live();
    const received = await collector.waitForCount(published.length);
    collector.cancel();
    expect(received).toEqual(published);
  });

  it('keep an exit code and signal of 0', async () => {
    const exit = published.find((event) => event.type === 'exit') as AuditEvent;
    const collector = await new Collector({ socketPath: fixture.socket, sinceSeq: exit.seq, types: ['exit'] }).live();
    const [received] = await collector.waitForCount(1);
    collector.cancel();
    expect(received.process?.exitCode).toBe(0);
    expect(received.process?.exitSignal).toBe(0);
  });
});
