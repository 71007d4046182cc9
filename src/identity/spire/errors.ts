/** Errors of the SPIRE clients and the SPIRE identity source. */

import * as grpc from '@grpc/grpc-js';

/** A gRPC call to SPIRE that failed with a status other than OK. */
export class SpireRpcError extends Error {
  /** gRPC status code, such as `grpc.status.UNAVAILABLE`. */
  readonly code: grpc.status;
  /** Status message from SPIRE or grpc-js. */
  readonly details: string;
  /** Full gRPC method path, such as "/SpiffeWorkloadAPI/FetchX509SVID". */
  readonly method: string;

  constructor(method: string, code: grpc.status, details: string, options?: { cause?: unknown }) {
    super(`${method} failed with ${grpc.status[code] ?? code}: ${details}`, options);
    this.name = 'SpireRpcError';
    this.method = method;
    this.code = code;
    this.details = details;
  }

  /** Wraps an error from a grpc-js call, keeping its status code when it has one. */
  static from(method: string, error: unknown): SpireRpcError {
    if (error instanceof SpireRpcError) {
      return error;
    }
    const serviceError = error as Partial<grpc.ServiceError>;
    const code = typeof serviceError.code === 'number' ? serviceError.code : grpc.status.UNKNOWN;
    const details = serviceError.details ?? (error as Error).message ?? String(error);
    return new SpireRpcError(method, code, details, { cause: error });
  }
}

/**
 * SPIRE is unavailable: the agent's socket is missing or rejects the call, a stream broke, or
 * no response arrived in time. Callers keep the identities they have and try again later.
 */
export class SpireUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SpireUnavailableError';
  }
}
