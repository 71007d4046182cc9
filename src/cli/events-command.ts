import { Command, InvalidArgumentError, Option } from 'commander';
import { Action, ACTIONS, AuditEvent, EventType, EVENT_TYPES, Result, RESULTS, Severity, SEVERITIES } from '../events/audit-event';
import { EventFollower } from '../events/event-follower';
import { formatEventRow } from '../events/event-table';
import { toOcsf } from '../events/ocsf';
import { SvidChannelCredentials } from '../events/mtls-client';
import { SpiffeIdAllowList } from '../identity/spiffe-id-allow-list';
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
  /** The audit service on TCP with mTLS, in place of socket. */
  tls?: { target: string; credentials: SvidChannelCredentials };
}

/** Output streams of `sigil events`: process.stdout and process.stderr outside tests. */
export interface EventsOutput {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

/**
 * Characters that a terminal acts on or that reorder or break a line: C0 and
 * C1 controls, DEL, the Unicode line and paragraph separators and the bidi
 * overrides and isolates. Paths and names in events may contain any of them.
 */
const TERMINAL_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** Replaces each unsafe character with its JSON escape, which JSON parsers read back unchanged. */
function escapeUnsafe(text: string): string {
  return text.replace(
    TERMINAL_UNSAFE,
    (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/**
 * Formats one event as a line of output, with its newline. Control
 * characters are escaped, so a hostile executable or file name can neither
 * forge a line nor send escape sequences to the terminal.
 */
export function renderEvent(event: AuditEvent, format: EventsFormat): string {
  if (format === 'table') return `${escapeUnsafe(formatEventRow(event))}\n`;
  if (format === 'ocsf') return `${escapeUnsafe(JSON.stringify(toOcsf(event)))}\n`;
  return `${escapeUnsafe(JSON.stringify(event))}\n`;
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
  const { tls } = options;
  const prefix = `sigil events: ${tls ? `tcp://${tls.target}` : options.socket}`;
  const follower = new EventFollower(
    {
      socketPath: options.socket,
      tls: tls && {
        target: tls.target,
        credentials: () => tls.credentials.channelCredentials(),
        channelOptions: () => tls.credentials.channelOptions(),
      },
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
        // A server with the wrong SPIFFE ID stays wrong: retrying would only repeat the failure.
        const identityError = tls?.credentials.takeServerIdentityError();
        if (identityError) {
          follower.stop();
          output.stderr.write(`${prefix}: ${identityError.message}\n`);
          onFatal(identityError);
          return;
        }
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
    .option(
      '--server <tcp://host:port>',
      "the agent's audit service on TCP with mTLS (sigil run --grpc-listen), in place of --socket",
    )
    .option(
      '--spire-workload-api <address>',
      'SPIFFE Workload API (unix:///path) that issues this client its X.509-SVID, with --server ' +
        '(default: $SPIFFE_ENDPOINT_SOCKET)',
    )
    .option(
      '--server-id <spiffe-id>',
      'SPIFFE ID the server must present, repeatable, with --server',
      collectSpiffeId,
    )
    .option(
      '--any-server-in-trust-domain',
      "accept a server with any SPIFFE ID in this client's trust domain, in place of --server-id",
    )
    .action(async (raw: RawEventsFlags, command: Command) => {
      const options = {
        ...raw,
        type: raw.type ?? [],
        action: raw.action ?? [],
        result: raw.result ?? [],
      };
      const socketGiven = command.getOptionValueSource('socket') === 'cli';
      let tls: EventsOptions['tls'];
      try {
        tls = await connectTcpFlags(raw, socketGiven);
      } catch (error) {
        process.stderr.write(`sigil events: ${(error as Error).message}\n`);
        process.exitCode = 1;
        return;
      }
      const follower = followEvents({ ...options, tls }, process, () => {
        tls?.credentials.close();
        process.exitCode = 1;
      });
      const stop = () => {
        follower.stop();
        tls?.credentials.close();
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}

type RawEventsFlags = Partial<EventsOptions> & TcpFlags & { socket: string; format: EventsFormat };

/** The `sigil events` flags of the TCP transport. */
interface TcpFlags {
  server?: string;
  spireWorkloadApi?: string;
  serverId?: string[];
  anyServerInTrustDomain?: boolean;
}

function collectSpiffeId(value: string, previous: string[] = []): string[] {
  return [...previous, spiffeId(value)];
}

/**
 * Checks the TCP flags and, with --server, fetches this client's SVID. Returns undefined for the
 * unix socket. Throws Error naming the flag and the fix.
 */
async function connectTcpFlags(
  flags: TcpFlags,
  socketGiven: boolean,
): Promise<EventsOptions['tls']> {
  const serverIds = flags.serverId ?? [];
  if (flags.server === undefined) {
    if (serverIds.length > 0 || flags.anyServerInTrustDomain || flags.spireWorkloadApi) {
      throw new Error(
        '--server-id, --any-server-in-trust-domain and --spire-workload-api need --server tcp://host:port',
      );
    }
    return undefined;
  }
  if (socketGiven) {
    throw new Error('--socket and --server name two different servers: give one of them');
  }
  const target = parseServerAddress(flags.server);
  if (serverIds.length === 0 && !flags.anyServerInTrustDomain) {
    throw new Error(
      `--server ${flags.server} needs --server-id <spiffe-id>, the SPIFFE ID of the agent, ` +
        "or --any-server-in-trust-domain to accept any server of this client's trust domain",
    );
  }
  if (serverIds.length > 0 && flags.anyServerInTrustDomain) {
    throw new Error(
      '--server-id and --any-server-in-trust-domain exclude each other: give one of them',
    );
  }
  const expectedServer = flags.anyServerInTrustDomain
    ? ({ kind: 'trust-domain' } as const)
    : ({ kind: 'ids', allowList: SpiffeIdAllowList.parse(serverIds) } as const);
  // A bare absolute path is accepted as the socket path, for convenience.
  const workloadApi = flags.spireWorkloadApi?.startsWith('/')
    ? `unix://${flags.spireWorkloadApi}`
    : flags.spireWorkloadApi;
  try {
    const credentials = await SvidChannelCredentials.create({ workloadApi, expectedServer });
    return { target, credentials };
  } catch (error) {
    throw new Error(
      `cannot get this client's X.509-SVID for --server ${flags.server}: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

/** Parses `tcp://host:port` into a gRPC target. Throws Error naming the value. */
export function parseServerAddress(value: string): string {
  const usage = 'expected tcp://host:port, such as tcp://127.0.0.1:7443';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`invalid --server ${JSON.stringify(value)}: ${usage}`);
  }
  const hasPath = url.pathname !== '' && url.pathname !== '/';
  const extra = hasPath || url.search !== '' || url.hash !== '' || url.username !== '';
  if (url.protocol !== 'tcp:' || url.hostname === '' || url.port === '' || extra) {
    throw new Error(`invalid --server ${JSON.stringify(value)}: ${usage}`);
  }
  return url.host;
}
