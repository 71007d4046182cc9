import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { AuditEvent, EventDraft } from '../../src/events/audit-event';
import { auditServiceDefinition } from '../../src/events/audit-proto';
import { encodeEvent } from '../../src/events/event-encoder';
import { EventHub } from '../../src/events/event-hub';
import { ReplayBuffer } from '../../src/events/replay-buffer';
import { waitFor } from '../helpers/agent-process';
import { eventFromWire } from '../../src/events/wire-format';
import { Collector, range, seqs, ServerFixture } from './fixtures';

/** Decodes sigil.audit.v1.Event bytes with proto-loader, as a client does. */
function decodeWireEvent(bytes: Buffer): AuditEvent {
  const watch = auditServiceDefinition().Watch as grpc.MethodDefinition<unknown, Record<string, unknown>>;
  return eventFromWire(watch.responseDeserialize(bytes));
}

function draft(n: number): EventDraft {
  return { type: 'agent', ktimeNs: '0', message: `event ${n}` };
}

function publish(hub: EventHub, count: number): AuditEvent[] {
  return Array.from({ length: count }, (_, i) => hub.publish(draft(i)));
}

/** Lets grpc-js move data: resolves after the current I/O callbacks. */
function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Publishes batches of 1,000 events, one per event-loop turn, while the
 * paused collector reads nothing. Then resumes it, waits for the newest
 * event, cancels the stream and returns that event's sequence number.
 */
async function publishWhilePaused(hub: EventHub, collector: Collector, batches: number): Promise<number> {
  for (let batch = 0; batch < batches; batch++) {
    publish(hub, 1000);
    await tick();
  }
  collector.stream.resume();
  const last = hub.lastSeq;
  await waitFor('the newest event', () => (collector.events.at(-1)?.seq === last ? true : undefined));
  collector.cancel();
  return last;
}

/**
 * Checks that a stream accounts for every sequence number from first to
 * last exactly once, as an event or inside a loss event's range, in order.
 * Returns the loss events.
 */
function expectAccounted(events: AuditEvent[], first: number, last: number, where: string): AuditEvent[] {
  let next = first;
  const losses: AuditEvent[] = [];
  for (const event of events) {
    if (event.type === 'loss' && event.seq === 0) {
      expect(event.loss?.where).toBe(where);
      expect(event.loss?.firstSeq).toBe(next);
      expect(event.loss?.count).toBe((event.loss?.lastSeq ?? 0) - (event.loss?.firstSeq ?? 0) + 1);
      next = (event.loss?.lastSeq ?? 0) + 1;
      losses.push(event);
    } else {
      expect(event.seq).toBe(next);
      next++;
    }
  }
  expect(next).toBe(last + 1);
  return losses;
}

describe('ReplayBuffer', () => {
  it('returns retained events by sequence number', () => {
    const hub = new EventHub('n', { replayCapacity: 3 });
    publish(hub, 5);
    expect(hub.replay.size).toBe(3);
    expect(hub.replay.oldestSeq).toBe(3);
    expect(hub.replay.newestSeq).toBe(5);
    expect(hub.replay.get(2)).toBeUndefined();
    expect(hub.replay.get(3)?.seq).toBe(3);
    expect(hub.replay.get(5)?.seq).toBe(5);
    expect(hub.replay.get(6)).toBeUndefined();
  });

  it('rejects a sequence number that does not follow the newest', () => {
    const buffer = new ReplayBuffer(4);
    const hub = new EventHub('n');
    const [first, , third] = publish(hub, 3);
    buffer.push(first);
    expect(() => buffer.push(third)).toThrow(/expected sequence number 2, got 3/);
  });

  it('retains nothing with capacity 0', () => {
    const hub = new EventHub('n', { replayCapacity: 0 });
    publish(hub, 3);
    expect(hub.replay.size).toBe(0);
    expect(hub.replay.oldestSeq).toBeNull();
  });

  it('keeps the fields that filters read', () => {
    const hub = new EventHub('n', { replayCapacity: 4 });
    hub.publish({ type: 'agent', ktimeNs: '0', message: 'up' });
    hub.publish({
      type: 'connect',
      ktimeNs: '7',
      subject: { spiffeId: 'spiffe://example.org/web' },
      action: 'block',
      result: 'denied',
    });
    const agent = hub.replay.get(1);
    const connect = hub.replay.get(2);
    expect(agent?.type).toBe('agent');
    expect(agent?.subjectId).toBe('');
    expect(agent?.severity).toBe('info');
    expect(connect?.type).toBe('connect');
    expect(connect?.subjectId).toBe('spiffe://example.org/web');
    expect(connect?.action).toBe('block');
    expect(connect?.result).toBe('denied');
    expect(connect?.severity).toBe('medium');
    expect(hub.replay.matches(2, { subjectPrefix: 'spiffe://example.org' })).toBe(true);
    expect(hub.replay.matches(2, { types: ['exec'] })).toBe(false);
    expect(hub.replay.matches(1, { actions: ['block'] })).toBe(false);
    expect(hub.replay.matches(3, {})).toBe(false);
  });

  it('keeps the bytes of each event', () => {
    const hub = new EventHub('n', { replayCapacity: 2 });
    const events = publish(hub, 3);
    expect(hub.replay.bytes(1)).toBeUndefined();
    expect(hub.replay.bytes(2)?.equals(encodeEvent(events[1]))).toBe(true);
    expect(hub.replay.bytes(3)?.equals(encodeEvent(events[2]))).toBe(true);
    expect(hub.replay.get(3)?.bytes.equals(encodeEvent(events[2]))).toBe(true);
  });

  it('retains a loss event in place of an event it cannot encode', () => {
    const hub = new EventHub('n', { replayCapacity: 4 });
    hub.publish(draft(1));
    // ktimeNs is a uint64 in decimal: this one has no encoding.
    expect(() => hub.publish({ type: 'agent', ktimeNs: '12a', message: 'bad' })).not.toThrow();
    hub.publish(draft(3));
    const substitute = hub.replay.get(2);
    expect(substitute?.type).toBe('loss');
    const decoded = decodeWireEvent(substitute?.bytes as Buffer);
    expect(decoded.seq).toBe(2);
    expect(decoded.loss).toEqual({ where: 'decode', count: 1, firstSeq: 2, lastSeq: 2 });
    expect(decoded.message).toMatch(/event 2 \(agent\) could not be encoded: .*"12a" is not a decimal integer/);
    expect(hub.replay.get(3)?.type).toBe('agent');
  });

  it('rejects a negative capacity', () => {
    expect(() => new ReplayBuffer(-1)).toThrow(/invalid replay buffer capacity -1/);
  });
});

