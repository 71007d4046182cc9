import { afterEach, describe, expect, it } from 'vitest';
import { AuditEvent } from '../../src/events/audit-event';
import { EventHub } from '../../src/events/event-hub';
import { StreamObserver } from '../../src/events/grpc-server';
import { waitFor } from '../helpers/agent-process';
import { Collector, range, seqs, ServerFixture } from './fixtures';

const TOTAL = 20_000; // a multiple of BATCH
// Below the client queue of 100, so a client that keeps reading never overflows.
const BATCH = 80;

class CountingObserver implements StreamObserver {
  open = 0;
  dropped = 0;
  streamOpened(): void {
    this.open++;
  }
  streamClosed(): void {
    this.open--;
  }
  eventsDropped(_reason: 'client-queue', count: number): void {
    this.dropped += count;
  }
}

/**
 * Checks that a stalled client's stream accounts for every expected sequence
 * number exactly once, in order: delivered, or inside a client-queue loss
 * event placed where the events are missing. Returns the number lost.
 */
function expectAccounted(events: AuditEvent[], expected: number[]): number {
  let next = 0;
  let lost = 0;
  for (const event of events) {
    if (event.seq === 0) {
      expect(event.type).toBe('loss');
      expect(event.loss?.where).toBe('client-queue');
      const count = event.loss?.count ?? 0;
      expect(event.loss?.firstSeq).toBe(expected[next]);
      expect(event.loss?.lastSeq).toBe(expected[next + count - 1]);
      next += count;
      lost += count;
    } else {
      expect(event.seq).toBe(expected[next]);
      next++;
    }
  }
  expect(next).toBe(expected.length);
  return lost;
}

/** How a stalled client is served: its own queue (replay off) or the replay buffer (lag mode). */
const MODES = [
  { name: 'queue of 100, replay off', replayCapacity: 0, maxClientQueue: 100, lossExpected: true },
  { name: 'replay buffer, 100 waiting', replayCapacity: 50_000, maxClientQueue: 100, lossExpected: true },
  { name: 'replay buffer of 1,000', replayCapacity: 1000, maxClientQueue: undefined, lossExpected: true },
  { name: 'replay buffer of 50,000', replayCapacity: 50_000, maxClientQueue: undefined, lossExpected: false },
];

describe.each([
  ['Watch', false],
  ['WatchBatches', true],
])('slow %s client', (_, batched) => {
  let fixture: ServerFixture;

  afterEach(() => fixture.close());

  it.each(MODES)('accounts for every event, $name', async ({ replayCapacity, maxClientQueue, lossExpected }) => {
    const observer = new CountingObserver();
    fixture = await new ServerFixture(new EventHub('slow-node', { replayCapacity }), {
      maxClientQueue,
      observer,
    }).start();
    const fast = await new Collector({ socketPath: fixture.socket, batched }).live();
    const stalled = await new Collector({ socketPath: fixture.socket, batched }).live();
    // Passes exec events only, every third event below.
    const filtered = await new Collector({ socketPath: fixture.socket, batched, types: ['exec'] }).live();
    stalled.stream.pause();
    filtered.stream.pause();

    // Publish in batches that the fast client keeps up with; the stalled ones read nothing.
    const execs: number[] = [];
    for (let published = 0; published < TOTAL; published += BATCH) {
      for (let i = 0; i < BATCH; i++) {
        const seq = published + i + 1;
        if (seq % 3 === 0) {
          fixture.hub.publish({ type: 'exec', ktimeNs: String(seq) });
          execs.push(seq);
        } else {
          fixture.hub.publish({ type: 'agent', ktimeNs: '0', message: `event ${seq}` });
        }
      }
      await fast.waitForCount(published + BATCH);
    }
    if (lossExpected) expect(observer.dropped).toBeGreaterThan(0);
    else expect(observer.dropped).toBe(0);

    stalled.stream.resume();
    filtered.stream.resume();
    // Caught up when every event is either delivered or counted in a loss event.
    const accounted = (collector: Collector) =>
      collector.events.reduce((sum, event) => sum + (event.seq > 0 ? 1 : (event.loss?.count ?? 0)), 0);
    await waitFor('the stalled clients to catch up', () =>
      accounted(stalled) === TOTAL && accounted(filtered) === execs.length ? true : undefined,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    fast.cancel();
    stalled.cancel();
    filtered.cancel();

    expect(seqs(fast.events)).toEqual(range(1, TOTAL));
    expect(fast.events.length).toBe(TOTAL);
    const stalledLost = expectAccounted(stalled.events as AuditEvent[], range(1, TOTAL));
    const filteredLost = expectAccounted(filtered.events as AuditEvent[], execs);
    expect(filtered.events.every((event) => event.seq === 0 || event.type === 'exec')).toBe(true);
    expect(stalledLost + filteredLost).toBe(observer.dropped);
    if (lossExpected) expect(stalledLost).toBeGreaterThan(0);
    else expect(stalledLost + filteredLost).toBe(0);
    await waitFor('the streams to close', () => (observer.open === 0 ? true : undefined));
  });
});
