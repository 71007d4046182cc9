import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditEvent, EventDraft, matchesFilter } from '../../src/events/audit-event';
import { EventHub } from '../../src/events/event-hub';
import { watchEvents } from '../../src/events/grpc-client';
import { AuditServer } from '../../src/events/grpc-server';
import { waitFor } from '../helpers/agent-process';

function draft(type: AuditEvent['type'], spiffeId = ''): EventDraft {
  return { type, ktimeNs: '1', subject: { spiffeId } };
}

describe('event filter', () => {
  const hub = new EventHub('node-1');
  const event = hub.publish(draft('connect', 'spiffe://example.org/ns/web'));

  it.each([
    [{ types: [], subjectPrefix: '' }, true],
    [{ types: ['connect'], subjectPrefix: '' }, true],
    [{ types: ['exec'], subjectPrefix: '' }, false],
    [{ types: [], subjectPrefix: 'spiffe://example.org/ns' }, true],
    [{ types: [], subjectPrefix: 'spiffe://example.org/ns/' }, true],
    [{ types: [], subjectPrefix: 'spiffe://example.org/ns/web' }, true],
    [{ types: [], subjectPrefix: 'spiffe://example.org/n' }, false],
    [{ types: [], subjectPrefix: 'spiffe://example.org/ns/we' }, false],
  ] as const)('%j passes: %s', (filter, expected) => {
    expect(matchesFilter(event, { types: [...filter.types], subjectPrefix: filter.subjectPrefix })).toBe(expected);
  });

  it('numbers events from 1 and names the node', () => {
    const local = new EventHub('node-2');
    expect(local.publish(draft('agent')).seq).toBe(1);
    const second = local.publish(draft('agent'));
    expect(second.seq).toBe(2);
    expect(second.node).toBe('node-2');
  });
});

describe('audit gRPC service', () => {
  let dir: string;
  let hub: EventHub;
  let server: AuditServer;
  let socket: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sigil-audit-'));
    socket = join(dir, 'audit.sock');
    hub = new EventHub('test-node');
    server = new AuditServer(hub, socket, 5);
    await server.start();
  });

  afterAll(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates its socket readable by root only', () => {
    expect(statSync(socket).mode & 0o777).toBe(0o600);
  });

  it('streams only the events that pass the filter', async () => {
    const received: AuditEvent[] = [];
    const stream = watchEvents(
      { socketPath: socket, types: ['connect'], subjectPrefix: 'spiffe://example.org/a' },
      (event) => received.push(event),
    );
    await new Promise((resolve) => stream.once('metadata', resolve));
    hub.publish(draft('exec', 'spiffe://example.org/a'));
    hub.publish(draft('connect', 'spiffe://example.org/b'));
    const expected = hub.publish(draft('connect', 'spiffe://example.org/a/x'));
    await waitFor('the filtered event', () => (received.length >= 1 ? true : undefined));
    stream.cancel();
    expect(received.map((event) => Number(event.seq))).toEqual([expected.seq]);
    expect(received[0].subject?.spiffeId).toBe('spiffe://example.org/a/x');
    expect(received[0].node).toBe('test-node');
  });

  it('rejects an unknown event type with INVALID_ARGUMENT', async () => {
    const stream = watchEvents({ socketPath: socket, types: ['bogus' as AuditEvent['type']] }, () => undefined);
    const error = await new Promise<Error & { code?: number }>((resolve) => stream.once('error', resolve));
    expect(error.code).toBe(3);
    expect(error.message).toContain('bogus');
  });
});
