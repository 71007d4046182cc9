import * as grpc from '@grpc/grpc-js';
import * as protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { AuditEvent, EventDraft } from '../../src/events/audit-event';
import { auditServiceDefinition, AUDIT_PROTO } from '../../src/events/audit-proto';
import { EventHub } from '../../src/events/event-hub';
import { encodeEvent, encodeEventBatch } from '../../src/events/event-encoder';
import { eventFromWire } from '../../src/events/wire-format';
import { process as processOf, sampleDrafts, WEB } from './fixtures';

/** Events past the sample drafts: edge values of each wire type. */
const EDGE_DRAFTS: EventDraft[] = [
  {
    // Non-ASCII text, strings longer than the ASCII loop and than 127 bytes, a cgroup id past 2^63.
    type: 'exec',
    ktimeNs: '18446744073709551615',
    subject: { spiffeId: 'spiffe://example.org/ns/prod/sa/caf\u00e9-\u{1f600}' },
    process: processOf(4_294_967_295, {
      ppid: 2_147_483_648,
      executable: `/opt/${'x'.repeat(200)}/bin/\u00fcber`,
      comm: '\u00e9t\u00e9',
      cgroupId: '9223372036854775809',
      arguments: ['', 'a'.repeat(65), '\u00e9'.repeat(70)],
    }),
    action: 'none',
    result: 'allowed',
  },
  {
    // A negative exit code and errno take ten bytes each.
    type: 'exit',
    ktimeNs: '9007199254740993',
    subject: { spiffeId: '' },
    process: processOf(7, { exitCode: -1 }),
    errno: -22,
    action: 'none',
    result: 'allowed',
  },
  {
    type: 'loss',
    ktimeNs: '0',
    loss: { where: 'client-queue', count: 2 ** 53 - 1, firstSeq: 300, lastSeq: 2 ** 40 },
    message: 'dropped',
  },
  {
    // A nested message longer than 127 bytes needs a two-byte length.
    type: 'connect',
    ktimeNs: '1',
    subject: { spiffeId: `${WEB}/${'s'.repeat(150)}` },
    process: processOf(1),
    connection: {
      family: 'ipv6',
      protocol: 'other',
      address: 'fe80::1',
      port: 65535,
      peerSpiffeId: 'p'.repeat(20_000),
      peerPid: 0,
      localAddress: '::1',
      localPort: 0,
    },
    policy: { name: '', rule: '', reason: 'no-policy', tags: [] },
    action: 'allow',
    result: 'allowed',
    enforcer: 'cgroup-sock',
  },
];

function publishAll(drafts: EventDraft[]): AuditEvent[] {
  const hub = new EventHub('encoder-node', { runId: 'run-1' });
  return drafts.map((draft) => hub.publish(draft));
}

const EVENTS = publishAll([...sampleDrafts(), ...EDGE_DRAFTS]);
const definition = auditServiceDefinition();

/** Encodes as the server did before: proto-loader's fromObject, then protobufjs encode. */
function genericEncode(method: 'Watch' | 'WatchBatches', value: object): Buffer {
  const methodDefinition = definition[method] as grpc.MethodDefinition<unknown, object>;
  return methodDefinition.responseSerialize(value);
}

function decodeEvent(bytes: Buffer): AuditEvent {
  const methodDefinition = definition.Watch as grpc.MethodDefinition<
    unknown,
    Record<string, unknown>
  >;
  return eventFromWire(methodDefinition.responseDeserialize(bytes));
}

