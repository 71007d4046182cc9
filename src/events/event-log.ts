import pino from 'pino';
import { trimFileCache } from '../kernel/native';
import { AuditEvent, EventType } from './audit-event';
import { JsonLineEncoder } from './json-encoder';
import { OcsfOptions, toOcsf } from './ocsf';

/** Line format of the event log: Sigil's own event shape, or OCSF 1.3.0. */
export type EventLogFormat = 'json' | 'ocsf';
export const EVENT_LOG_FORMATS: readonly EventLogFormat[] = ['json', 'ocsf'];

/** Writer of audit events as JSON lines. */
export interface EventLog {
  write(event: AuditEvent): void;
  /** Writes out what is buffered, then closes the destination; resolves when done. */
  close(): Promise<void>;
}

export interface EventLogOptions {
  format?: EventLogFormat;
  ocsf?: OcsfOptions;
  /**
   * Bytes the log may hold unwritten before it drops lines, so a reader that
   * stops cannot grow the agent's memory without bound. Default 64 MiB.
   */
  maxBufferedBytes?: number;
  /**
   * Called with the number of lines dropped because the buffer was full, and
   * their event type when known.
   */
  onDrop?: (lines: number, type?: EventType) => void;
  /**
   * How much of a regular file's page cache the log keeps: written back and released once the
   * log has written `stepBytes` more, all but the last `keepBytes`. Default 32 MiB kept, every
   * 8 MiB; false leaves the page cache to the kernel.
   */
  pageCache?: { keepBytes: number; stepBytes: number } | false;
  /** Called once if releasing the page cache fails; the log goes on without it. */
  onPageCacheError?: (error: Error) => void;
}

const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
/**
 * Leading fields of an event that change from event to event: seq, time,
 * node, type and ktimeNs. The encoder reuses the bytes of the fields after
 * them when they repeat, as those of a process's frequent connects do.
 */
const EVENT_HEAD_FIELDS = 5;
/**
 * Bytes of lines after which the lines go to the destination while it is
 * idle, without waiting for the end of the event-loop turn.
 */
const MAX_PENDING_BYTES = 4 << 20;
/**
 * The JSON log at 250,000 events/s writes about 140 MB/s. Left to the kernel, those pages stay
 * cached until memory runs short, and each one is a newly allocated page. In the events
 * benchmark (bench/events-kernel.ts) on a VM that backs guest memory on first touch, copying
 * the lines into new page-cache pages took a large part of a CPU. Releasing all but a tail
 * lets the kernel reuse the pages it just freed, and a log shipper that follows the file still
 * reads recent lines from memory.
 */
const DEFAULT_PAGE_CACHE = { keepBytes: 32 << 20, stepBytes: 8 << 20 };

/** Counts the lines of a chunk, each ended by a newline; JSON text has no raw newline. */
function countLines(bytes: Uint8Array): number {
  let lines = 0;
  for (let at = bytes.indexOf(0x0a); at !== -1; at = bytes.indexOf(0x0a, at + 1)) lines++;
  return lines;
}

/**
 * JSON lines of audit events on stdout ('-') or appended to a file, through
 * pino's asynchronous destination, so a slow reader of stdout does not stall
 * the agent. Each line is the event object itself, with no log envelope: the
 * AuditEvent with format 'json', its toOcsf() rendering with format 'ocsf'.
 * A line is byte for byte JSON.stringify of that object.
 *
 * JsonLineEncoder writes the lines straight into one buffer, and they go to
 * sonic-boom in its buffer mode with at most one write in flight: lines that
 * arrive meanwhile wait in the encoder and go out together in the next
 * write(2), and when the encoder's buffer fills meanwhile, its lines wait as
 * one chunk for a write of their own. So no text is joined or converted to
 * UTF-8 again, and no chunks are concatenated before close(). A line that arrives while maxBufferedBytes are unwritten
 * is dropped and counted.
 */
