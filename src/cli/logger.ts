import pino, { Logger } from 'pino';

/** Operational log on stderr, JSON per line; audit events never go here. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { component: 'agent' } }, pino.destination({ dest: 2, sync: true }));
}

/** Writer of audit events as JSON lines. */
export interface EventLog {
  write(event: object): void;
}

/**
 * JSON lines of audit events on stdout ('-') or appended to a file, through
 * pino's asynchronous destination, so a slow reader of stdout does not stall
 * the agent. Each line is the event object itself, with no log envelope.
 */
export function createEventLog(target: string): EventLog {
  const destination = pino.destination({ dest: target === '-' ? 1 : target, sync: false, mkdir: true });
  return { write: (event) => destination.write(`${JSON.stringify(event)}\n`) };
}
