import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EventHub } from '../../src/events/event-hub';
import { createEventLog } from '../../src/events/event-log';
import { toOcsf } from '../../src/events/ocsf';
import { sampleDrafts } from './fixtures';

describe('event log', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-event-log-'));
  const hub = new EventHub('log-node');
  const events = sampleDrafts().map((draft) => hub.publish(draft));

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function readLines(path: string): unknown[] {
    return readFileSync(path, 'utf8')
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as unknown);
  }

  it('drops and counts lines past its buffer bound', async () => {
    const path = join(dir, 'bounded.json');
    let dropped = 0;
    const types = new Set<string | undefined>();
    const onDrop = (lines: number, type?: string) => {
      dropped += lines;
      types.add(type);
    };
    const log = createEventLog(path, { maxBufferedBytes: 4096, onDrop });
    const total = 20_000;
    for (let i = 0; i < total; i++) log.write({ ...events[0], seq: i + 1 });
    await log.close();
    const written = readLines(path).length;
    expect(dropped).toBeGreaterThan(0);
    expect(written + dropped).toBe(total);
    expect([...types]).toEqual([events[0].type]);
  });

  it('writes every line in order past a full encoder buffer', async () => {
    const path = join(dir, 'many.json');
    const log = createEventLog(path);
    // About 40 MB in one event-loop turn: the encoder's 4 MiB buffer fills while a write is in flight.
    const total = 60_000;
    for (let i = 0; i < total; i++) log.write({ ...events[i % events.length], seq: i + 1 });
    await log.close();
    const lines = readLines(path) as { seq: number }[];
    expect(lines.length).toBe(total);
    expect(lines.every((line, i) => line.seq === i + 1)).toBe(true);
  });

  it('writes one AuditEvent per line in json format', async () => {
    const path = join(dir, 'nested', 'events.json');
    const log = createEventLog(path);
    for (const event of events) log.write(event);
    await log.close();
    expect(readLines(path)).toEqual(events);
  });

  it('writes one OCSF event per line in ocsf format', async () => {
    const path = join(dir, 'events.ocsf.json');
    const log = createEventLog(path, { format: 'ocsf', ocsf: { productVersion: '1.2.3' } });
    for (const event of events) log.write(event);
    await log.close();
    expect(readLines(path)).toEqual(events.map((event) => toOcsf(event, { productVersion: '1.2.3' })));
  });

  it('appends to an existing file', async () => {
    const path = join(dir, 'append.json');
    for (const event of events.slice(0, 2)) {
      const log = createEventLog(path);
      log.write(event);
      await log.close();
    }
    expect(readLines(path)).toEqual(events.slice(0, 2));
  });
});