export function createEventLog(target: string, options: EventLogOptions = {}): EventLog {
  const maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  const destination = pino.destination({
    dest: target === '-' ? 1 : target,
    sync: false,
    mkdir: true,
    // Above the bound that write() keeps, so sonic-boom itself never drops the chunk in flight.
    maxLength: maxBufferedBytes * 2,
    // A chunk goes out in one write(2), whatever its size.
    maxWrite: maxBufferedBytes * 2,
    contentMode: 'buffer',
  });
  const maxPendingBytes = Math.min(MAX_PENDING_BYTES, Math.floor(maxBufferedBytes / 4));
  // Never expected, as maxLength is above the bound; counted all the same, so no line goes unseen.
  destination.on('drop', (chunk: Uint8Array) => options.onDrop?.(countLines(chunk)));
  // In buffer mode sonic-boom writes Buffers, though its type declarations only allow strings.
  const writeBytes = destination.write.bind(destination) as unknown as (chunk: Buffer) => boolean;
  const encoder = new JsonLineEncoder();
  const ocsf = options.ocsf;
  const append =
    options.format === 'ocsf'
      ? (event: AuditEvent) => encoder.appendLine(toOcsf(event, ocsf))
      : (event: AuditEvent) =>
          encoder.appendObjectLine(event as unknown as Record<string, unknown>, EVENT_HEAD_FIELDS);

  // Bytes handed to sonic-boom that it has not reported written yet.
  let inFlight = 0;
  // Lines the encoder handed over when its buffer filled during a write, oldest first: written
  // one chunk at a time, so sonic-boom never joins chunks by a copy.
  const fullChunks: Buffer[] = [];
  let fullBytes = 0;
  encoder.onFull = (lines) => {
    fullChunks.push(lines);
    fullBytes += lines.length;
  };
  let scheduled: NodeJS.Immediate | null = null;
  const unwritten = () => fullChunks.length > 0 || encoder.pendingBytes > 0;
  // The chunk being written and how much of it sonic-boom reported written.
  let writing: Buffer | null = null;
  let writingDone = 0;
  const writePending = () => {
    const full = fullChunks.shift();
    if (full !== undefined) fullBytes -= full.length;
    const chunk = full ?? encoder.take();
    inFlight += chunk.length;
    writing = chunk;
    writingDone = 0;
    writeBytes(chunk);
  };
  // A written chunk's memory goes back to the encoder unless other lines still use it.
  const written = (bytes: number) => {
    if (writing === null) return;
    writingDone += bytes;
    if (writingDone < writing.length) return;
    const memory = writing.buffer;
    writing = null;
    if (!encoder.appendsTo(memory) && !fullChunks.some((chunk) => chunk.buffer === memory)) {
      encoder.recycle(memory);
    }
  };
  const flush = () => {
    if (scheduled) clearImmediate(scheduled);
    scheduled = null;
    // While a write is in flight, the 'write' listener below sends the lines when it completes.
    if (unwritten() && inFlight === 0) writePending();
  };
  // sonic-boom's type declarations leave out fd, which is -1 until the file is open.
  const cache = pageCacheTrimmer(destination as unknown as { fd: number }, options);
  // sonic-boom emits 'write' with the bytes of each completed write(2), partial ones included.
  destination.on('write', (bytes: number) => {
    inFlight -= bytes;
    written(bytes);
    if (inFlight === 0 && unwritten()) scheduled ??= setImmediate(flush);
    cache.written(bytes);
  });
  return {
    write: (event) => {
      if (encoder.pendingBytes + fullBytes + inFlight >= maxBufferedBytes) {
        options.onDrop?.(1, event.type);
        return;
      }
      append(event);
      if (encoder.pendingBytes >= maxPendingBytes) flush();
      else scheduled ??= setImmediate(flush);
    },
    // end() writes out what is buffered before it closes; it leaves fds 1 and 2 open.
    close: () =>
      new Promise<void>((resolve, reject) => {
        if (scheduled) clearImmediate(scheduled);
        scheduled = null;
        while (unwritten()) writePending();
        // A release in flight uses the descriptor, which must not close and be reused under it.
        void cache.finish().then(() => {
          destination.once('error', (error: Error) =>
            reject(new Error(`close event log ${target}: ${error.message}`)),
          );
          destination.once('close', () => resolve());
          destination.end();
        });
      }),
  };
}

interface PageCacheTrimmer {
  /** Counts bytes the destination wrote, and starts a release when a step has passed. */
  written(bytes: number): void;
  /** Starts no more releases; resolves when none is in flight. */
  finish(): Promise<void>;
}

/**
 * Keeps the page cache of the log's file to a tail (DEFAULT_PAGE_CACHE), one release at a time
 * on a libuv worker thread. It stops for good when the destination is not a regular file or a
 * release fails.
 */
function pageCacheTrimmer(destination: { fd: number }, options: EventLogOptions): PageCacheTrimmer {
  const settings = options.pageCache === undefined ? DEFAULT_PAGE_CACHE : options.pageCache;
  let stopped = settings === false;
  let sinceRelease = 0;
  let releasedTo = 0;
  let inFlight: Promise<void> | null = null;
  const stop = (error?: Error) => {
    stopped = true;
    if (error) options.onPageCacheError?.(error);
  };
  return {
    written: (bytes) => {
      if (stopped || settings === false) return;
      sinceRelease += bytes;
      if (inFlight || sinceRelease < settings.stepBytes || destination.fd < 0) return;
      sinceRelease = 0;
      try {
        inFlight = trimFileCache(destination.fd, releasedTo, settings.keepBytes).then(
          (result) => {
            releasedTo = result.releasedTo;
            if (!result.regular) stop();
          },
          (error: Error) => stop(error),
        );
      } catch (error) {
        // The addon is missing or refused the arguments.
        stop(error as Error);
        return;
      }
      void inFlight.finally(() => {
        inFlight = null;
      });
    },
    finish: async () => {
      stopped = true;
      // A release that fails reports through onPageCacheError, never rejects here.
      while (inFlight) await inFlight;
    },
  };
}
