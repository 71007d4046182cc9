import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { AuditEvent, KernelDropReason } from './audit-event';
import { EventHub } from './event-hub';
import { StreamObserver } from './grpc-server';

const REPLAY_GAUGE = 'sigil_replay_buffer_events';

/** Why events were lost: the Loss.where values that count as drops. */
export type DropReason = 'kernel-ringbuf' | 'client-queue' | 'decode';

export interface MetricsOptions {
  /** Also export Node.js process metrics (memory, CPU, event loop lag) with the sigil_ prefix. */
  processMetrics?: boolean;
}

/**
 * The agent's Prometheus metrics, in a registry of their own. The agent
 * feeds them: observe() for each published event (or attachHub()), the
 * setters for its gauges, and the AuditServer's observer hooks for stream
 * clients and client-queue drops.
 */
export interface SigilMetrics extends StreamObserver {
  readonly registry: Registry;
  /** Counts one published event. */
  observe(event: AuditEvent): void;
  /** Subscribes observe() to every event of the hub and exports its replay buffer size. */
  attachHub(hub: EventHub): () => void;
  setRules(count: number): void;
  setIdentities(count: number): void;
  /** Fill of a kernel ring buffer, from 0 to 1: `process` (fork, exec, exit) or `events` (decisions). */
  setRingBufferFill(ring: 'process' | 'events', ratio: number): void;
  /** Entries of the agent's process cache, live and exited processes. */
  setProcessCacheSize(live: number, exited: number): void;
  /** Counts processes evicted from the process cache because it reached its bound. */
  processCacheEvicted(state: 'live' | 'exited', count: number): void;
  /**
   * Serves GET /metrics on "host:port" ("[::1]:9464" for IPv6, port 0 for
   * any free port). Resolves with the bound address; rejects when it cannot
   * bind, or when it already listens.
   */
  listen(address: string): Promise<AddressInfo>;
  /** Stops the HTTP listener, if any. */
  close(): Promise<void>;
}

/** Splits "host:port" or "[v6]:port" into its parts; throws on anything else. */
export function parseListenAddress(address: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new Error(`invalid metrics address ${JSON.stringify(address)}: expected host:port, such as 127.0.0.1:9464 or [::1]:9464`);
  }
  return { host: match[1] ?? match[2], port };
}

