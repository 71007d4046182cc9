/**
 * A grpc-js client that is replaced after a connection failure.
 *
 * grpc-js (1.14) keeps a failed channel in TRANSIENT_FAILURE for its own reconnect backoff (up
 * to 120 s) and fails new calls at once meanwhile, so a restarted SPIRE agent would stay
 * unreachable until that backoff ends. A fresh channel connects on the next call instead, which
 * leaves the retry timing to this module's callers.
 */

import * as grpc from '@grpc/grpc-js';

export class RenewableClient {
  private client: grpc.Client | null = null;
  private closed = false;

  constructor(
    private readonly Constructor: grpc.ServiceClientConstructor,
    private readonly target: string,
    private readonly channelOptions: grpc.ChannelOptions = {},
  ) {}

  /** Returns the current client, creating one if there is none. Throws after close(). */
  get(): grpc.Client {
    if (this.closed) {
      throw new Error(`the gRPC client for ${this.target} is closed`);
    }
    if (this.client === null) {
      this.client = new this.Constructor(this.target, grpc.credentials.createInsecure(), this.channelOptions);
    }
    return this.client;
  }

  /**
   * Drops `failed` if it is still the current client, so the next get() connects anew. Calls
   * still open on the old client keep running until they end.
   */
  renew(failed: grpc.Client): void {
    if (this.client === failed) {
      this.client = null;
      failed.close();
    }
  }

  close(): void {
    this.closed = true;
    this.client?.close();
    this.client = null;
  }
}
