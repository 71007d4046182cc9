/**
 * A server-streaming gRPC call that is opened again with exponential backoff after it fails.
 *
 * SPIRE's streams carry the full current state in every message, so a reopened stream needs no
 * resume position: its first message replaces whatever the caller had.
 */

import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { BackoffOptions, ExponentialBackoff } from './backoff';
import { SpireRpcError } from './errors';

/** A failure that the stream will retry after `delayMs`. */
export interface StreamRetry {
  error: SpireRpcError;
  /** 1 for the first retry after a success or after start. */
  attempt: number;
  delayMs: number;
}

/** Reason that a stream stopped for good. */
export type StreamEnd =
  | { reason: 'closed' }
  | { reason: 'failed'; error: SpireRpcError };

export type ReconnectingStreamEvents<T> = {
  /** A decoded message. */
  update: [update: T];
  /** The first message after the stream was opened or reopened. Emitted before 'update'. */
  connected: [];
  retry: [retry: StreamRetry];
  /** Emitted once, after close() or after a failure that is not retried. */
  end: [end: StreamEnd];
};

export interface ReconnectingStreamOptions<Raw, T> {
  /** Full gRPC method path, for error messages. */
  method: string;
  /**
   * Opens the call. Returning null stops the stream as closed, for owners that find at retry
   * time that the stream is no longer wanted. A throw ends the stream as failed.
   */
  open: () => grpc.ClientReadableStream<Raw> | null;
  /** Turns a wire message into the emitted value. A throw counts as a failed stream. */
  decode: (raw: Raw) => T;
  /** Null disables retries: the first failure ends the stream. */
  backoff: BackoffOptions | null;
  /** Whether a failure with this status is retried; defaults to `isRetryableStatus`. */
  isRetryable?: (code: grpc.status) => boolean;
  /** Called with each failure, before the retry or end is emitted. */
  onFailure?: (error: SpireRpcError) => void;
}

/**
 * Returns whether a Workload API or Delegated Identity API stream failure may be retried. The
 * SPIFFE Workload Endpoint standard forbids retrying InvalidArgument and Unimplemented, which a
 * retry cannot fix. Everything else, PermissionDenied included, can be eventual consistency.
 */
export function isRetryableStatus(code: grpc.status): boolean {
  return code !== grpc.status.INVALID_ARGUMENT && code !== grpc.status.UNIMPLEMENTED;
}

export class ReconnectingStream<T> extends EventEmitter<ReconnectingStreamEvents<T>> {
  private readonly options: ReconnectingStreamOptions<unknown, T>;
  private readonly backoff: ExponentialBackoff | null;
  private readonly isRetryable: (code: grpc.status) => boolean;
  private call: grpc.ClientReadableStream<unknown> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private started = false;
  private ended = false;

  private constructor(options: ReconnectingStreamOptions<unknown, T>) {
    super();
    this.options = options;
    this.backoff = options.backoff === null ? null : new ExponentialBackoff(options.backoff);
    this.isRetryable = options.isRetryable ?? isRetryableStatus;
  }

  /** Creates a stream; call start() to open it. */
  static create<Raw, T>(options: ReconnectingStreamOptions<Raw, T>): ReconnectingStream<T> {
    // The wire type only links `open` to `decode`, so it is erased once they are checked.
    return new ReconnectingStream<T>(options as unknown as ReconnectingStreamOptions<unknown, T>);
  }

  /** Whether the stream stopped for good. */
  get isEnded(): boolean {
    return this.ended;
  }

  /** Opens the stream. Events are emitted asynchronously, so listeners may be added after. */
  start(): this {
    if (!this.started) {
      this.started = true;
      setImmediate(() => this.openCall());
    }
    return this;
  }

  /** Cancels the call and any pending retry, then emits 'end' with reason 'closed'. */
  close(): void {
    this.finish({ reason: 'closed' });
  }

  private openCall(): void {
    this.retryTimer = null;
    if (this.ended) {
      return;
    }
    let call: grpc.ClientReadableStream<unknown> | null;
    try {
      call = this.options.open();
    } catch (error) {
      // open() throws only when the call cannot be made at all (a closed client), which no
      // retry fixes.
      this.finish({ reason: 'failed', error: SpireRpcError.from(this.options.method, error) });
      return;
    }
    if (call === null) {
      this.finish({ reason: 'closed' });
      return;
    }
    this.call = call;
    let receivedMessage = false;

    call.on('data', (raw: unknown) => {
      if (this.call !== call) {
        return;
      }
      let message: T;
      try {
        message = this.options.decode(raw);
      } catch (error) {
        const failure = new SpireRpcError(
          this.options.method,
          grpc.status.INTERNAL,
          `cannot decode a message: ${(error as Error).message}`,
          { cause: error },
        );
        this.handleFailure(call, failure);
        return;
      }
      if (!receivedMessage) {
        receivedMessage = true;
        this.backoff?.reset();
        this.emit('connected');
      }
      // A 'connected' listener may have closed the stream.
      if (this.call === call) {
        this.emit('update', message);
      }
    });
    // grpc-js emits 'error' for a non-OK status and then 'status'. The 'error' listener keeps a
    // failure from being thrown as an unhandled event.
    call.on('error', () => undefined);
    call.on('status', (status: grpc.StatusObject) => {
      if (this.call !== call) {
        return;
      }
      const failure =
        status.code === grpc.status.OK
          ? new SpireRpcError(this.options.method, grpc.status.UNAVAILABLE, 'the server ended the stream')
          : new SpireRpcError(this.options.method, status.code, status.details);
      this.handleFailure(call, failure);
    });
  }

  private handleFailure(call: grpc.ClientReadableStream<unknown>, error: SpireRpcError): void {
    if (this.ended) {
      return;
    }
    this.call = null;
    call.cancel();
    this.options.onFailure?.(error);
    if (this.ended) {
      return;
    }
    if (this.backoff === null || !this.isRetryable(error.code)) {
      this.finish({ reason: 'failed', error });
      return;
    }
    const delayMs = this.backoff.next();
    this.retryTimer = setTimeout(() => this.openCall(), delayMs);
    this.emit('retry', { error, attempt: this.backoff.attempts, delayMs });
  }

  private finish(end: StreamEnd): void {
    if (this.ended) {
      return;
    }
    this.ended = true;
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    const call = this.call;
    this.call = null;
    call?.cancel();
    this.emit('end', end);
  }
}
