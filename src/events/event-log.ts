import pino from 'pino';
import { AuditEvent } from './audit-event';
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
 * Characters of lines collected before they go to the destination in one
 * write. sonic-boom appends each write to its last chunk by string
 * concatenation and then measures that chunk again. With one write per line,
 * bench/events-kernel.ts saw the log drop lines at 100,000 events/s on a
 * 2-vCPU VM.
 */
const MAX_PENDING_CHARS = 4 << 20;

/** Counts the lines of a text, each ended by a newline. */
function countLines(text: string): number {
  let lines = 0;
  for (let at = text.indexOf('\n'); at !== -1; at = text.indexOf('\n', at + 1)) lines++;
  return lines;
}

/**
 * JSON lines of audit events on stdout ('-') or appended to a file, through
 * pino's asynchronous destination, so a slow reader of stdout does not stall
 * the agent. Each line is the event object itself, with no log envelope: the
 * AuditEvent with format 'json', its toOcsf() rendering with format 'ocsf'.
 */
export function createEventLog(target: string, options: EventLogOptions = {}): EventLog {
  const maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  const destination = pino.destination({
    dest: target === '-' ? 1 : target,
    sync: false,
    mkdir: true,
    maxLength: maxBufferedBytes,
  });
  // sonic-boom drops a write as a whole when it does not fit, so a chunk stays well below the bound.
  const maxPendingChars = Math.min(MAX_PENDING_CHARS, Math.floor(maxBufferedBytes / 4));
  // sonic-boom emits 'drop' with the text it did not buffer; each event is one line.
  destination.on('drop', (text: string) => options.onDrop?.(countLines(text)));
  const render =
    options.format === 'ocsf'
      ? (event: AuditEvent) => JSON.stringify(toOcsf(event, options.ocsf))
      : (event: AuditEvent) => JSON.stringify(event);

  // Lines of the current event-loop turn, written together at its end or once they fill a chunk.
  let pending: string[] = [];
  let pendingChars = 0;
  let scheduled: NodeJS.Immediate | null = null;
  const flush = () => {
    if (scheduled) clearImmediate(scheduled);
    scheduled = null;
    if (pending.length === 0) return;
    const text = pending.join('');
    pending = [];
    pendingChars = 0;
    destination.write(text);
  };
  return {
    write: (event) => {
      const line = `${render(event)}\n`;
      pending.push(line);
      pendingChars += line.length;
      if (pendingChars >= maxPendingChars) flush();
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
