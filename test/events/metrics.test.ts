import { afterEach, describe, expect, it } from 'vitest';
import { EventHub } from '../../src/events/event-hub';
import { createMetrics, parseListenAddress, SigilMetrics } from '../../src/events/metrics';
import { Collector, sampleDrafts, ServerFixture } from './fixtures';

async function scrape(url: string): Promise<{ status: number; type: string | null; body: string }> {
  const response = await fetch(url);
  return { status: response.status, type: response.headers.get('content-type'), body: await response.text() };
}

/** Returns the value of one sample line, such as `sigil_events_total{type="exec",result="allowed"}`. */
function sampleValue(body: string, sample: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.slice(sample.length + 1));
}

describe('metrics endpoint', () => {
  let metrics: SigilMetrics;
  let fixture: ServerFixture | undefined;

  afterEach(async () => {
    await metrics.close();
    await fixture?.close();
    fixture = undefined;
  });

  it('serves the event, drop, decision, gauge and client metrics', async () => {
    metrics = createMetrics({ processMetrics: false });
    const hub = new EventHub('metrics-node', { replayCapacity: 50 });
    fixture = await new ServerFixture(hub, { observer: metrics, maxClientQueue: 5 }).start();
    metrics.attachHub(hub);
    const address = await metrics.listen('127.0.0.1:0');
    const url = `http://127.0.0.1:${address.port}/metrics`;

    for (const draft of sampleDrafts()) hub.publish(draft);
    hub.publish({ type: 'loss', ktimeNs: '0', loss: { where: 'decode', count: 1 } });
    metrics.setRules(7);
    metrics.setIdentities(3);
    hub.publish({
      type: 'loss',
      ktimeNs: '0',
      loss: { where: 'kernel-ringbuf', count: 3, reason: 'process-ringbuf-full' },
    });
    metrics.setRingBufferFill('events', 0.25);
    metrics.setRingBufferFill('process', 0.5);
    metrics.setProcessCacheSize(40, 12);
    metrics.processCacheEvicted('live', 2);
    const client = await new Collector({ socketPath: fixture.socket }).live();

    const open = await scrape(url);
    expect(open.status).toBe(200);
    expect(open.type).toContain('text/plain');
    const body = open.body;
    expect(sampleValue(body, 'sigil_events_total{type="exec",result="allowed"}')).toBe(1);
    expect(sampleValue(body, 'sigil_events_total{type="connect",result="allowed"}')).toBe(1);
    expect(sampleValue(body, 'sigil_events_total{type="connect",result="denied"}')).toBe(1);
    expect(sampleValue(body, 'sigil_events_total{type="agent",result=""}')).toBe(2);
    expect(sampleValue(body, 'sigil_events_total{type="loss",result=""}')).toBe(3);
    expect(sampleValue(body, 'sigil_events_dropped_total{reason="kernel-ringbuf"}')).toBe(20);
    expect(sampleValue(body, 'sigil_kernel_drops_total{reason="events-ringbuf-full"}')).toBe(17);
    expect(sampleValue(body, 'sigil_kernel_drops_total{reason="process-ringbuf-full"}')).toBe(3);
    expect(sampleValue(body, 'sigil_events_dropped_total{reason="decode"}')).toBe(1);
    expect(sampleValue(body, 'sigil_events_dropped_total{reason="client-queue"}')).toBe(0);
    expect(sampleValue(body, 'sigil_decisions_total{action="block",enforcer="cgroup-sock"}')).toBe(1);
    expect(sampleValue(body, 'sigil_decisions_total{action="block",enforcer="bpf-lsm"}')).toBe(1);
    expect(sampleValue(body, 'sigil_decisions_total{action="block",enforcer="tracepoint-kill"}')).toBe(1);
    expect(sampleValue(body, 'sigil_decisions_total{action="audit",enforcer="apparmor"}')).toBe(1);
    expect(sampleValue(body, 'sigil_policy_rules')).toBe(7);
    expect(sampleValue(body, 'sigil_identities')).toBe(3);
    expect(sampleValue(body, 'sigil_ringbuf_fill_ratio{ring="events"}')).toBe(0.25);
    expect(sampleValue(body, 'sigil_ringbuf_fill_ratio{ring="process"}')).toBe(0.5);
    expect(sampleValue(body, 'sigil_process_cache_entries{state="live"}')).toBe(40);
    expect(sampleValue(body, 'sigil_process_cache_entries{state="exited"}')).toBe(12);
    expect(sampleValue(body, 'sigil_process_cache_evictions_total{state="live"}')).toBe(2);
    expect(sampleValue(body, 'sigil_process_cache_evictions_total{state="exited"}')).toBe(0);
    expect(sampleValue(body, 'sigil_replay_buffer_events')).toBe(14);
    expect(sampleValue(body, 'sigil_stream_clients')).toBe(1);

    client.cancel();
    const deadline = Date.now() + 5_000;
    let clients = sampleValue(body, 'sigil_stream_clients');
    while (clients !== 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      clients = sampleValue((await scrape(url)).body, 'sigil_stream_clients');
    }
    expect(clients).toBe(0);
  });

  it('counts client-queue drops from the audit server', async () => {
    metrics = createMetrics({ processMetrics: false });
    const hub = new EventHub('drop-node', { replayCapacity: 0 });
    fixture = await new ServerFixture(hub, { observer: metrics, maxClientQueue: 5 }).start();
    const client = await new Collector({ socketPath: fixture.socket }).live();
    // One synchronous burst: grpc-js accepts 16 writes before it applies backpressure, and the queue 5 more.
    for (let i = 0; i < 100; i++) hub.publish({ type: 'agent', ktimeNs: '0' });
    const address = await metrics.listen('127.0.0.1:0');
    const { body } = await scrape(`http://127.0.0.1:${address.port}/metrics`);
    client.cancel();
    const dropped = sampleValue(body, 'sigil_events_dropped_total{reason="client-queue"}') ?? 0;
    expect(dropped).toBeGreaterThan(0);
    await client.waitForCount(1);
  });

  it('answers 404 outside /metrics', async () => {
    metrics = createMetrics({ processMetrics: false });
    const address = await metrics.listen('127.0.0.1:0');
    const response = await scrape(`http://127.0.0.1:${address.port}/`);
    expect(response.status).toBe(404);
  });

  it('exports process metrics by default', async () => {
    metrics = createMetrics();
    expect(await metrics.registry.metrics()).toContain('sigil_process_resident_memory_bytes');
  });

  it('rejects a second listen', async () => {
    metrics = createMetrics({ processMetrics: false });
    await metrics.listen('127.0.0.1:0');
    await expect(metrics.listen('127.0.0.1:0')).rejects.toThrow(/already running/);
  });
});

describe('parseListenAddress', () => {
  it.each([
    ['127.0.0.1:9464', { host: '127.0.0.1', port: 9464 }],
    ['[::1]:9464', { host: '::1', port: 9464 }],
    ['localhost:0', { host: 'localhost', port: 0 }],
  ])('parses %s', (address, expected) => {
    expect(parseListenAddress(address)).toEqual(expected);
  });

  it.each(['9464', '::1:9464', '127.0.0.1:70000', '127.0.0.1:'])('rejects %s', (address) => {
    expect(() => parseListenAddress(address)).toThrow(/invalid metrics address/);
  });
});
