import {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readSync,
} from 'node:fs';
import { dirname } from 'node:path';
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
  /**
   * Closes the file once the write in flight completes, and opens the path again: after a
   * tool such as logrotate renamed it, the lines go to a new file. Does nothing for stdout.
   */
  reopen(): void;
  /** Writes out what is buffered, then closes the destination; resolves when done. */
  close(): Promise<void>;
}

/** Reason the event log dropped lines. */
export type EventLogDropReason = 'buffer-full' | 'write-failed';

export interface EventLogOptions {
  format?: EventLogFormat;
  ocsf?: OcsfOptions;
  /**
   * Bytes the log may hold unwritten before it drops lines, so a reader that
   * stops cannot grow the agent's memory without bound. Default 64 MiB.
   */
  maxBufferedBytes?: number;
  /**
   * Called with the number of lines dropped, their event type when known, and
   * why: 'buffer-full' when maxBufferedBytes were unwritten (a slow reader, or
   * a file that waits to be opened again), 'write-failed' for the lines of a
   * failed write and those still waiting when a log that cannot be written
   * is closed.
   */
  onDrop?: (lines: number, type: EventType | undefined, reason: EventLogDropReason) => void;
  /**
   * How much of a regular file's page cache the log keeps: written back and released once the
   * log has written `stepBytes` more, all but the last `keepBytes`. Default 32 MiB kept, every
   * 8 MiB; false leaves the page cache to the kernel.
   */
  pageCache?: { keepBytes: number; stepBytes: number } | false;
  /** Called once if releasing the page cache fails; the log goes on without it. */
  onPageCacheError?: (error: Error) => void;
  /**
   * Called when a write fails. The lines that did not reach the file are counted by onDrop,
   * and the file is opened again a second later.
   */
  onError?: (error: Error) => void;
}

const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
const NEWLINE = 0x0a;
/** Newline that ends a line torn by a failed write. failed() recognizes it by identity. */
const TORN_LINE_END = Buffer.alloc(1, NEWLINE);
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
 * UTF-8 again, and no chunks are concatenated. A line that arrives while
 * maxBufferedBytes are unwritten is dropped and counted.
 *
 * A failed write (a full disk, an I/O error) neither throws nor stops the
 * log: the lines of the chunk that did not reach the file are counted as
 * dropped, onError receives the error, and the file is opened again after
 * REOPEN_DELAY_MS while new lines wait in the encoder. A file that cannot be
 * opened at first makes createEventLog throw.
 */
export function createEventLog(target: string, options: EventLogOptions = {}): EventLog {
  return new BufferedEventLog(target, options);
}

/**
 * Makes dir and its missing parents, one level at a time: Node 20's recursive mkdir never
 * returns on a path below /proc/<pid>.
 */
function makeDirectory(dir: string): void {
  if (existsSync(dir)) return;
  makeDirectory(dirname(dir));
  mkdirSync(dir);
}

/**
 * Returns whether the regular file open at fd ends in part of a line, as a log does whose last
 * write failed partway. Returns null for other files, and when the last byte cannot be read.
 */
function endsInPartialLine(fd: number): boolean | null {
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) return null;
    if (stat.size === 0) return false;
    // The log's own descriptor is opened for writing only.
    const reader = openSync(`/proc/self/fd/${fd}`, 'r');
    try {
      const last = Buffer.alloc(1);
      if (readSync(reader, last, 0, 1, stat.size - 1) !== 1) return null;
      return last[0] !== NEWLINE;
    } finally {
      closeSync(reader);
    }
  } catch {
    return null;
  }
}

/** Delay in milliseconds before a file whose write failed is opened again. */
const REOPEN_DELAY_MS = 1000;

type Destination = ReturnType<typeof pino.destination>;

