import { Command, InvalidArgumentError, Option } from 'commander';
import { Action, ACTIONS, AuditEvent, EventType, EVENT_TYPES, Result, RESULTS, Severity, SEVERITIES } from '../events/audit-event';
import { EventFollower } from '../events/event-follower';
import { formatEventRow } from '../events/event-table';
import { toOcsf } from '../events/ocsf';
import { DEFAULT_SOCKET } from './defaults';

export type EventsFormat = 'json' | 'ocsf' | 'table';

export interface EventsOptions {
  socket: string;
  type: EventType[];
  subject?: string;
  subjectId?: string;
  action: Action[];
  result: Result[];
  minSeverity?: Severity;
  sinceSeq?: number;
  format: EventsFormat;
}

/** Output streams of `sigil events`: process.stdout and process.stderr outside tests. */
export interface EventsOutput {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

/** Formats one event as a line of output, with its newline. */
export function renderEvent(event: AuditEvent, format: EventsFormat): string {
  if (format === 'table') return `${formatEventRow(event)}\n`;
  if (format === 'ocsf') return `${JSON.stringify(toOcsf(event))}\n`;
  return `${JSON.stringify(event)}\n`;
}

/**
 * Prints the agent's audit events until stop() or a fatal error, and
 * returns the follower. After a lost connection it reconnects with backoff
 * and resumes after the last event printed, so no event prints twice.
 * Events lost meanwhile appear as loss events.
 */
export function followEvents(
  options: EventsOptions,
  output: EventsOutput = process,
  onFatal: (error: Error) => void = () => (process.exitCode = 1),
): EventFollower {
  const prefix = `sigil events: ${options.socket}`;
  const follower = new EventFollower(
    {
      socketPath: options.socket,
      types: options.type,
      subjectPrefix: options.subject,
      subjectId: options.subjectId,
      actions: options.action,
      results: options.result,
      minSeverity: options.minSeverity,
      sinceSeq: options.sinceSeq,
      batched: true,
    },
    {
      onEvent: (event) => output.stdout.write(renderEvent(event, options.format)),
      onRetry: (error, attempt, delayMs) => {
        const { runId, nextSeq } = follower.position;
        const resume = nextSeq > 0 ? ` from sequence number ${nextSeq} of run ${runId || '(unknown)'}` : '';
        output.stderr.write(`${prefix}: ${error.message}; reconnect attempt ${attempt} in ${delayMs} ms${resume}\n`);
      },
      onConnected: (runId, lastSeq) => {
        if (follower.position.nextSeq > 0 && follower.position.runId !== runId && follower.position.runId !== '') {
          output.stderr.write(`${prefix}: connected to a new agent run ${runId} (last sequence number ${lastSeq})\n`);
        }
      },
      onFatal: (error) => {
        output.stderr.write(`${prefix}: ${error.message}\n`);
        onFatal(error);
      },
    },
  );
  follower.start();
  return follower;
}

function oneOf<T extends string>(allowed: readonly T[]): (value: string, previous?: T[]) => T[] {
  return (value, previous = []) => {
    if (!allowed.includes(value as T)) throw new InvalidArgumentError(`expected one of ${allowed.join(', ')}`);
    return [...previous, value as T];
  };
}

function sequenceNumber(value: string): number {
  const seq = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(seq) || seq < 1) {
    throw new InvalidArgumentError('expected a sequence number of 1 or more');
  }
  return seq;
}

function spiffeId(value: string): string {
  if (!value.startsWith('spiffe://')) throw new InvalidArgumentError('expected a SPIFFE ID such as spiffe://example.org/web');
  return value;
}

/** Adds `sigil events` to the program. */
export function registerEventsCommand(program: Command): Command {
  return program
    .command('events')
    .description(
      "print the agent's audit event stream; reconnects when the agent restarts and resumes after the last event printed",
    )
    .option('-s, --socket <path>', 'unix socket of the audit gRPC service', DEFAULT_SOCKET)
    .option('-t, --type <type>', `event type to show (${EVENT_TYPES.join(', ')}), repeatable`, oneOf(EVENT_TYPES))
    .option('--subject <spiffe-id>', 'only events whose subject SPIFFE ID is this one or below it', spiffeId)
    .option('--subject-id <spiffe-id>', 'only events whose subject SPIFFE ID is exactly this one', spiffeId)
    .option('--action <action>', `policy action to show (${ACTIONS.join(', ')}), repeatable`, oneOf(ACTIONS))
    .option('--result <result>', `result to show (${RESULTS.join(', ')}), repeatable`, oneOf(RESULTS))
    .addOption(new Option('--min-severity <severity>', 'lowest severity to show').choices([...SEVERITIES]))
    .option(
      '--since-seq <n>',
      "start with the agent's retained events from sequence number n (default: live events only)",
      sequenceNumber,
    )
    .addOption(new Option('-o, --format <format>', 'output format').choices(['json', 'ocsf', 'table']).default('json'))
    .action((raw: Partial<EventsOptions> & { socket: string; format: EventsFormat }) => {
      const follower = followEvents({
        ...raw,
        type: raw.type ?? [],
        action: raw.action ?? [],
        result: raw.result ?? [],
      });
      process.once('SIGINT', () => follower.stop());
      process.once('SIGTERM', () => follower.stop());
    });
}