export function createMetrics(options: MetricsOptions = {}): SigilMetrics {
  const registry = new Registry();
  const registers = [registry];
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'sigil_' });

  // Counts by label pair between two scrapes, which collect() adds to the counters at a scrape.
  // prom-client hashes the labels on every inc(): about 4% of the agent's CPU profile at 100,000
  // events/s. The pairs are nested maps, first label then second, so counting builds no key string.
  type PendingCounts = Map<string, Map<string, number>>;
  const eventCounts: PendingCounts = new Map();
  const decisionCounts: PendingCounts = new Map();
  const countPending = (pending: PendingCounts, first: string, second: string) => {
    let inner = pending.get(first);
    if (inner === undefined) {
      inner = new Map();
      pending.set(first, inner);
    }
    inner.set(second, (inner.get(second) ?? 0) + 1);
  };
  const addPending = (pending: PendingCounts, counter: Counter<string>, names: [string, string]) => {
    for (const [first, inner] of pending) {
      for (const [second, count] of inner) counter.inc({ [names[0]]: first, [names[1]]: second }, count);
    }
    pending.clear();
  };
  const events: Counter<'type' | 'result'> = new Counter({
    name: 'sigil_events_total',
    help: 'Audit events published, by event type and result (empty for events without a result)',
    labelNames: ['type', 'result'] as const,
    registers,
    collect() {
      addPending(eventCounts, events, ['type', 'result']);
    },
  });
  const drops = new Counter({
    name: 'sigil_events_dropped_total',
    help: 'Events lost, by reason: kernel-ringbuf (ring buffer full), client-queue (a stream client read too slowly), decode (malformed kernel record)',
    labelNames: ['reason'] as const,
    registers,
  });
  const decisions: Counter<'action' | 'enforcer'> = new Counter({
    name: 'sigil_decisions_total',
    help: 'Enforcement decisions, by policy action and enforcer',
    labelNames: ['action', 'enforcer'] as const,
    registers,
    collect() {
      addPending(decisionCounts, decisions, ['action', 'enforcer']);
    },
  });
  const rules = new Gauge({ name: 'sigil_policy_rules', help: 'Rules in the active policy generation', registers });
  const identities = new Gauge({ name: 'sigil_identities', help: 'SPIFFE IDs the agent knows', registers });
  const kernelDrops = new Counter({
    name: 'sigil_kernel_drops_total',
    help: 'Kernel records lost because a ring buffer was full, by reason: events-ringbuf-full (connect, bind, LSM decisions), process-ringbuf-full (fork, exec, exit)',
    labelNames: ['reason'] as const,
    registers,
  });
  const ringFill = new Gauge({
    name: 'sigil_ringbuf_fill_ratio',
    help: 'Fill of a kernel ring buffer, from 0 to 1, as the agent last read it (about once a second): process (fork, exec, exit records) or events (decision records)',
    labelNames: ['ring'] as const,
    registers,
  });
  const cacheEntries = new Gauge({
    name: 'sigil_process_cache_entries',
    help: 'Processes in the agent process cache, by state: live, or exited and kept for the ancestry of their descendants',
    labelNames: ['state'] as const,
    registers,
  });
  const cacheEvictions = new Counter({
    name: 'sigil_process_cache_evictions_total',
    help: 'Processes evicted from the agent process cache at its size bound, by state; an evicted live process is missing from the ancestry of its descendants',
    labelNames: ['state'] as const,
    registers,
  });
  const clients = new Gauge({ name: 'sigil_stream_clients', help: 'Open Watch streams', registers });
  // Every reason from the start, so a query returns 0 rather than no series.
  for (const reason of ['kernel-ringbuf', 'client-queue', 'decode'] satisfies DropReason[]) drops.inc({ reason }, 0);
  for (const reason of ['events-ringbuf-full', 'process-ringbuf-full'] satisfies KernelDropReason[]) {
    kernelDrops.inc({ reason }, 0);
  }
  for (const state of ['live', 'exited']) cacheEvictions.inc({ state }, 0);

  let server: Server | null = null;

  const observe = (event: AuditEvent): void => {
    countPending(eventCounts, event.type, event.result ?? '');
    if (event.enforcer) countPending(decisionCounts, event.action ?? 'none', event.enforcer);
    const where = event.loss?.where;
    if (where === 'kernel-ringbuf' || where === 'decode') drops.labels(where).inc(event.loss?.count ?? 0);
    if (where === 'kernel-ringbuf' && event.loss?.reason) {
      kernelDrops.labels(event.loss.reason).inc(event.loss.count);
    }
  };

  const serve = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const path = (request.url ?? '').split('?')[0];
    if (request.method !== 'GET' || path !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at GET /metrics\n');
      return;
    }
    try {
      const body = await registry.metrics();
      response.writeHead(200, { 'content-type': registry.contentType }).end(body);
    } catch (error) {
      response.writeHead(500, { 'content-type': 'text/plain' }).end(`collect metrics failed: ${(error as Error).message}\n`);
    }
  };

  return {
    registry,
    observe,
    attachHub(hub: EventHub): () => void {
      new Gauge({
        name: REPLAY_GAUGE,
        help: 'Events retained for Watch requests that resume by sequence number',
        registers,
        collect() {
          this.set(hub.replay.size);
        },
      });
      const unsubscribe = hub.subscribe({ filter: {}, deliver: observe });
      return () => {
        unsubscribe();
        registry.removeSingleMetric(REPLAY_GAUGE);
      };
    },
    setRules: (count) => rules.set(count),
    setIdentities: (count) => identities.set(count),
    setRingBufferFill: (ring, ratio) => ringFill.labels(ring).set(ratio),
    setProcessCacheSize: (live, exited) => {
      cacheEntries.labels('live').set(live);
      cacheEntries.labels('exited').set(exited);
    },
    processCacheEvicted: (state, count) => cacheEvictions.labels(state).inc(count),
    streamOpened: () => clients.inc(),
    streamClosed: () => clients.dec(),
    eventsDropped: (reason, count) => drops.labels(reason).inc(count),

    async listen(address: string): Promise<AddressInfo> {
      if (server) throw new Error('the metrics listener is already running');
      const { host, port } = parseListenAddress(address);
      const listener = createServer((request, response) => void serve(request, response));
      await new Promise<void>((resolve, reject) => {
        listener.once('error', (error) => reject(new Error(`listen for metrics on ${address}: ${error.message}`)));
        listener.listen(port, host, () => resolve());
      });
      server = listener;
      return listener.address() as AddressInfo;
    },

    async close(): Promise<void> {
      const listener = server;
      server = null;
      if (!listener) return;
      listener.closeAllConnections();
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    },
  };
}
