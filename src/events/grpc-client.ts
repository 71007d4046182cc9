import * as grpc from '@grpc/grpc-js';
import { AuditEvent, EventType } from './audit-event';
import { auditClientConstructor } from './audit-proto';

export interface WatchOptions {
  socketPath: string;
  types?: EventType[];
  subjectPrefix?: string;
}

/**
 * Opens a Watch stream on the agent's audit socket. onEvent gets each event;
 * the returned stream emits 'error' (a gRPC status error) and 'end'. Cancel
 * it with stream.cancel().
 */
export function watchEvents(
  options: WatchOptions,
  onEvent: (event: AuditEvent) => void,
): grpc.ClientReadableStream<AuditEvent> {
  const Client = auditClientConstructor();
  const client = new Client(`unix://${options.socketPath}`, grpc.credentials.createInsecure());
  const stream = client.watch({
    types: options.types ?? [],
    subjectPrefix: options.subjectPrefix ?? '',
  }) as grpc.ClientReadableStream<AuditEvent>;
  stream.on('data', (event: AuditEvent) => onEvent(event));
  stream.on('end', () => client.close());
  stream.on('error', () => client.close());
  return stream;
}
