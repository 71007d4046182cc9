import { execFileSync, spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
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
    const reasons = new Set<string>();
    const onDrop = (lines: number, type: string | undefined, reason: string) => {
      dropped += lines;
      types.add(type);
      reasons.add(reason);
    };
    const log = createEventLog(path, { maxBufferedBytes: 4096, onDrop });
    const total = 20_000;
    for (let i = 0; i < total; i++) log.write({ ...events[0], seq: i + 1 });
    await log.close();
    const written = readLines(path).length;
    expect(dropped).toBeGreaterThan(0);
    expect(written + dropped).toBe(total);
    expect([...types]).toEqual([events[0].type]);
    expect([...reasons]).toEqual(['buffer-full']);
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

  it('keeps every line intact while encoder buffers are reused', async () => {
    const path = join(dir, 'reused.json');
    const log = createEventLog(path);
    // Rounds of about 2.6 MB with a turn between them: buffers fill during writes, are handed
    // over, written and reused many times.
    const rounds = 40;
    const perRound = 4_000;
    const expected: string[] = [];
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < perRound; i++) {
        const seq = round * perRound + i + 1;
        const event = { ...events[seq % events.length], seq, message: `line ${seq}` };
        expected.push(JSON.stringify(event));
        log.write(event);
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    await log.close();
    const lines = readFileSync(path, 'utf8').trimEnd().split('\n');
    expect(lines.length).toBe(expected.length);
    const wrong = lines.findIndex((line, i) => line !== expected[i]);
    expect(wrong === -1 ? null : { line: wrong + 1, text: lines[wrong].slice(0, 200) }).toBeNull();
  });

  /** Bytes of the file in the page cache, from fincore(1) of util-linux. */
  function cachedBytes(path: string): number {
    const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], {
      encoding: 'utf8',
    });
    return Number(out.trim());
  }

  async function writeMegabytes(
    path: string,
    megabytes: number,
    options: Parameters<typeof createEventLog>[1],
  ) {
    const log = createEventLog(path, options);
    let seq = 0;
    while (!existsSync(path) || statSync(path).size < megabytes << 20) {
      for (let i = 0; i < 2_000; i++) log.write({ ...events[seq % events.length], seq: ++seq });
      // Let the writes complete, as the agent's event loop does between ring-buffer batches.
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await log.close();
  }

  it('keeps only a tail of its file in the page cache', async () => {
    const trimmed = join(dir, 'trimmed.json');
    const onPageCacheError = (error: Error) => {
      throw error;
    };
    await writeMegabytes(trimmed, 64, {
      pageCache: { keepBytes: 4 << 20, stepBytes: 1 << 20 },
      onPageCacheError,
    });
    // The kept 4 MiB, and what was written while the last release waited for writeback and
    // after it. That part depends on the disk, and was 9 to 11 MiB on the test machine.
    expect(cachedBytes(trimmed)).toBeLessThanOrEqual(24 << 20);
    expect(statSync(trimmed).size).toBeGreaterThanOrEqual(64 << 20);

    // The same log with the page cache left to the kernel keeps (nearly) all of it cached.
    const untrimmed = join(dir, 'untrimmed.json');
    await writeMegabytes(untrimmed, 64, { pageCache: false });
    expect(cachedBytes(untrimmed)).toBeGreaterThan(56 << 20);
  });

  describe('on a full file system (needs root)', () => {
    // A 1 MiB tmpfs, half taken by a file that a test removes to make room again.
    const full = join(dir, 'full');
    const filler = join(full, 'filler');
    beforeAll(() => {
      mkdirSync(full);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'sigil-test', full]);
    });
    afterAll(() => {
      // Lazily, so a log that a failed test left open does not leave the mount behind.
      execFileSync('umount', ['--lazy', full]);
    });
    afterEach(() => {
      for (const name of readdirSync(full)) rmSync(join(full, name));
    });

    /** Lines of a file that parse as JSON, and those that do not (a line cut by a failed write). */
    function parseLines(path: string): { whole: number; torn: number } {
      let whole = 0;
      let torn = 0;
      for (const line of readFileSync(path, 'utf8').split('\n').filter(Boolean)) {
        try {
          JSON.parse(line);
          whole++;
        } catch {
          torn++;
        }
      }
      return { whole, torn };
    }

    it('counts lost lines and resumes after space returns', async () => {
      writeFileSync(filler, Buffer.alloc(512 * 1024));
      const path = join(full, 'events.json');
      let dropped = 0;
      let failedWrites = 0;
      const errors: string[] = [];
      const log = createEventLog(path, {
        onDrop: (lines, _type, reason) => {
          dropped += lines;
          if (reason === 'write-failed') failedWrites += lines;
        },
        onError: (error) => errors.push(error.message),
      });
      let total = 0;
      const writeRound = async () => {
        for (let i = 0; i < 500; i++) log.write({ ...events[0], seq: ++total });
        await new Promise((resolve) => setTimeout(resolve, 10));
      };
      while (errors.length === 0 && total < 20_000) await writeRound();
      expect(errors[0]).toContain(`write event log ${path}: ENOSPC`);

      // Lines written while the file system is full wait, then go out once the file reopens.
      rmSync(filler);
      for (let i = 0; i < 10; i++) await writeRound();
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await log.close();

      const { whole, torn } = parseLines(path);
      expect(dropped).toBeGreaterThan(0);
      // The lines of the write that failed are lost as such, not as a full buffer.
      expect(failedWrites).toBeGreaterThan(0);
      expect(torn).toBeLessThanOrEqual(errors.length);
      // Every line is in the file whole, or counted as dropped (a torn line is counted too).
      expect(whole + dropped).toBe(total);
      expect(whole).toBeGreaterThan(total - dropped - 1);
    });

    it('ends a torn line after reopens that fail', async () => {
      // With 64 KiB free, the first write (all the lines below) stops at a page boundary inside
      // a line. The newline that ends that line at a reopen then needs a page of its own.
      writeFileSync(filler, Buffer.alloc(1024 * 1024 - 64 * 1024));
      const path = join(full, 'torn.json');
      let dropped = 0;
      const errors: string[] = [];
      const log = createEventLog(path, {
        onDrop: (lines) => (dropped += lines),
        onError: (error) => errors.push(error.message),
      });
      let total = 0;
      for (let i = 0; i < 2_000; i++) log.write({ ...events[0], seq: ++total });
      // The file system stays full past a reopen a second later, whose newline fails as well.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      const failures = errors.length;
      rmSync(filler);
      for (let i = 0; i < 500; i++) log.write({ ...events[0], seq: ++total });
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await log.close();
      expect(failures).toBeGreaterThanOrEqual(2);
      // The 500 lines fit in the room made: no write fails after it.
      expect(errors.length).toBe(failures);

      const { whole, torn } = parseLines(path);
      // Only the line cut by the first failed write is torn, and it was counted as dropped.
      expect(torn).toBe(1);
      expect(whole + dropped).toBe(total);
      // The lines written once there was room are all whole, the first one too.
      const seqs: number[] = [];
      for (const line of readFileSync(path, 'utf8').split('\n')) {
        try {
          seqs.push((JSON.parse(line) as { seq: number }).seq);
        } catch {
          // The torn line, or the empty string after the last newline.
        }
      }
      expect(seqs.slice(-500)).toEqual(Array.from({ length: 500 }, (_, i) => 2_001 + i));
    });

    it('closes without hanging while the file system stays full', async () => {
      writeFileSync(filler, Buffer.alloc(1024 * 1024 - 64 * 1024));
      const path = join(full, 'stuck.json');
      let dropped = 0;
      const log = createEventLog(path, { onDrop: (lines) => (dropped += lines) });
      const total = 5_000;
      for (let i = 0; i < total; i++) log.write({ ...events[0], seq: i + 1 });
      const closing = log.close().then(
        () => 'closed',
        (error: Error) => error.message,
      );
      const outcome = await closing;
      expect(outcome === 'closed' || outcome.includes('ENOSPC')).toBe(true);
      expect(parseLines(path).whole + dropped).toBe(total);
    });

    it('lets the process exit while a write fails', () => {
      writeFileSync(filler, Buffer.alloc(1024 * 1024 - 64 * 1024));
      const path = join(full, 'exit.json');
      // pino flushes its destinations at exit; a failed one must not retry forever there.
      const script = `
        const { createEventLog } = require(${JSON.stringify(join(__dirname, '..', '..', 'dist', 'events', 'event-log.js'))});
        const log = createEventLog(${JSON.stringify(path)}, { onError: () => process.exit(0) });
        for (let i = 0; i < 5000; i++) log.write({ seq: i, type: 'connect', message: 'x'.repeat(200) });
      `;
      execFileSync(process.execPath, ['-e', script], { timeout: 20_000 });
    });
  });

  it('reopens its path after a rename', async () => {
    const path = join(dir, 'rotated.json');
    const log = createEventLog(path);
    let seq = 0;
    // A large burst and one event-loop turn, so that a write is in flight when reopen() is
    // called and more lines wait behind it.
    for (let i = 0; i < 20_000; i++) log.write({ ...events[0], seq: ++seq });
    await new Promise((resolve) => setImmediate(resolve));
    renameSync(path, `${path}.1`);
    log.reopen();
    for (let i = 0; i < 1_000; i++) log.write({ ...events[0], seq: ++seq });
    await log.close();
    // Events name processes and peers: the files are not readable by others.
    expect(statSync(path).mode & 0o777).toBe(0o640);
    const before = readLines(`${path}.1`) as { seq: number }[];
    const after = readLines(path) as { seq: number }[];
    expect(before.length).toBeGreaterThan(0);
    expect(after.length).toBeGreaterThan(0);
    // Every line once, in order, across the two files.
    expect([...before, ...after].map((line) => line.seq)).toEqual(
      Array.from({ length: seq }, (_, i) => i + 1),
    );
  });

  it('throws when its file cannot be opened', () => {
    expect(() => createEventLog('/etc/hostname/events.json')).toThrow(
      "open event log /etc/hostname/events.json: ENOTDIR: not a directory, open '/etc/hostname/events.json'",
    );
  });

  describe('on a FIFO', () => {
    const fifo = join(dir, 'events.fifo');
    beforeAll(() => execFileSync('mkfifo', [fifo]));

    it('throws without a reader', () => {
      // Opening a FIFO for writing waits for a reader: in a child, so that a hang fails the test.
      const script = `
        const { createEventLog } = require(${JSON.stringify(join(__dirname, '..', '..', 'dist', 'events', 'event-log.js'))});
        try {
          createEventLog(${JSON.stringify(fifo)});
          console.log('opened');
        } catch (error) {
          console.log(error.message);
        }
      `;
      const output = execFileSync(process.execPath, ['-e', script], {
        encoding: 'utf8',
        timeout: 10_000,
      });
      expect(output.trim()).toBe(
        `open event log ${fifo}: ENXIO: no such device or address, open '${fifo}'`,
      );
    });

    it('writes every line to a reader', async () => {
      const reader = spawn('cat', [fifo]);
      const chunks: Buffer[] = [];
      reader.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
      const exited = new Promise((resolve) => reader.on('exit', resolve));
      // cat opens the FIFO for reading once it runs; until then there is no reader.
      let log: ReturnType<typeof createEventLog> | null = null;
      for (let attempt = 0; log === null && attempt < 100; attempt++) {
        try {
          log = createEventLog(fifo);
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
      expect(log).not.toBeNull();
      const total = 20_000;
      for (let i = 0; i < total; i++) log!.write({ ...events[0], seq: i + 1 });
      await log!.close();
      await exited;
      const lines = Buffer.concat(chunks).toString('utf8').trimEnd().split('\n');
      expect(lines.length).toBe(total);
      expect(lines.map((line) => (JSON.parse(line) as { seq: number }).seq)).toEqual(
        Array.from({ length: total }, (_, i) => i + 1),
      );
    });

    it('closes after its reader leaves', async () => {
      // head reads a few bytes and exits, so the writes after that fail with EPIPE.
      const reader = spawn('head', ['-c', '100', fifo], { stdio: 'ignore' });
      const exited = new Promise((resolve) => reader.on('exit', resolve));
      const errors: string[] = [];
      let log: ReturnType<typeof createEventLog> | null = null;
      for (let attempt = 0; log === null && attempt < 100; attempt++) {
        try {
          log = createEventLog(fifo, { onError: (error) => errors.push(error.message) });
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
      expect(log).not.toBeNull();
      let total = 0;
      while (errors.length === 0 && total < 1_000_000) {
        for (let i = 0; i < 1_000; i++) log!.write({ ...events[0], seq: ++total });
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await exited;
      expect(errors[0]).toContain(`write event log ${fifo}: EPIPE`);

      const outcome = await Promise.race([
        log!.close().then(
          () => 'closed',
          (error: Error) => error.message,
        ),
        new Promise((resolve) => setTimeout(() => resolve('timed out'), 5_000)),
      ]);
      expect(outcome).not.toBe('timed out');
      // The descriptors of the failed writes are closed too.
      const open = readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`) === fifo;
        } catch {
          return false;
        }
      });
      expect(open).toEqual([]);
    });
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
    expect(readLines(path)).toEqual(
      events.map((event) => toOcsf(event, { productVersion: '1.2.3' })),
    );
  });

  it('appends after a torn last line', async () => {
    // As a log left that stopped while its file system was full.
    const path = join(dir, 'torn-tail.json');
    writeFileSync(path, `${JSON.stringify(events[0])}\n{"seq":1,"ty`);
    const log = createEventLog(path);
    log.write(events[1]);
    await log.close();
    const lines = readFileSync(path, 'utf8').split('\n');
    expect(lines[1]).toBe('{"seq":1,"ty');
    expect(JSON.parse(lines[2])).toEqual(events[1]);
  });

  it('starts a rotated file without an empty line', async () => {
    // The write fails partway, and the file is renamed before the log opens its path again.
    const full = join(dir, 'rotate-full');
    mkdirSync(full);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'sigil-test', full]);
    try {
      writeFileSync(join(full, 'filler'), Buffer.alloc(1024 * 1024 - 64 * 1024));
      const path = join(full, 'events.json');
      const errors: string[] = [];
      const log = createEventLog(path, { onError: (error) => errors.push(error.message) });
      for (let i = 0; i < 2_000; i++) log.write({ ...events[0], seq: i + 1 });
      while (errors.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      renameSync(path, `${path}.1`);
      rmSync(join(full, 'filler'));
      await new Promise((resolve) => setTimeout(resolve, 1500));
      log.write({ ...events[0], seq: 2_001 });
      await log.close();
      expect(readFileSync(path, 'utf8')).toBe(`${JSON.stringify({ ...events[0], seq: 2_001 })}\n`);
    } finally {
      execFileSync('umount', ['--lazy', full]);
    }
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
