import * as grpc from '@grpc/grpc-js';
import { Action, AuditEvent, EventType, Result, Severity } from './audit-event';
import { auditClientConstructor } from './audit-proto';
import { eventFromWire } from './wire-format';

/** A TCP server with TLS credentials, in place of the unix socket. */
export interface TlsServer {
  /** gRPC target, such as 127.0.0.1:7443. */
  target: string;
  /** Called for each new channel, so that a reconnect uses the current certificates. */
  credentials: () => grpc.ChannelCredentials;
  channelOptions?: () => grpc.ChannelOptions;
}

export interface WatchOptions {
  /** Unix socket of the audit service; not used when tls is set. */
  socketPath: string;
  tls?: TlsServer;
  types?: EventType[];
  subjectPrefix?: string;
  subjectId?: string;
  actions?: Action[];
  results?: Result[];
  minSeverity?: Severity;
  /** First sequence number to replay; 0 or absent for live events only. */
  sinceSeq?: number;
  /** Agent run that sinceSeq belongs to. */
  runId?: string;
  /** Use WatchBatches, several events per message, for high event rates. */
  batched?: boolean;
}

/**
 * Maximum size of one received message; grpc-js's default is 4 MiB. The
 * agent closes a batch at 1 MiB, so a batch stays below 4 MiB, and this
 * limit leaves room for agents that batch differently.
 */
const MAX_RECEIVE_BYTES = 64 * 1024 * 1024;

/**
 * Opens a Watch stream on the agent's audit socket. onEvent receives each
 * event in the AuditEvent shape (see eventFromWire). The returned stream
 * emits 'metadata' when the subscription is live, then 'error' (a gRPC
 * status error) or 'end'. Cancel it with stream.cancel().
 */
export function watchEvents(
  options: WatchOptions,
  onEvent: (event: AuditEvent) => void,
): grpc.ClientReadableStream<AuditEvent> {
  const Client = auditClientConstructor();
  const { tls } = options;
  const client = tls
    ? new Client(tls.target, tls.credentials(), {
        ...tls.channelOptions?.(),
        'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
      })
    : new Client(`unix://${options.socketPath}`, grpc.credentials.createInsecure(), {
        'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
      });
  const request = {
    types: options.types ?? [],
    subjectPrefix: options.subjectPrefix ?? '',
    subjectId: options.subjectId ?? '',
    actions: options.actions ?? [],
    results: options.results ?? [],
    minSeverity: options.minSeverity ?? '',
    sinceSeq: String(options.sinceSeq ?? 0),
    runId: options.runId ?? '',
  };
  let stream: grpc.ClientReadableStream<AuditEvent>;
  if (options.batched) {
    stream = client.watchBatches(request) as grpc.ClientReadableStream<AuditEvent>;
    stream.on('data', (batch: { events: Record<string, unknown>[] }) => {
      for (const event of batch.events) onEvent(eventFromWire(event));
    });
  } else {
    stream = client.watch(request) as grpc.ClientReadableStream<AuditEvent>;
    stream.on('data', (event: Record<string, unknown>) => onEvent(eventFromWire(event)));
  }
  stream.on('end', () => client.close());
  stream.on('error', () => client.close());
  return stream;
}