describe.each([
  ['Watch', false],
  ['WatchBatches', true],
])('%s resume', (_, batched) => {
  let fixture: ServerFixture;

  afterEach(() => fixture.close());

  it('returns the missed events in order, then live ones, without duplicates', async () => {
    fixture = await new ServerFixture(new EventHub('resume-node', { replayCapacity: 1000 })).start();
    const first = await new Collector({ batched, socketPath: fixture.socket }).live();
    publish(fixture.hub, 5);
    await first.waitForCount(5);
    first.cancel();
    const lastSeen = first.events[first.events.length - 1];

    publish(fixture.hub, 15);
    const resumed = await new Collector({
      batched,
      socketPath: fixture.socket,
      sinceSeq: lastSeen.seq + 1,
      runId: lastSeen.runId,
    }).live();
    publish(fixture.hub, 5);
    await resumed.waitForCount(20);
    await new Promise((resolve) => setTimeout(resolve, 100));
    resumed.cancel();

    expect(seqs(first.events)).toEqual(range(1, 5));
    expect(seqs(resumed.events)).toEqual(range(6, 25));
    expect(resumed.events.some((event) => event.type === 'loss')).toBe(false);
  });

  it('sends a loss event in place of an event it cannot encode', async () => {
    fixture = await new ServerFixture(new EventHub('bad-event-node', { replayCapacity: 10 })).start();
    const live = await new Collector({ batched, socketPath: fixture.socket }).live();
    fixture.hub.publish(draft(1));
    fixture.hub.publish({ type: 'agent', ktimeNs: '-5', message: 'bad' });
    fixture.hub.publish(draft(3));
    await live.waitForCount(3);
    const resumed = await new Collector({ batched, socketPath: fixture.socket, sinceSeq: 1 }).live();
    await resumed.waitForCount(3);
    live.cancel();
    resumed.cancel();

    for (const events of [live.events, resumed.events]) {
      expect(seqs(events)).toEqual([1, 2, 3]);
      expect(events[1].type).toBe('loss');
      expect(events[1].loss).toEqual({ where: 'decode', count: 1, firstSeq: 2, lastSeq: 2 });
      expect(events[2].type).toBe('agent');
    }
  });

  it('loses nothing when events arrive during the replay', async () => {
    // A client queue of 10 would drop events if the replay went through it.
    fixture = await new ServerFixture(new EventHub('busy-node'), { maxClientQueue: 10 }).start();
    publish(fixture.hub, 3000);
    const collector = await new Collector({ batched, socketPath: fixture.socket, sinceSeq: 1 }).live();
    for (let batch = 0; batch < 30; batch++) {
      publish(fixture.hub, 100);
      await tick();
    }
    await collector.waitForCount(6000);
    collector.cancel();
    expect(seqs(collector.events)).toEqual(range(1, 6000));
    expect(collector.events.length).toBe(6000);
  });

  it('sends a gap marker when the buffer no longer has the events', async () => {
    fixture = await new ServerFixture(new EventHub('gap-node', { replayCapacity: 10 })).start();
    publish(fixture.hub, 30);
    const collector = await new Collector({ batched, socketPath: fixture.socket, sinceSeq: 5 }).live();
    const events = await collector.waitForCount(11);
    collector.cancel();

    const [marker, ...rest] = events;
    expect(marker.type).toBe('loss');
    expect(marker.seq).toBe(0);
    expect(marker.loss).toEqual({ where: 'replay-gap', count: 16, firstSeq: 5, lastSeq: 20 });
    expect(marker.severity).toBe('medium');
    expect(marker.message).toContain('events 5 to 20');
    expect(seqs(rest)).toEqual(range(21, 30));
  });

  it('sends a gap marker when the buffer overtakes a slow replay', async () => {
    fixture = await new ServerFixture(new EventHub('overtake-node', { replayCapacity: 20_000 })).start();
    // A replay of 20,000 events is far more than the transport buffers while the client reads nothing.
    publish(fixture.hub, 20_000);
    const collector = new Collector({ batched, socketPath: fixture.socket, sinceSeq: 1 });
    collector.stream.pause();
    await collector.live();
    // Then 50,000 more overwrite the buffer while the replay waits.
    const last = await publishWhilePaused(fixture.hub, collector, 50);

    const losses = expectAccounted(collector.events, 1, last, 'replay-gap');
    expect(losses.length).toBeGreaterThan(0);
  });

  it('falls behind again after a resume and counts its loss', async () => {
    fixture = await new ServerFixture(new EventHub('resume-lag-node', { replayCapacity: 2000 })).start();
    publish(fixture.hub, 500);
    const collector = await new Collector({ batched, socketPath: fixture.socket, sinceSeq: 1 }).live();
    await collector.waitForCount(500);
    // Live now; it stops reading while 30,000 more events pass through a buffer of 2,000.
    collector.stream.pause();
    const last = await publishWhilePaused(fixture.hub, collector, 30);

    const losses = expectAccounted(collector.events, 1, last, 'client-queue');
    expect(losses.length).toBeGreaterThan(0);
    expect(collector.events.slice(0, 500).every((event) => event.seq > 0)).toBe(true);
  });

  it('starts a new run from its first event after an agent restart', async () => {
    fixture = await new ServerFixture(new EventHub('restart-node')).start();
    const before = publish(fixture.hub, 7);
    const oldRun = fixture.hub.runId;
    await fixture.restart(new EventHub('restart-node'));
    publish(fixture.hub, 5);

    const collector = await new Collector({ batched, socketPath: fixture.socket, sinceSeq: 8, runId: oldRun }).live();
    const [marker, ...rest] = await collector.waitForCount(6);
    collector.cancel();

    expect(before.at(-1)?.seq).toBe(7);
    expect(marker.loss).toEqual({ where: 'agent-restart', count: 0 });
    expect(marker.message).toContain(oldRun);
    expect(marker.runId).toBe(fixture.hub.runId);
    expect(seqs(rest)).toEqual(range(1, 5));
    expect(rest.every((event) => event.runId === fixture.hub.runId)).toBe(true);
  });

  it('rejects a sequence number past the newest with OUT_OF_RANGE', async () => {
    fixture = await new ServerFixture(new EventHub('future-node')).start();
    publish(fixture.hub, 3);
    const collector = new Collector({ batched, socketPath: fixture.socket, sinceSeq: 10 });
    const error = await collector.waitForError();
    expect(error.code).toBe(11);
    expect(error.message).toContain('since_seq 10');
  });

  it('accepts the next sequence number and waits for it', async () => {
    fixture = await new ServerFixture(new EventHub('next-node')).start();
    publish(fixture.hub, 3);
    const collector = await new Collector({ batched, socketPath: fixture.socket, sinceSeq: 4 }).live();
    publish(fixture.hub, 2);
    await collector.waitForCount(2);
    collector.cancel();
    expect(seqs(collector.events)).toEqual([4, 5]);
  });

  it('reports the whole range as a gap when replay is off', async () => {
    fixture = await new ServerFixture(new EventHub('off-node', { replayCapacity: 0 })).start();
    publish(fixture.hub, 4);
    const collector = await new Collector({ batched, socketPath: fixture.socket, sinceSeq: 2 }).live();
    publish(fixture.hub, 1);
    const [marker, next] = await collector.waitForCount(2);
    collector.cancel();
    expect(marker.loss).toEqual({ where: 'replay-gap', count: 3, firstSeq: 2, lastSeq: 4 });
    expect(next.seq).toBe(5);
  });
});
