import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  Action,
  ACTIONS,
  AuditEvent,
  defaultSeverity,
  EventDraft,
  EventFilter,
  EventType,
  EVENT_TYPES,
  Result,
  RESULTS,
  Severity,
  SEVERITIES,
} from './audit-event';
import { auditServiceDefinition } from './audit-proto';
import {
  encodeEncodedBatchInto,
  encodedBatchSize,
  encodeEvent,
  encodeEventOrLoss,
} from './event-encoder';
import { EventHub, EventSink } from './event-hub';

/**
 * Events one client may have waiting in its own queue before further events
 * for it are dropped and counted. The queue is used only when the hub's
 * replay buffer is off. Otherwise a client that falls behind reads from the
 * replay buffer, and by default it may fall behind by as much as the buffer
 * retains.
 */
export const DEFAULT_CLIENT_QUEUE = 10_000;
/** Maximum events in one WatchBatches message. */
export const MAX_BATCH_EVENTS = 1024;
/**
 * Encoded bytes after which a WatchBatches message goes out, so that a
 * message stays below gRPC's default receive limit of 4 MiB. By the
 * schema's limits the largest event (64 arguments of 4096 bytes and a full
 * ancestry) takes about 270 KB.
 */
export const MAX_BATCH_BYTES = 1024 * 1024;
/** Memory of one WatchBatches message, enough for MAX_BATCH_EVENTS typical events. */
const BATCH_MEMORY_BYTES = 256 * 1024;
/** Message buffers a WatchBatches stream keeps for reuse. */
const MAX_SPARE_BATCHES = 4;
/** Time stop() gives open streams to finish before it closes them by force. */
const SHUTDOWN_GRACE_MS = 2_000;

/** Response header with the agent run id of the stream. */
export const RUN_ID_HEADER = 'sigil-run-id';
/** Response header with the last sequence number published when the stream started. */
export const LAST_SEQ_HEADER = 'sigil-last-seq';

/** Receives the server's stream statistics, such as the agent's metrics. */
export interface StreamObserver {
  streamOpened(): void;
  streamClosed(): void;
  eventsDropped(reason: 'client-queue', count: number): void;
}

export interface AuditServerOptions {
  /**
   * Events that passed its filter one client may have waiting. The default
   * is the replay buffer's capacity, or DEFAULT_CLIENT_QUEUE when replay is
   * off.
   */
  maxClientQueue?: number;
  observer?: StreamObserver;
}

/** A Watch request as @grpc/proto-loader decodes it (uint64 as a decimal string). */
export interface WatchRequest {
  types?: string[];
  subjectPrefix?: string;
  subjectId?: string;
  actions?: string[];
  results?: string[];
  minSeverity?: string;
  sinceSeq?: string | number;
  runId?: string;
}

/** A validated Watch request. */
export interface WatchPlan {
  filter: EventFilter;
  /** First sequence number to replay; 0 for live events only. */
  sinceSeq: number;
  runId: string;
}

function checkValues<T extends string>(
  name: string,
  values: string[] | undefined,
  allowed: readonly T[],
): T[] | string {
  for (const value of values ?? []) {
    if (!allowed.includes(value as T)) {
      return `invalid ${name} ${JSON.stringify(value)}: expected one of ${allowed.join(', ')}`;
    }
  }
  return (values ?? []) as T[];
}

function checkSpiffeId(name: string, value: string): string | undefined {
  if (value && !value.startsWith('spiffe://')) {
    return `invalid ${name} ${JSON.stringify(value)}: expected a SPIFFE ID such as spiffe://example.org/ns`;
  }
  return undefined;
}