class BufferedEventLog implements EventLog {
  private readonly maxBufferedBytes: number;
  private readonly maxPendingBytes: number;
  private readonly encoder = new JsonLineEncoder();
  private readonly append: (event: AuditEvent) => void;
  /** The open destination; null while a failed file waits to be opened again. */
  private destination: Destination | null = null;
  private cache: PageCacheTrimmer | null = null;
  /** Bytes handed to the destination that it has not reported written yet. */
  private inFlight = 0;
  /**
   * Lines the encoder handed over when its buffer filled during a write, oldest first: written
   * one chunk at a time, so sonic-boom never joins chunks by a copy.
   */
  private readonly fullChunks: Buffer[] = [];
  private fullBytes = 0;
  /** The chunk being written and how much of it the destination reported written. */
  private writing: Buffer | null = null;
  private writingDone = 0;
  /**
   * The file ends in part of a line. Read from a regular file when it is opened, and set by a
   * write that failed partway. Cleared once a write completes, as every chunk ends in a newline.
   */
  private tornLine = false;
  private scheduled: NodeJS.Immediate | null = null;
  private reopenTimer: NodeJS.Timeout | null = null;
  /** Settles when the last destination that failed has closed its descriptor. */
  private destroyed: Promise<unknown> = Promise.resolve();
  /** Set by reopen(): the file is opened again when no write is in flight. */
  private reopenRequested = false;
  /** Set by close(): called once the lines are written or counted as dropped. */
  private closed: ((error?: Error) => void) | null = null;

  constructor(
    private readonly target: string,
    private readonly options: EventLogOptions,
  ) {
    this.maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    this.maxPendingBytes = Math.min(MAX_PENDING_BYTES, Math.floor(this.maxBufferedBytes / 4));
    this.encoder.onFull = (lines) => {
      this.fullChunks.push(lines);
      this.fullBytes += lines.length;
    };
    const ocsf = options.ocsf;
    this.append =
      options.format === 'ocsf'
        ? (event) => this.encoder.appendLine(toOcsf(event, ocsf))
        : (event) =>
            this.encoder.appendObjectLine(
              event as unknown as Record<string, unknown>,
              EVENT_HEAD_FIELDS,
            );
    // The first open throws, so that a bad --events-log stops the agent before it starts.
    this.open(this.openFile());
  }

  write(event: AuditEvent): void {
    if (this.closed) return;
    if (this.encoder.pendingBytes + this.fullBytes + this.inFlight >= this.maxBufferedBytes) {
      this.options.onDrop?.(1, event.type, 'buffer-full');
      return;
    }
    this.append(event);
    if (this.encoder.pendingBytes >= this.maxPendingBytes) this.flush();
    else this.scheduled ??= setImmediate(() => this.flush());
  }

  reopen(): void {
    if (this.closed || this.target === '-') return;
    // A destination that failed is opened again by its timer anyway.
    if (this.destination === null) return;
    this.reopenRequested = true;
    if (this.inFlight === 0) this.switchFile();
  }

