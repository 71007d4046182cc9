/**
 * Throughput of the user-space audit pipeline: EventHub to a gRPC Watch and
 * WatchBatches client over a unix socket, and EventHub to the JSON and OCSF
 * event logs.
 * Each figure comes with a baseline measured in the same run on the same
 * events (JSON.stringify alone, toOcsf plus JSON.stringify alone), so the
 * ratios hold across machines better than the absolute numbers.
 *
 *   npx vite-node bench/events-pipeline.ts -- --events 1000000 [--log /path/file]
 *
 * The log target is /dev/null unless --log names a file. Kernel records are
 * not part of this: the events start in the hub, as the agent publishes them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditEvent, EventDraft } from '../src/events/audit-event';
import { EventHub } from '../src/events/event-hub';
import { createEventLog, EventLogFormat } from '../src/events/event-log';
import { watchEvents } from '../src/events/grpc-client';
import { AuditServer } from '../src/events/grpc-server';
import { toOcsf } from '../src/events/ocsf';
import { DRAFTS } from './event-drafts';

interface Options {
  events: number;
  log: string;
}

function parseArgs(argv: string[]): Options {
  const options: Options = { events: 1_000_000, log: '/dev/null' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--events') options.events = Number(argv[++i]);
    else if (argv[i] === '--log') options.log = argv[++i];
    else if (argv[i] !== '--') throw new Error(`unknown argument ${argv[i]}: expected --events N or --log FILE`);
  }
  if (!Number.isSafeInteger(options.events) || options.events < 1) {
    throw new Error(`invalid --events ${options.events}: expected a positive integer`);
  }
  return options;
}

function draftAt(i: number): EventDraft {
  return DRAFTS[i % DRAFTS.length];
}

function rate(count: number, ms: number): number {
  return (count / ms) * 1000;
}

function timeSync(run: () => void): number {
  const start = performance.now();
  run();
  return performance.now() - start;
}

/** Chunk of events published between yields to the event loop, as the agent handles a ring-buffer batch. */
const CHUNK = 1000;

async function publishInChunks(hub: EventHub, n: number): Promise<void> {
  for (let published = 0; published < n; published += CHUNK) {
    const end = Math.min(n, published + CHUNK);
    for (let i = published; i < end; i++) hub.publish(draftAt(i));
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Publishes n events to a hub whose only sink is the event log, then waits for the log to be written. */
async function hubToLog(n: number, target: string, format: EventLogFormat): Promise<number> {
  const hub = new EventHub('bench-node');
  const log = createEventLog(target, { format });
  hub.subscribe({ filter: {}, deliver: (event) => log.write(event) });
  const start = performance.now();
  await publishInChunks(hub, n);
  await log.close();
  return performance.now() - start;
}

/** Publishes n events in chunks until one Watch (or WatchBatches) client has received them all. */
async function hubToGrpc(n: number, batched: boolean): Promise<{ ms: number; received: number; lost: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-bench-'));
  const socketPath = join(dir, 'audit.sock');
  // A replay buffer and a client queue as large as the run, so the figure is throughput and
  // not the drop policy: a client that falls behind reads from the replay buffer.
  const hub = new EventHub('bench-node', { replayCapacity: n });
  const server = new AuditServer(hub, socketPath, { maxClientQueue: n });
  await server.start();

  let received = 0;
  let lost = 0;
  let done: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const stream = watchEvents({ socketPath, batched }, (event: AuditEvent) => {
    if (event.seq > 0) received++;
    else lost += event.loss?.count ?? 0;
    if (received + lost >= n) done();
  });
  stream.on('error', () => undefined);
  await new Promise((resolve) => stream.once('metadata', resolve));

  const start = performance.now();
  await publishInChunks(hub, n);
  await finished;
  const ms = performance.now() - start;
  stream.cancel();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
  return { ms, received, lost };
}

async function main(): Promise<void> {
  const { events: n, log } = parseArgs(process.argv.slice(2));
  const hub = new EventHub('bench-node');
  const published: AuditEvent[] = [];
  const publishMs = timeSync(() => {
    for (let i = 0; i < n; i++) published.push(hub.publish(draftAt(i)));
  });

  let bytes = 0;
  const stringifyMs = timeSync(() => {
    for (const event of published) bytes += JSON.stringify(event).length;
  });
  const ocsfStringifyMs = timeSync(() => {
    for (const event of published) JSON.stringify(toOcsf(event));
  });
  published.length = 0;

  const jsonLogMs = await hubToLog(n, log, 'json');
  const ocsfLogMs = await hubToLog(n, log, 'ocsf');
  const grpc = await hubToGrpc(n, false);
  const grpcBatches = await hubToGrpc(n, true);

  const baseline = rate(n, stringifyMs);
  const rows: [string, number][] = [
    ['baseline: JSON.stringify of the events', stringifyMs],
    ['hub.publish alone (no sinks)', publishMs],
    ['baseline: toOcsf + JSON.stringify', ocsfStringifyMs],
    [`hub -> JSON event log (${log})`, jsonLogMs],
    [`hub -> OCSF event log (${log})`, ocsfLogMs],
    ['hub -> gRPC Watch client (unix socket)', grpc.ms],
    ['hub -> gRPC WatchBatches client', grpcBatches.ms],
  ];
  process.stdout.write(
    `${n} events, ${Math.round(bytes / n)} bytes of JSON each on average; node ${process.version}\n\n`,
  );
  for (const [name, ms] of rows) {
    const perSecond = rate(n, ms);
    process.stdout.write(
      `${name.padEnd(42)} ${Math.round(perSecond).toLocaleString('en-US').padStart(12)} events/s` +
        `   ${(perSecond / baseline).toFixed(3)} x baseline\n`,
    );
  }
  process.stdout.write(`\nWatch client received ${grpc.received} events and ${grpc.lost} in loss events\n`);
  process.stdout.write(`WatchBatches client received ${grpcBatches.received} events and ${grpcBatches.lost} in loss events\n`);
}

main().catch((error: Error) => {
  process.stderr.write(`events-pipeline: ${error.message}\n`);
  process.exitCode = 1;
});