/** Validates a Watch request; returns an error message or the plan. */
export function parseWatchRequest(request: WatchRequest): WatchPlan | string {
  const types = checkValues<EventType>('event type', request.types, EVENT_TYPES);
  if (typeof types === 'string') return types;
  const actions = checkValues<Action>('action', request.actions, ACTIONS);
  if (typeof actions === 'string') return actions;
  const results = checkValues<Result>('result', request.results, RESULTS);
  if (typeof results === 'string') return results;

  const minSeverity = request.minSeverity ?? '';
  if (minSeverity && !SEVERITIES.includes(minSeverity as Severity)) {
    return `invalid minimum severity ${JSON.stringify(minSeverity)}: expected one of ${SEVERITIES.join(', ')}`;
  }
  const subjectPrefix = request.subjectPrefix ?? '';
  const subjectId = request.subjectId ?? '';
  const badId = checkSpiffeId('subject prefix', subjectPrefix) ?? checkSpiffeId('subject id', subjectId);
  if (badId) return badId;

  const sinceSeq = Number(request.sinceSeq ?? 0);
  if (!Number.isSafeInteger(sinceSeq) || sinceSeq < 0) {
    return `invalid since_seq ${JSON.stringify(request.sinceSeq)}: expected a sequence number below 2^53`;
  }
  const filter: EventFilter = { types, subjectPrefix, subjectId, actions, results };
  if (minSeverity) filter.minSeverity = minSeverity as Severity;
  return { filter, sinceSeq, runId: request.runId ?? '' };
}

