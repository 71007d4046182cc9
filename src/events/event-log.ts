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
 * JSON lines of audit events on stdout ('-') or appended to a file, through
 * pino's asynchronous destination, so a slow reader of stdout does not stall
 * the agent. Each line is the event object itself, with no log envelope: the
 * AuditEvent with format 'json', its toOcsf() rendering with format 'ocsf'.
 */
export function createEventLog(target: string, options: EventLogOptions = {}): EventLog {
  const destination = pino.destination({
    dest: target === '-' ? 1 : target,
    sync: false,
    mkdir: true,
    maxLength: options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES,
  });
  // sonic-boom emits 'drop' with the text it did not buffer; each event is one line.
  destination.on('drop', (text: string) => options.onDrop?.(text.split('\n').length - 1));
  const render =
    options.format === 'ocsf'
      ? (event: AuditEvent) => JSON.stringify(toOcsf(event, options.ocsf))
      : (event: AuditEvent) => JSON.stringify(event);
  return {
    write: (event) => destination.write(`${render(event)}\n`),
    // end() writes out what is buffered before it closes; it leaves fds 1 and 2 open.
    close: () =>
      new Promise<void>((resolve, reject) => {
        destination.once('error', (error: Error) => reject(new Error(`close event log ${target}: ${error.message}`)));
        destination.once('close', () => resolve());
        destination.end();
      }),
  };
}