  /** Writes out the lines, then closes the destination; it leaves fds 1 and 2 open. */
  close(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.closed = (error) => (error ? reject(error) : resolve());
      if (this.scheduled) clearImmediate(this.scheduled);
      this.scheduled = null;
      if (this.destination === null) this.finishClose();
      else this.flush();
    });
  }

  /**
   * Opens the target for appending, and returns its descriptor (1 for '-'). The file is opened
   * here rather than by sonic-boom, so that an error is thrown at once, and so that a failed
   * destination always has a descriptor and can be destroyed (sonic-boom waits for an open
   * that never comes otherwise).
   */
  private openFile(): number {
    if (this.target === '-') return 1;
    const dir = dirname(this.target);
    try {
      makeDirectory(dir);
      // Events name processes, arguments and peers: a new file is not readable by others.
      // O_NONBLOCK makes the open of a FIFO without a reader fail with ENXIO instead of waiting
      // for one on the main thread. It does not change writes to a regular file, and sonic-boom
      // retries a write to a full pipe that returns EAGAIN.
      const flags =
        constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK;
      return openSync(this.target, flags, 0o640);
    } catch (error) {
      throw new Error(`open event log ${this.target}: ${(error as Error).message}`);
    }
  }

  private open(fd: number): void {
    const destination = pino.destination({
      dest: fd,
      sync: false,
      // Above the bound that write() keeps, so sonic-boom itself never drops the chunk in flight.
      maxLength: this.maxBufferedBytes * 2,
      // A chunk goes out in one write(2), whatever its size.
      maxWrite: this.maxBufferedBytes * 2,
      contentMode: 'buffer',
    });
    this.destination = destination;
    // sonic-boom's type declarations leave out fd.
    this.cache = pageCacheTrimmer(destination as unknown as { fd: number }, this.options);

    // Never expected, as maxLength is above the bound; counted all the same, so no line goes unseen.
    destination.on('drop', (chunk: Uint8Array) =>
      this.options.onDrop?.(countLines(chunk), undefined, 'buffer-full'),
    );
    // sonic-boom emits 'write' with the bytes of each completed write(2), partial ones included.
    destination.on('write', (bytes: number) => {
      if (destination !== this.destination) return;
      this.inFlight -= bytes;
      this.written(bytes);
      this.cache?.written(bytes);
      if (this.inFlight === 0) {
        if (this.reopenRequested) this.switchFile();
        if (this.unwritten()) this.scheduled ??= setImmediate(() => this.flush());
        else if (this.closed) this.finishClose();
      }
    });
    destination.on('error', (error: Error) => this.failed(destination, error));

    // A regular file shows whether it ends torn: an existing file left so by an earlier run, or
    // a file renamed by a rotation while this log waited to open the path again.
    this.tornLine = endsInPartialLine(fd) ?? this.tornLine;
    // The next line starts on a line of its own; the torn part was counted as dropped.
    if (this.tornLine) this.send(TORN_LINE_END);
  }

  /**
   * Ends the current destination, with nothing left in it to write, and opens the path again.
   * If the path cannot be opened, the lines go on to the current file and onError is called.
   */
  private switchFile(): void {
    this.reopenRequested = false;
    const current = this.destination;
    if (current === null) return;
    let fd: number;
    try {
      fd = this.openFile();
    } catch (error) {
      this.options.onError?.(error as Error);
      return;
    }
    this.stopTrimming();
    current.end();
    this.open(fd);
  }

  /** Stops the page cache releases of the current file; a release in flight finishes alone. */
  private stopTrimming(): void {
    void this.cache?.finish();
    this.cache = null;
  }

  private unwritten(): boolean {
    return this.fullChunks.length > 0 || this.encoder.pendingBytes > 0;
  }

  private flush(): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = null;
    // While a write is in flight, the 'write' listener sends the lines when it completes.
    if (this.destination === null || this.inFlight > 0) return;
    if (this.unwritten()) {
      const full = this.fullChunks.shift();
      if (full !== undefined) this.fullBytes -= full.length;
      this.send(full ?? this.encoder.take());
    } else if (this.closed) {
      this.finishClose();
    }
  }

  private send(chunk: Buffer): void {
    this.inFlight += chunk.length;
    this.writing = chunk;
    this.writingDone = 0;
    // In buffer mode sonic-boom writes Buffers, though its type declarations only allow strings.
    (this.destination as unknown as { write(chunk: Buffer): boolean }).write(chunk);
  }

  /** Gives a written chunk's memory back to the encoder unless other lines still use it. */
  private written(bytes: number): void {
    const chunk = this.writing;
    if (chunk === null) return;
    this.writingDone += bytes;
    if (this.writingDone < chunk.length) return;
    this.writing = null;
    this.tornLine = false;
    const memory = chunk.buffer;
    if (!this.encoder.appendsTo(memory) && !this.fullChunks.some((c) => c.buffer === memory)) {
      this.encoder.recycle(memory);
    }
  }

  /**
   * Counts the lines of a failed write as dropped, and opens the file again later. sonic-boom
   * keeps a failed chunk and would retry it with the next write, and at process exit pino
   * flushes it synchronously, retrying forever on an error such as ENOSPC (pino 9, sonic-boom
   * 4.2). So the destination is destroyed, which makes both give up on it.
   */
  private failed(destination: Destination, error: Error): void {
    if (destination !== this.destination) return;
    const chunk = this.writing;
    if (chunk !== null) {
      const rest = chunk.subarray(this.writingDone);
      // A write that wrote nothing leaves the end of the file as it was, torn or not.
      if (this.writingDone > 0) this.tornLine = chunk[this.writingDone - 1] !== NEWLINE;
      // The newline that ends a torn line is no line of its own.
      const lost = chunk === TORN_LINE_END ? 0 : countLines(rest);
      if (lost > 0) this.options.onDrop?.(lost, undefined, 'write-failed');
      this.inFlight -= rest.length;
      this.writing = null;
    }
    this.destination = null;
    this.stopTrimming();

    // close() resolves only after the failed file's descriptor is closed.
    this.destroyed = new Promise((resolve) => destination.once('close', resolve));
    destination.destroy();
    // sonic-boom's type declarations leave out fd and destroyed.
    const stream = destination as unknown as { fd: number; destroyed: boolean };
    if (!stream.destroyed) {
      // After EPIPE, pino 9's destination (buildSafeSonicBoom) has made destroy() do nothing,
      // so no 'close' comes. Nothing is written to it any more, so its descriptor is closed here.
      if (stream.fd > 2) closeSync(stream.fd);
      this.destroyed = Promise.resolve();
    }

    this.options.onError?.(new Error(`write event log ${this.target}: ${error.message}`));
    if (this.closed) {
      this.finishClose(new Error(`close event log ${this.target}: ${error.message}`));
      return;
    }
    this.scheduleReopen();
  }

  private scheduleReopen(): void {
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      let fd: number;
      try {
        fd = this.openFile();
      } catch (error) {
        this.options.onError?.(error as Error);
        this.scheduleReopen();
        return;
      }
      this.open(fd);
      this.flush();
    }, REOPEN_DELAY_MS);
  }

  /** Ends the destination after the last write, or counts what is left as dropped. */
  private finishClose(error?: Error): void {
    const done = this.closed;
    if (done === null) return;
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.reopenTimer = null;
    const destination = this.destination;
    if (destination === null || error) {
      // The file cannot be written now: the lines still waiting are lost.
      let lost = 0;
      for (const chunk of this.fullChunks) lost += countLines(chunk);
      lost += countLines(this.encoder.take());
      this.fullChunks.length = 0;
      this.fullBytes = 0;
      if (lost > 0) this.options.onDrop?.(lost, undefined, 'write-failed');
      void this.destroyed.then(() => done(error));
      return;
    }
    this.destination = null;
    this.stopTrimming();
    destination.once('error', (failure: Error) =>
      done(new Error(`close event log ${this.target}: ${failure.message}`)),
    );
    destination.once('close', () => done());
    destination.end();
  }
}

