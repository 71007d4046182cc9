import pino from 'pino';
import { AuditEvent } from './audit-event';
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
  /** Called with the number of lines dropped because the buffer was full. */
  onDrop?: (lines: number) => void;
}

const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
/**
 * Bytes of lines collected before they go to the destination in one write.
 * Lines are encoded straight into bytes by JsonLineEncoder and handed to
 * sonic-boom in its buffer mode, so the text is neither joined nor converted
 * to UTF-8 again. One write per line cost more than the encoding at 100,000
 * events/s (bench/events-kernel.ts on a 2-vCPU VM).
 */
const MAX_PENDING_BYTES = 4 << 20;
/** Bytes of one write(2) to the destination. */
const MAX_WRITE_BYTES = 16 << 20;

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
 */
export function createEventLog(target: string, options: EventLogOptions = {}): EventLog {
  const maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  const destination = pino.destination({
    dest: target === '-' ? 1 : target,
    sync: false,
    mkdir: true,
    maxLength: maxBufferedBytes,
    // One write(2) takes everything buffered: with one write per chunk, a write completes at most
    // once per event-loop turn, as often as a busy agent adds a chunk, and the backlog grew.
    maxWrite: MAX_WRITE_BYTES,
    contentMode: 'buffer',
  });
  // sonic-boom drops a write as a whole when it does not fit, so a chunk stays well below the bound.
  const maxPendingBytes = Math.min(MAX_PENDING_BYTES, Math.floor(maxBufferedBytes / 4));
  // sonic-boom emits 'drop' with the chunk it did not buffer.
  destination.on('drop', (chunk: Uint8Array) => options.onDrop?.(countLines(chunk)));
  // In buffer mode sonic-boom writes Buffers, though its type declarations only allow strings.
  const writeBytes = destination.write.bind(destination) as unknown as (chunk: Buffer) => boolean;
  const encoder = new JsonLineEncoder();
  const ocsf = options.ocsf;
  const append =
    options.format === 'ocsf'
      ? (event: AuditEvent) => encoder.appendLine(toOcsf(event, ocsf))
      : (event: AuditEvent) => encoder.appendLine(event);

  // Lines of the current event-loop turn go out together at its end, or once they fill a chunk.
  let scheduled: NodeJS.Immediate | null = null;
  const flush = () => {
    if (scheduled) clearImmediate(scheduled);
    scheduled = null;
    if (encoder.pendingBytes === 0) return;
    writeBytes(encoder.take());
  };
  return {
    write: (event) => {
      append(event);
      if (encoder.pendingBytes >= maxPendingBytes) flush();
      else scheduled ??= setImmediate(flush);
    },
    // end() writes out what is buffered before it closes; it leaves fds 1 and 2 open.
    close: () =>
      new Promise<void>((resolve, reject) => {
        flush();
        destination.once('error', (error: Error) => reject(new Error(`close event log ${target}: ${error.message}`)));
        destination.once('close', () => resolve());
        destination.end();
      }),
  };
}
