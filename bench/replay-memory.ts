/**
 * Memory per event of the hub's replay buffer: heap plus array buffers
 * (the encoder's slabs) retained by `capacity` events, measured after full
 * garbage collections. The events are the connect and exec of
 * bench/events-pipeline.ts, alternating, each a fresh copy as a decoded
 * kernel record would give. Run with the collector exposed:
 *
 *   node --expose-gc node_modules/.bin/vite-node bench/replay-memory.ts -- [capacity]
 */
import { EventHub } from '../src/events/event-hub';
import { DRAFTS } from './event-drafts';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run node with --expose-gc: the figures need full collections');

function retainedBytes(): number {
  gc?.();
  gc?.();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

const capacity = Number(process.argv.filter((arg) => arg !== '--')[2] ?? 100_000);
if (!Number.isSafeInteger(capacity) || capacity < 1) {
  throw new Error(`invalid capacity ${capacity}: expected a positive integer`);
}
const hub = new EventHub('replay-memory', { replayCapacity: capacity });
// Warm up the encoder and the shared strings before the first measurement.
for (let i = 0; i < 1000; i++) hub.publish(structuredClone(DRAFTS[i % DRAFTS.length]));
const before = retainedBytes();
for (let i = 0; i < capacity; i++) hub.publish(structuredClone(DRAFTS[i % DRAFTS.length]));
const after = retainedBytes();
console.log(
  `${hub.replay.size} events retained: ${Math.round((after - before) / capacity)} bytes each ` +
    `(heap plus array buffers), node ${process.version}`,
);