interface PageCacheTrimmer {
  /** Counts bytes the destination wrote, and starts a release when a step has passed. */
  written(bytes: number): void;
  /** Starts no more releases; resolves when none is in flight and its descriptor is closed. */
  finish(): Promise<void>;
}

/**
 * Keeps the page cache of the log's file to a tail (DEFAULT_PAGE_CACHE), one release at a time
 * on a libuv worker thread. The releases use a descriptor of their own, opened through
 * /proc/self/fd, so the destination may close its descriptor at any time without a release
 * acting on a reused number. It stops for good when the destination is not a regular file or a
 * release fails.
 */
function pageCacheTrimmer(destination: { fd: number }, options: EventLogOptions): PageCacheTrimmer {
  const settings = options.pageCache === undefined ? DEFAULT_PAGE_CACHE : options.pageCache;
  let stopped = settings === false;
  let sinceRelease = 0;
  let releasedTo = 0;
  let ownFd = -1;
  let inFlight: Promise<void> | null = null;
  const stop = (error?: Error) => {
    stopped = true;
    if (error) options.onPageCacheError?.(error);
  };
  const closeOwnFd = () => {
    if (ownFd >= 0) closeSync(ownFd);
    ownFd = -1;
  };
  /** Returns the descriptor for releases, opening it on first use; -1 for a file that is not regular. */
  const releaseFd = (): number => {
    if (ownFd < 0) {
      if (!fstatSync(destination.fd).isFile()) return -1;
      ownFd = openSync(`/proc/self/fd/${destination.fd}`, 'r');
    }
    return ownFd;
  };
  return {
    written: (bytes) => {
      if (stopped || settings === false) return;
      sinceRelease += bytes;
      if (inFlight || sinceRelease < settings.stepBytes || destination.fd < 0) return;
      sinceRelease = 0;
      try {
        const fd = releaseFd();
        if (fd < 0) {
          stop();
          return;
        }
        inFlight = trimFileCache(fd, releasedTo, settings.keepBytes).then(
          (result) => {
            releasedTo = result.releasedTo;
          },
          (error: Error) => stop(error),
        );
      } catch (error) {
        // The addon is missing, or the descriptor could not be opened.
        stop(error as Error);
        return;
      }
      void inFlight.finally(() => {
        inFlight = null;
        if (stopped) closeOwnFd();
      });
    },
    finish: async () => {
      stopped = true;
      // A release that fails reports through onPageCacheError, never rejects here.
      while (inFlight) await inFlight;
      closeOwnFd();
    },
  };
}