describe('event encoder', () => {
  it.each(EVENTS.map((event) => [event.seq, event.type, event] as const))(
    'event %i (%s) encodes to the protobufjs bytes',
    (_seq, _type, event) => {
      expect(encodeEvent(event).equals(genericEncode('Watch', event))).toBe(true);
    },
  );

  it.each(EVENTS.map((event) => [event.seq, event.type, event] as const))(
    'event %i (%s) decodes as the protobufjs bytes do',
    (_seq, _type, event) => {
      expect(decodeEvent(encodeEvent(event))).toEqual(decodeEvent(genericEncode('Watch', event)));
    },
  );

  // The edge events set optional fields to proto3 defaults, which the wire does not tell
  // from unset fields.
  it.each(
    EVENTS.slice(0, sampleDrafts().length).map((event) => [event.seq, event.type, event] as const),
  )('event %i (%s) decodes to the published event', (_seq, _type, event) => {
    expect(decodeEvent(encodeEvent(event))).toEqual(JSON.parse(JSON.stringify(event)));
  });

  it('batch encodes to the protobufjs bytes', () => {
    expect(encodeEventBatch(EVENTS).equals(genericEncode('WatchBatches', { events: EVENTS }))).toBe(
      true,
    );
  });

  it('shared frozen parts encode as protobufjs does', () => {
    const subject = Object.freeze({ spiffeId: WEB });
    const ancestry = Object.freeze([
      Object.freeze({ pid: 90, executable: '/bin/sh', comm: 'sh', spiffeId: WEB }),
      Object.freeze({ pid: 1, executable: '/sbin/init', comm: 'systemd', spiffeId: '' }),
    ]);
    const policy = Object.freeze({ name: 'p', rule: 'r', reason: 'rule' as const, tags: Object.freeze(['t']) });
    const drafts: EventDraft[] = [1, 2, 3].map((pid) => ({
      type: 'exec',
      ktimeNs: String(pid),
      subject,
      process: processOf(pid, { ancestry }),
      policy: policy as EventDraft['policy'],
      action: 'none',
      result: 'allowed',
    }));
    // An event of another type takes the cached subject bytes too.
    drafts.push({ type: 'exit', ktimeNs: '4', subject, process: processOf(4, { ancestry: [] }) });
    for (const event of publishAll(drafts)) {
      expect(encodeEvent(event).equals(genericEncode('Watch', event))).toBe(true);
    }
  });

  it('repeating tails encode as protobufjs does', () => {
    const subject = Object.freeze({ spiffeId: WEB });
    const frozenProcess = Object.freeze(processOf(5));
    const mutableProcess = processOf(6);
    const hub = new EventHub('encoder-node', { runId: 'run-1' });
    for (let i = 0; i < 30; i++) {
      // A mutable process changes between events with the same object, and must be encoded again.
      mutableProcess.uid = i;
      const event = hub.publish({
        type: 'connect',
        ktimeNs: String(i),
        subject,
        process: i % 4 >= 2 ? mutableProcess : frozenProcess,
        action: i % 6 === 5 ? 'block' : 'allow',
        result: 'allowed',
        errno: i % 9 === 8 ? 1 : undefined,
      });
      expect(encodeEvent(event).equals(genericEncode('Watch', event))).toBe(true);
    }
  });

  it('events across slabs encode as protobufjs does', () => {
    // About 4 MB of events fill several 1 MiB slabs, so some events move to a new slab mid-way.
    const drafts: EventDraft[] = [];
    for (let i = 0; i < 4000; i++) {
      drafts.push({
        type: 'exec',
        ktimeNs: String(i),
        subject: { spiffeId: `${WEB}/${i}` },
        process: processOf(i + 1, {
          arguments: ['x'.repeat(300 + (i % 500)), 'y'.repeat(i % 200)],
          ancestry: [{ pid: 1, executable: `/bin/${'z'.repeat(i % 300)}`, comm: 'sh', spiffeId: '' }],
        }),
        action: 'none',
        result: 'allowed',
      });
    }
    const events = publishAll(drafts);
    const encoded = events.map((event) => Buffer.from(encodeEvent(event)));
    events.forEach((event, i) => {
      expect(encodeEvent(event).equals(encoded[i])).toBe(true);
      expect(encoded[i].equals(genericEncode('Watch', event))).toBe(true);
    });
  });

  it('repeated times across slabs encode as protobufjs does', () => {
    // About 4.5 MB of events, whose time repeats in runs of three, cross several 1 MiB slabs.
    const events: AuditEvent[] = [];
    for (let i = 0; i < 3000; i++) {
      events.push({
        seq: i + 1,
        time: `2026-12-04T00:00:${String(Math.floor(i / 3) % 60).padStart(2, '0')}.000Z`,
        node: 'encoder-node',
        type: 'agent',
        ktimeNs: String(i),
        message: 'm'.repeat(1400 + (i % 97)),
        severity: 'info',
        runId: 'run-1',
      });
    }
    const encoded = events.map((event) => Buffer.from(encodeEvent(event)));
    events.forEach((event, i) => expect(encoded[i].equals(genericEncode('Watch', event))).toBe(true));
  });

  it('empty batch encodes to no bytes', () => {
    expect(encodeEventBatch([]).length).toBe(0);
  });

  it('returns the same bytes for a second call', () => {
    const event = EVENTS[1];
    expect(encodeEvent(event)).toBe(encodeEvent(event));
  });

  it('leaves the cached bytes out of JSON and spreads', () => {
    const event = EVENTS[2];
    encodeEvent(event);
    expect(Object.getOwnPropertySymbols({ ...event })).toEqual([]);
    expect(JSON.stringify(event)).not.toContain('bytes');
  });

  it('rejects a uint64 string that is not a decimal integer', () => {
    const [event] = publishAll([{ type: 'agent', ktimeNs: '12a', message: 'x' }]);
    expect(() => encodeEvent(event)).toThrow(/invalid uint64 field 3: "12a"/);
  });

  it('rejects a uint64 number past 2^53', () => {
    const [event] = publishAll([
      { type: 'loss', ktimeNs: '0', loss: { where: 'decode', count: 2 ** 60 } },
    ]);
    expect(() => encodeEvent(event)).toThrow(/invalid uint64 field 2/);
  });

  it('table sets every field of every message', () => {
    const root = protobuf.loadSync(AUDIT_PROTO);
    const seen = new Map<string, Set<string>>();
    const visit = (type: protobuf.Type, message: protobuf.Message) => {
      const fields = seen.get(type.name) ?? new Set<string>();
      seen.set(type.name, fields);
      for (const field of type.fieldsArray) {
        const value = (message as unknown as Record<string, unknown>)[field.name];
        if (value === undefined || value === null) continue;
        if (Array.isArray(value) && value.length === 0) continue;
        fields.add(field.name);
        if (!(field.resolvedType instanceof protobuf.Type)) continue;
        const nested = field.resolvedType;
        for (const item of Array.isArray(value) ? value : [value])
          visit(nested, item as protobuf.Message);
      }
    };
    const eventType = root.lookupType('sigil.audit.v1.Event');
    for (const event of EVENTS) visit(eventType, eventType.decode(encodeEvent(event)));

    const missing: string[] = [];
    root.resolveAll();
    for (const [name, fields] of seen) {
      const type = root.lookupType(`sigil.audit.v1.${name}`);
      for (const field of type.fieldsArray)
        if (!fields.has(field.name)) missing.push(`${name}.${field.name}`);
    }
    expect(missing).toEqual([]);
    expect([...seen.keys()].sort()).toEqual([
      'AgentStatus',
      'Connection',
      'Event',
      'EventObject',
      'Loss',
      'PolicyRef',
      'Process',
      'ProcessRef',
      'Subject',
    ]);
  });
});
