import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { AuditEvent, EventFilter, EventType } from './audit-event';
import { auditServiceDefinition } from './audit-proto';
import { EventHub, EventSink } from './event-hub';

const EVENT_TYPES: readonly EventType[] = ['exec', 'connect', 'agent', 'loss'];

/** Events one client may have waiting before further events for it are dropped and counted. */
export const DEFAULT_CLIENT_QUEUE = 10_000;

interface WatchRequest {
  types: string[];
  subjectPrefix: string;
}

/**
 * One Watch stream. Events go straight to the stream while it accepts them.
 * When grpc-js reports a full buffer, events wait in a bounded queue, and
 * events past that queue are dropped and counted. The count reaches the
 * client as a loss event before the next event it receives.
 */
class StreamSink implements EventSink {
  private readonly queue: AuditEvent[] = [];
  private writable = true;
  private lost = 0;

  constructor(
    readonly filter: EventFilter,
    private readonly call: grpc.ServerWritableStream<WatchRequest, AuditEvent>,
    private readonly hub: EventHub,
    private readonly maxQueue: number,
  ) {
    call.on('drain', () => this.flush());
  }

  deliver(event: AuditEvent): void {
    if (this.writable && this.queue.length === 0 && this.lost === 0) {
      this.writable = this.call.write(event);
      return;
    }
    if (this.queue.length >= this.maxQueue) {
      this.lost++;
      return;
    }
    this.queue.push(event);
  }

  private flush(): void {
    this.writable = true;
    if (this.lost > 0) {
      const count = this.lost;
      this.lost = 0;
      this.writable = this.call.write(this.lossEvent(count));
    }
    while (this.writable && this.queue.length > 0) {
      this.writable = this.call.write(this.queue.shift() as AuditEvent);
    }
  }

  private lossEvent(count: number): AuditEvent {
    return {
      seq: 0,
      time: new Date().toISOString(),
      ktimeNs: '0',
      node: this.hub.node,
      type: 'loss',
      loss: { where: 'client-queue', count },
      message: `${count} events were dropped because this client read too slowly`,
    };
  }
}

/** Validates a Watch request; returns an error message or the filter. */
export function parseWatchRequest(request: WatchRequest): EventFilter | string {
  const types = request.types ?? [];
  for (const type of types) {
    if (!EVENT_TYPES.includes(type as EventType)) {
      return `invalid event type ${JSON.stringify(type)}: expected one of ${EVENT_TYPES.join(', ')}`;
    }
  }
  const subjectPrefix = request.subjectPrefix ?? '';
  if (subjectPrefix && !subjectPrefix.startsWith('spiffe://')) {
    return `invalid subject prefix ${JSON.stringify(subjectPrefix)}: expected a SPIFFE ID such as spiffe://example.org/ns`;
  }
  return { types: types as EventType[], subjectPrefix };
}

/**
 * The gRPC audit service on a unix socket, readable and writable by root only.
 * start() rejects when the socket cannot be bound; stop() ends every stream.
 */
export class AuditServer {
  private readonly server = new grpc.Server();

  constructor(
    private readonly hub: EventHub,
    private readonly socketPath: string,
    private readonly maxClientQueue = DEFAULT_CLIENT_QUEUE,
  ) {
    this.server.addService(auditServiceDefinition(), { watch: this.watch.bind(this) });
  }

  private watch(call: grpc.ServerWritableStream<WatchRequest, AuditEvent>): void {
    const filter = parseWatchRequest(call.request);
    if (typeof filter === 'string') {
      const status: Partial<grpc.StatusObject> = { code: grpc.status.INVALID_ARGUMENT, details: filter };
      call.emit('error', status);
      return;
    }
    const unsubscribe = this.hub.subscribe(new StreamSink(filter, call, this.hub, this.maxClientQueue));
    // Headers now, so a client knows its subscription is live before the first event.
    call.sendMetadata(new grpc.Metadata());
    call.on('cancelled', unsubscribe);
    call.on('close', unsubscribe);
    call.on('error', unsubscribe);
  }

  async start(): Promise<void> {
    mkdirSync(dirname(this.socketPath), { recursive: true, mode: 0o700 });
    rmSync(this.socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.server.bindAsync(`unix://${this.socketPath}`, grpc.ServerCredentials.createInsecure(), (error) =>
        error ? reject(new Error(`bind gRPC audit socket ${this.socketPath}: ${error.message}`)) : resolve(),
      );
    });
    chmodSync(this.socketPath, 0o600);
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    this.server.forceShutdown();
    rmSync(this.socketPath, { force: true });
  }
}
