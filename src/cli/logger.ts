import pino, { Logger } from 'pino';

/** Operational log on stderr, JSON per line; audit events never go here. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { component: 'agent' } }, pino.destination({ dest: 2, sync: true }));
}

/**
 * JSON lines of audit events on stdout ('-') or appended to a file. Written
 * asynchronously, so a slow reader of stdout does not stall the agent.
 */
export function createEventLog(target: string): Logger {
  const dest = target === '-' ? 1 : target;
  return pino(
    { base: null, timestamp: false, formatters: { level: () => ({}) } },
    pino.destination({ dest, sync: false, mkdir: true }),
  );
}
