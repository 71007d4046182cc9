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

describe.each([
  ['Watch', false],
  ['WatchBatches', true],
])('slow %s client', (_, batched) => {
  let fixture: ServerFixture;

  afterEach(() => fixture.close());

  it('gets a loss event with the exact count while another client gets everything', async () => {
    const observer = new CountingObserver();
    fixture = await new ServerFixture(new EventHub('slow-node', { replayCapacity: 0 }), {
      maxClientQueue: 100,
      observer,
    }).start();
    const fast = await new Collector({ socketPath: fixture.socket, batched }).live();
    const stalled = await new Collector({ socketPath: fixture.socket, batched }).live();
    stalled.stream.pause();

    // Publish in batches that the fast client keeps up with; the stalled one reads nothing.
    for (let published = 0; published < TOTAL; published += BATCH) {
      for (let i = 0; i < BATCH; i++) fixture.hub.publish({ type: 'agent', ktimeNs: '0', message: `event ${i}` });
      await fast.waitForCount(published + BATCH);
    }
    expect(observer.dropped).toBeGreaterThan(0);

    stalled.stream.resume();
    // Caught up when every event is either delivered or counted in a loss event.
    const accounted = () =>
      stalled.events.reduce((sum, event) => sum + (event.seq > 0 ? 1 : (event.loss?.count ?? 0)), 0);
    await waitFor('the stalled client to catch up', () => (accounted() === TOTAL ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, 100));
    fast.cancel();
    stalled.cancel();

    expect(seqs(fast.events)).toEqual(range(1, TOTAL));
    expect(fast.events.length).toBe(TOTAL);

    const losses = stalled.events.filter((event) => event.type === 'loss');
    const delivered = stalled.events.filter((event) => event.seq > 0);
    const lostCount = losses.reduce((sum, event) => sum + (event.loss?.count ?? 0), 0);
    expect(losses.length).toBeGreaterThan(0);
    expect(losses.every((event) => event.loss?.where === 'client-queue' && event.seq === 0)).toBe(true);
    expect(lostCount).toBe(observer.dropped);
    expect(lostCount + delivered.length).toBe(TOTAL);

    // Each loss event sits where its events are missing, and names them.
    let next = 1;
    for (const event of stalled.events as AuditEvent[]) {
      if (event.seq === 0) {
        expect(event.loss?.firstSeq).toBe(next);
        expect(event.loss?.lastSeq).toBe(next + (event.loss?.count ?? 0) - 1);
        next += event.loss?.count ?? 0;
      } else {
        expect(event.seq).toBe(next);
        next++;
      }
    }
    expect(next).toBe(TOTAL + 1);
    await waitFor('the streams to close', () => (observer.open === 0 ? true : undefined));
  });
});
