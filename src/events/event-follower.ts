import * as grpc from '@grpc/grpc-js';
import { AuditEvent } from './audit-event';
import { watchEvents, WatchOptions } from './grpc-client';
import { LAST_SEQ_HEADER, RUN_ID_HEADER } from './grpc-server';

export interface FollowOptions extends WatchOptions {
  /** Delay before the first reconnect, doubled on each failed attempt; default 200 ms. */
  initialBackoffMs?: number;
  /** Maximum delay between reconnects; default 5000 ms. */
  maxBackoffMs?: number;
}

export interface FollowHandlers {
  onEvent(event: AuditEvent): void;
  /** The stream ended or failed and a reconnect is scheduled after delayMs. */
  onRetry?(error: Error, attempt: number, delayMs: number): void;
  /** A stream is live; runId and lastSeq come from the response headers. */
  onConnected?(runId: string, lastSeq: number): void;
  /** A failure that a retry would repeat, such as an invalid filter; following has stopped. */
  onFatal(error: Error & { code?: number }): void;
}

/** gRPC codes that a reconnect cannot fix. */
const FATAL_CODES = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.OUT_OF_RANGE,
  grpc.status.UNIMPLEMENTED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNAUTHENTICATED,
]);

/**
 * Follows the audit stream across agent restarts. After each event it
 * stores the run id and the next sequence number, and a reconnect requests
 * replay from there. Events published while it was away arrive once and in
 * order. Where the replay buffer or a restart lost events, the server sends
 * a loss event. Reconnects back off exponentially with jitter.
 */
export class EventFollower {
  private stream: grpc.ClientReadableStream<AuditEvent> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private attempt = 0;
  /** Next sequence number expected; 0 until the first stream's headers give where live events start. */
  private nextSeq: number;
  private runId: string;

  constructor(
    private readonly options: FollowOptions,
    private readonly handlers: FollowHandlers,
  ) {
    this.nextSeq = options.sinceSeq ?? 0;
    this.runId = options.runId ?? '';
  }

  /** Run id and next sequence number a reconnect would resume from. */
  get position(): { runId: string; nextSeq: number } {
    return { runId: this.runId, nextSeq: this.nextSeq };
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.stream?.cancel();
    this.stream = null;
  }

  private connect(): void {
    this.timer = null;
    let finished = false;
    const stream = watchEvents({ ...this.options, sinceSeq: this.nextSeq, runId: this.runId }, (event) =>
      this.receive(event),
    );
    this.stream = stream;

    stream.on('metadata', (headers: grpc.Metadata) => {
      this.attempt = 0;
      const runId = String(headers.get(RUN_ID_HEADER)[0] ?? '');
      const lastSeq = Number(headers.get(LAST_SEQ_HEADER)[0] ?? 0);
      // A live-only start resumes, after a reconnect, from the first event after subscribing.
      if (this.nextSeq === 0) {
        this.nextSeq = lastSeq + 1;
        this.runId = runId;
      }
      this.handlers.onConnected?.(runId, lastSeq);
    });
    const finish = (error: Error & { code?: number }) => {
      if (finished) return;
      finished = true;
      if (this.stream === stream) this.stream = null;
      if (this.stopped) return;
      if (error.code !== undefined && FATAL_CODES.has(error.code)) {
        this.stopped = true;
        this.handlers.onFatal(error);
        return;
      }
      this.scheduleReconnect(error);
    };
    stream.on('error', finish);
    stream.on('end', () => finish(new Error('the agent ended the stream')));
  }

  private receive(event: AuditEvent): void {
    if (event.seq > 0) {
      // A duplicate cannot come from a correct server; the check keeps the no-duplicates promise anyway.
      if (event.runId === this.runId && event.seq < this.nextSeq) return;
      this.runId = event.runId;
      this.nextSeq = event.seq + 1;
    }
    this.handlers.onEvent(event);
  }

  private scheduleReconnect(error: Error): void {
    const initial = this.options.initialBackoffMs ?? 200;
    const max = this.options.maxBackoffMs ?? 5_000;
    const base = Math.min(max, initial * 2 ** this.attempt);
    // Up to 20% jitter, so clients of a restarted agent do not reconnect in step.
    const delay = Math.round(base * (0.8 + Math.random() * 0.2));
    this.attempt++;
    this.handlers.onRetry?.(error, this.attempt, delay);
    // onRetry may have stopped following.
    if (this.stopped) return;
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