/** A first-in first-out queue with O(1) push and shift; Array.prototype.shift is O(n). */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    // Drop the consumed prefix once it is half of the array, so memory stays bounded.
    if (this.head > 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

type WatchCall = grpc.ServerWritableStream<WatchRequest, unknown>;

/**
 * Writes a stream's events, as encodeEvent encoded them, to its call.
 * write() returns false when grpc-js applies backpressure and the caller
 * must wait for 'drain', as with Writable.write.
 */
interface EventWriter {
  write(bytes: Buffer): boolean;
  /** Writes what is buffered now, for a call about to end. */
  flush(): void;
  close(): void;
}

/** One message per event (Watch), the event's encoding shared with every other client. */
class SingleEventWriter implements EventWriter {
  constructor(private readonly call: WatchCall) {}

  write(bytes: Buffer): boolean {
    return this.call.write(bytes);
  }

  flush(): void {}

  close(): void {}
}

/**
 * Up to MAX_BATCH_EVENTS events per message (WatchBatches). A batch goes out
 * when it has that many events or MAX_BATCH_BYTES of them, or at the end of
 * the current event-loop turn, so an event waits at most one turn. Batches
 * are large because grpc-js writes one message of a stream at a time, and
 * the next after the previous one has reached the socket, which under load
 * is about once per event-loop turn. onDeferredWrite receives the result of
 * a write made at the end of the turn, when no caller is there to receive it.
 */
class BatchEventWriter implements EventWriter {
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private timer: NodeJS.Immediate | null = null;
  /**
   * Memory of earlier messages whose writes completed, for the next ones.
   * grpc-js copies a message into its own frame before it calls the write's
   * callback, so the memory is free again then. A new ArrayBuffer per
   * message counted towards V8's external memory and started garbage
   * collections under load.
   */
  private readonly spare: Buffer[] = [];

  constructor(
    private readonly call: WatchCall,
    private readonly onDeferredWrite: (writable: boolean) => void,
  ) {}

  write(bytes: Buffer): boolean {
    this.batch.push(bytes);
    this.batchBytes += bytes.length;
    if (this.batch.length >= MAX_BATCH_EVENTS || this.batchBytes >= MAX_BATCH_BYTES) {
      return this.writeBatch();
    }
    this.timer ??= setImmediate(() => {
      this.timer = null;
      if (this.batch.length > 0) this.onDeferredWrite(this.writeBatch());
    });
    return true;
  }

  flush(): void {
    if (this.batch.length > 0) this.writeBatch();
  }

  close(): void {
    if (this.timer) clearImmediate(this.timer);
    this.timer = null;
    this.batch = [];
    this.batchBytes = 0;
  }

  private writeBatch(): boolean {
    const events = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    const size = encodedBatchSize(events);
    let memory = this.spare.pop();
    if (memory === undefined || memory.length < size) {
      memory = Buffer.allocUnsafeSlow(Math.max(size, BATCH_MEMORY_BYTES));
    }
    const message = encodeEncodedBatchInto(events, memory);
    return this.call.write(message, () => {
      if (this.spare.length < MAX_SPARE_BATCHES) this.spare.push(memory);
    });
  }
}

/**
 * One Watch stream. It starts in catch-up mode when the request includes
 * since_seq: events come from the hub's replay buffer by sequence number, as
 * fast as the client reads, and live events wait in the buffer meanwhile.
 * Once the cursor passes the newest event the stream is live, and events go
 * straight to the stream while grpc-js accepts them.
 *
 * A live stream that stops accepting writes falls behind. With replay on, it
 * goes back to reading from the replay buffer at the first event it missed
 * (lag mode), so waiting events cost no memory of their own. With replay
 * off, they wait in the stream's own queue. Either way at most maxQueue
 * events that passed the filter wait. Past that bound, the oldest waiting
 * events (in lag mode) or the newest ones (in the queue) are dropped and
 * counted. So are the events that the replay buffer drops before the stream
 * has read them. The
 * count reaches the client as a client-queue loss event at the place of the
 * gap, with the first and last sequence numbers dropped.
 */
class StreamSink implements EventSink {
  /** Encoded events waiting for the stream when replay is off; bytes, so a queued event object can be collected. */
  private readonly queue = new Fifo<Buffer>();
  private readonly writer: EventWriter;
  private writable = true;
  private closed = false;
  private dropped = 0;
  private firstDropped = 0;
  private lastDropped = 0;
  /** Removes this stream from the hub's replay readers while it is in lag mode; null otherwise. */
  private stopLagging: (() => void) | null = null;
  /** Events from cursor on that passed the filter, in lag mode. */
  private lagPending = 0;

  constructor(
    readonly filter: EventFilter,
    call: WatchCall,
    batched: boolean,
    private readonly hub: EventHub,
    private readonly maxQueue: number,
    private readonly observer: StreamObserver | undefined,
    /** Next sequence number to replay; null once the stream is live. */
    private cursor: number | null,
  ) {
    this.writer = batched
      ? new BatchEventWriter(call, (writable) => {
          if (!writable) this.writable = false;
        })
      : new SingleEventWriter(call);
    call.on('drain', () => this.onDrain());
  }

  /** Writes an event made for this client alone, ahead of the replay. */
  writeFirst(event: AuditEvent): void {
    this.write(encodeEvent(event));
  }

  /** Starts the replay, or does nothing for a live-only stream. */
  start(): void {
    this.pump();
  }

  deliver(event: AuditEvent): void {
    if (this.closed) return;
    if (this.cursor !== null) {
      // Catching up: the event waits in the replay buffer for the cursor.
      if (this.stopLagging !== null) this.addLagged();
      return;
    }
    if (this.writable && this.queue.length === 0 && this.dropped === 0) {
      this.write(encodeEventOrLoss(event));
      return;
    }
    if (this.hub.replay.capacity > 0) {
      // publish() put the event into the replay buffer before delivering it.
      this.cursor = event.seq;
      this.lagPending = 0;
      this.stopLagging = this.hub.addReplayReader(this);
      this.addLagged();
      return;
    }
    if (this.queue.length >= this.maxQueue) {
      this.drop(event.seq);
      return;
    }
    if (this.dropped > 0) this.queue.push(encodeEvent(this.takeLossEvent()));
    this.queue.push(encodeEventOrLoss(event));
  }

  /** Counts one more event waiting in lag mode, and drops the oldest waiting past maxQueue. */
  private addLagged(): void {
    this.lagPending++;
    if (this.lagPending <= this.maxQueue) return;
    const replay = this.hub.replay;
    const newest = this.hub.lastSeq;
    let seq = this.cursor as number;
    while (seq <= newest && !replay.matches(seq, this.filter)) seq++;
    if (seq > newest) {
      // Only when an event was retained as its encoding loss event, which the filter may not pass.
      this.lagPending = 0;
      return;
    }
    this.drop(seq);
    this.cursor = seq + 1;
    this.lagPending--;
  }

  /** Accounts for the oldest retained event before the replay buffer drops it, in lag mode. */
  evicting(seq: number): void {
    if (this.cursor !== seq) return;
    if (this.hub.replay.matches(seq, this.filter)) {
      this.drop(seq);
      this.lagPending--;
    }
    this.cursor = seq + 1;
  }

  /** Writes what the writer buffers, before the call ends. */
  flushWriter(): void {
    if (!this.closed) this.writer.flush();
  }

  close(): void {
    this.closed = true;
    this.queue.clear();
    this.writer.close();
    this.stopLagging?.();
    this.stopLagging = null;
  }

  private write(bytes: Buffer): void {
    this.writable = this.writer.write(bytes);
  }

  private drop(seq: number): void {
    if (this.dropped === 0) this.firstDropped = seq;
    this.lastDropped = seq;
    this.dropped++;
    this.observer?.eventsDropped('client-queue', 1);
  }

  private onDrain(): void {
    if (this.closed) return;
    this.writable = true;
    if (this.cursor !== null) this.pump();
    else this.flushQueue();
  }

  private flushQueue(): void {
    while (this.writable && this.queue.length > 0) this.write(this.queue.shift() as Buffer);
    if (this.writable && this.queue.length === 0 && this.dropped > 0) this.write(encodeEvent(this.takeLossEvent()));
  }

  /** Replays from the buffer while the stream accepts writes; turns live when caught up. */
  private pump(): void {
    const replay = this.hub.replay;
    while (this.writable && this.cursor !== null && !this.closed) {
      if (this.dropped > 0) {
        // Lag mode dropped events before the cursor: the loss event goes at their place.
        this.write(encodeEvent(this.takeLossEvent()));
        continue;
      }
      if (this.cursor > this.hub.lastSeq) {
        this.cursor = null;
        this.stopLagging?.();
        this.stopLagging = null;
        break;
      }
      const oldest = replay.oldestSeq ?? this.hub.lastSeq + 1;
      if (this.cursor < oldest) {
        // The buffer no longer contains these: send a gap marker, then go on from the oldest retained.
        this.write(encodeEvent(replayGapEvent(this.hub, this.cursor, oldest - 1)));
        this.cursor = oldest;
        continue;
      }
      const seq = this.cursor++;
      if (!replay.matches(seq, this.filter)) continue;
      if (this.stopLagging !== null) this.lagPending--;
      this.write(replay.bytes(seq) as Buffer);
    }
  }

  private takeLossEvent(): AuditEvent {
    const count = this.dropped;
    const event = perClientEvent(this.hub, {
      type: 'loss',
      ktimeNs: '0',
      loss: { where: 'client-queue', count, firstSeq: this.firstDropped, lastSeq: this.lastDropped },
      message:
        `${count} events (sequence numbers ${this.firstDropped} to ${this.lastDropped} that passed this ` +
        `stream's filter) were dropped because this client read too slowly`,
    });
    this.dropped = 0;
    return event;
  }
}

/** Builds an event for one client: sequence number 0, outside the numbered stream. */
function perClientEvent(hub: EventHub, draft: EventDraft): AuditEvent {
  return {
    seq: 0,
    time: new Date().toISOString(),
    node: hub.node,
    ...draft,
    severity: draft.severity ?? defaultSeverity(draft),
    runId: hub.runId,
  };
}

function replayGapEvent(hub: EventHub, firstSeq: number, lastSeq: number): AuditEvent {
  const count = lastSeq - firstSeq + 1;
  return perClientEvent(hub, {
    type: 'loss',
    ktimeNs: '0',
    loss: { where: 'replay-gap', count, firstSeq, lastSeq },
    message:
      `events ${firstSeq} to ${lastSeq} are no longer in the replay buffer ` +
      `(it holds ${hub.replay.capacity} events); the stream goes on from event ${lastSeq + 1}`,
  });
}

function agentRestartEvent(hub: EventHub, previousRunId: string, sinceSeq: number): AuditEvent {
  return perClientEvent(hub, {
    type: 'loss',
    ktimeNs: '0',
    loss: { where: 'agent-restart', count: 0 },
    message:
      `the agent restarted: run ${previousRunId} ended, and its events from ${sinceSeq} on that this client ` +
      `had not received are lost; run ${hub.runId} follows from its first retained event`,
  });
}

/**
 * Returns the service definition with response serializers that pass bytes
 * through unchanged: the writers send events already encoded by
 * event-encoder.ts, once per event for all clients, in place of
 * proto-loader's conversion and encoding per client and message.
 */
function withEncodedResponses(definition: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const methods = Object.entries(definition).map(([name, method]) => {
    const serialize = method.responseSerialize;
    const passBytes = (value: unknown) => (Buffer.isBuffer(value) ? value : serialize(value));
    return [name, { ...method, responseSerialize: passBytes }];
  });
  return Object.fromEntries(methods);
}

/**
 * The gRPC audit service on a unix socket, readable and writable by root only.
 * start() rejects when the socket cannot be bound; stop() ends every stream.
 */
export class AuditServer {
  private readonly server = new grpc.Server();
  private readonly streams = new Map<WatchCall, StreamSink>();
  private readonly maxClientQueue: number;
  private readonly observer: StreamObserver | undefined;

  /** options may be the client queue size alone, as in earlier versions. */
  constructor(
    private readonly hub: EventHub,
    private readonly socketPath: string,
    options: AuditServerOptions | number = {},
  ) {
    const settings = typeof options === 'number' ? { maxClientQueue: options } : options;
    this.maxClientQueue =
      settings.maxClientQueue ?? (hub.replay.capacity > 0 ? hub.replay.capacity : DEFAULT_CLIENT_QUEUE);
    this.observer = settings.observer;
    this.server.addService(withEncodedResponses(auditServiceDefinition()), {
      watch: (call: WatchCall) => this.watch(call, false),
      watchBatches: (call: WatchCall) => this.watch(call, true),
    });
  }

  private watch(call: WatchCall, batched: boolean): void {
    const plan = parseWatchRequest(call.request);
    if (typeof plan === 'string') {
      call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: plan });
      return;
    }
    const sameRun = plan.runId === '' || plan.runId === this.hub.runId;
    if (plan.sinceSeq > this.hub.lastSeq + 1 && sameRun) {
      const details =
        `since_seq ${plan.sinceSeq} is past the next sequence number ${this.hub.lastSeq + 1} of ` +
        `agent run ${this.hub.runId}; pass the run_id of the events it came from to resume across a restart`;
      call.emit('error', { code: grpc.status.OUT_OF_RANGE, details });
      return;
    }

    let cursor: number | null = null;
    if (plan.sinceSeq > 0) cursor = sameRun ? plan.sinceSeq : 1;
    const sink = new StreamSink(plan.filter, call, batched, this.hub, this.maxClientQueue, this.observer, cursor);
    const unsubscribe = this.hub.subscribe(sink);
    this.streams.set(call, sink);
    this.observer?.streamOpened();

    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      sink.close();
      unsubscribe();
      this.streams.delete(call);
      this.observer?.streamClosed();
    };
    call.on('cancelled', close);
    call.on('close', close);
    call.on('finish', close);
    call.on('error', close);

    // Headers now, so a client knows its subscription is live before the first event.
    const headers = new grpc.Metadata();
    headers.set(RUN_ID_HEADER, this.hub.runId);
    headers.set(LAST_SEQ_HEADER, String(this.hub.lastSeq));
    call.sendMetadata(headers);
    if (!sameRun && plan.sinceSeq > 0) sink.writeFirst(agentRestartEvent(this.hub, plan.runId, plan.sinceSeq));
    sink.start();
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

  /**
   * Serves the same service on a TCP address (`host:port`, or `[v6]:port`) as well, with the
   * given credentials, such as createMtlsServerCredentials. Rejects when the address cannot be
   * bound. stop() closes this port too.
   */
  async bindTcp(target: string, credentials: grpc.ServerCredentials): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.bindAsync(target, credentials, (error) =>
        error ? reject(new Error(`bind gRPC audit TCP listener ${target}: ${error.message}`)) : resolve(),
      );
    });
  }

  /**
   * Ends every stream with status OK, waits up to SHUTDOWN_GRACE_MS for the
   * clients to read what is queued, then closes the rest by force.
   */
  async stop(): Promise<void> {
    for (const [call, sink] of this.streams) {
      sink.flushWriter();
      call.end();
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, SHUTDOWN_GRACE_MS);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.server.forceShutdown();
    rmSync(this.socketPath, { force: true });
  }
}
