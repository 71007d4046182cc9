/**
 * SPIRE as Sigil's identity source: keeps the SPIFFE ID of each process that the agent requests
 * current, through one Delegated Identity API subscription per pid on the spire-agent admin
 * socket.
 *
 * Availability is tracked with a SubscribeToX509Bundles stream. Its bundles also validate every
 * SVID before its SPIFFE ID is used. When that stream breaks, the source reports 'unavailable',
 * closes the pid subscriptions, keeps the identities it has, and reopens the stream with
 * exponential backoff. When the stream is back, it reports 'available' and subscribes again for
 * every process it still tracks, so entries deleted or changed meanwhile show up as 'change'.
 */

import { EventEmitter } from 'node:events';
import { readStartTime as readProcStartTime } from '../process-info';
import { BackoffOptions, ExponentialBackoff } from './backoff';
import {
  DelegatedIdentityClient,
  DelegatedX509BundlesUpdate,
  DelegatedX509SvidUpdate,
  PidSubscription,
  PidSubscriptionEnd,
} from './delegated-identity-client';
import { SpireRpcError, SpireUnavailableError } from './errors';
import { ReconnectingStream } from './reconnecting-stream';
import { X509BundleSet } from './x509-bundle';
import { validateX509Svid, X509SvidError } from './x509-svid';

/** Availability of SPIRE, as tracked by the source. */
export type SpireSourceStatus =
  | { state: 'available' }
  | {
      state: 'unavailable';
      error: SpireRpcError;
      /** Retries since SPIRE was last available, starting at 1. */
      attempt: number;
      /** Delay until the next attempt. */
      retryInMs: number;
    };

export type SpireIdentitySourceEvents = {
  /** The SPIFFE ID of a tracked process changed; null when it has none any more. */
  change: [pid: number, spiffeId: string | null];
  status: [status: SpireSourceStatus];
  /** SPIRE sent an SVID that failed validation; it was ignored. */
  'invalid-svid': [pid: number, error: X509SvidError];
};

/** The identity of one tracked process. */
export interface TrackedIdentity {
  /** Null when no registration entry matches the process. */
  spiffeId: string | null;
  /** Start time in clock ticks since boot, which with the pid names one process. */
  startTime: bigint;
}

export interface SpireIdentitySourceOptions {
  /** Path of the spire-agent admin socket (`admin_socket_path` in agent.conf). */
  adminSocketPath: string;
  /** Delays between attempts to reach SPIRE after it became unavailable. */
  backoff?: BackoffOptions;
  /**
   * How long attest() waits for SPIRE's first response, in milliseconds. Defaults to 10 000.
   * spire-agent (v1.13.3) delays the first message of a new subscription until it has minted the
   * SVIDs of every matching entry.
   */
  attestTimeoutMs?: number;
  /** Interval of the exit and pid reuse check of tracked processes, in milliseconds. */
  livenessIntervalMs?: number;
  /** Limit for one received message, in bytes. */
  maxReceiveMessageBytes?: number;
  /** Root of procfs; defaults to /proc. */
  procRoot?: string;
  /** Reads a pid's start time, or null when it has exited; for tests. Defaults to procfs. */
  readStartTime?: (pid: number) => bigint | null;
  /**
   * Picks the one SPIFFE ID that Sigil stores for a process from the IDs of all matching
   * entries. Defaults to the lowest in byte order, so the choice does not depend on the order
   * in which SPIRE lists them.
   */
  selectSpiffeId?: (spiffeIds: readonly string[]) => string | null;
}

type SourceState = 'idle' | 'connecting' | 'available' | 'unavailable' | 'closed';

interface PendingAttestation {
  resolve: (spiffeId: string | null) => void;
  reject: (error: Error) => void;
  promise: Promise<string | null>;
  timer: NodeJS.Timeout;
}

interface TrackedProcess {
  pid: number;
  startTime: bigint;
  /** Undefined until SPIRE has responded once for this process. */
  spiffeId: string | null | undefined;
  subscription: PidSubscription | null;
  pending: PendingAttestation | null;
  retryTimer: NodeJS.Timeout | null;
  backoff: ExponentialBackoff;
}

const DEFAULT_ATTEST_TIMEOUT_MS = 10_000;

export class SpireIdentitySource extends EventEmitter<SpireIdentitySourceEvents> {
  private readonly client: DelegatedIdentityClient;
  private readonly options: SpireIdentitySourceOptions;
  private readonly readStartTime: (pid: number) => bigint | null;
  private readonly selectSpiffeId: (spiffeIds: readonly string[]) => string | null;
  private readonly tracked = new Map<number, TrackedProcess>();
  private state: SourceState = 'idle';
  private bundleStream: ReconnectingStream<DelegatedX509BundlesUpdate> | null = null;
  private bundles: X509BundleSet = new Map();
  private lastError: SpireRpcError | null = null;
  /** Callers of attest() waiting for the first connection. */
  private connectWaiters: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];

  constructor(options: SpireIdentitySourceOptions) {
    super();
    this.options = options;
    this.client = new DelegatedIdentityClient({
      adminSocketPath: options.adminSocketPath,
      backoff: options.backoff,
      maxReceiveMessageBytes: options.maxReceiveMessageBytes,
      procRoot: options.procRoot,
    });
    this.readStartTime = options.readStartTime ?? ((pid) => readProcStartTime(pid, options.procRoot));
    this.selectSpiffeId = options.selectSpiffeId ?? selectLowestSpiffeId;
  }

  /** Whether SPIRE responded on the bundle stream and has not failed since. */
  get available(): boolean {
    return this.state === 'available';
  }

  /** Connects to SPIRE. attest() calls this on first use. */
  start(): void {
    if (this.state !== 'idle') {
      return;
    }
    this.state = 'connecting';
    const stream = this.client.subscribeToX509Bundles();
    this.bundleStream = stream;
    stream.on('update', (update) => {
      this.bundles = update.bundles;
    });
    stream.on('connected', () => this.becomeAvailable());
    stream.on('retry', (retry) => this.becomeUnavailable(retry.error, retry.attempt, retry.delayMs));
    // The bundle stream retries every failure, so it ends only through close().
  }

  /**
   * Returns the SPIFFE ID of process `pid`, or null when no entry matches it or it does not
   * exist. Starts tracking the process: later changes are emitted as 'change' until forget(pid)
   * or its exit. Calling attest() again, for example after an exec, attests the process anew.
   *
   * Rejects with SpireUnavailableError when SPIRE cannot be reached or does not respond within
   * `attestTimeoutMs`. The caller then keeps the identity that the process had. A late response
   * from SPIRE is emitted as 'change'.
   */
  async attest(pid: number): Promise<string | null> {
    if (this.state === 'closed') {
      throw new Error('the SPIRE identity source is closed');
    }
    if (!Number.isSafeInteger(pid) || pid <= 0) {
      throw new RangeError(`invalid pid ${pid}: expected a positive integer`);
    }
    this.start();
    if (this.state === 'connecting') {
      await this.waitForConnection();
    }
    if (this.state !== 'available') {
      throw this.unavailableError();
    }

    const startTime = this.readStartTime(pid);
    const existing = this.tracked.get(pid);
    if (startTime === null) {
      this.forget(pid);
      return null;
    }
    if (existing !== undefined && existing.startTime === startTime && existing.pending !== null) {
      return existing.pending.promise;
    }

    const process: TrackedProcess = {
      pid,
      startTime,
      // The same process keeps its last known ID until the new response replaces it.
      spiffeId: existing?.startTime === startTime ? existing.spiffeId : undefined,
      subscription: null,
      pending: null,
      retryTimer: null,
      backoff: new ExponentialBackoff(this.options.backoff),
    };
    if (existing !== undefined) {
      this.untrack(existing, null);
    }
    this.tracked.set(pid, process);
    process.pending = this.createPending(process);
    this.subscribe(process);
    return process.pending.promise;
  }

  /** Stops tracking `pid`. A pending attest() for it resolves to null. */
  forget(pid: number): void {
    const process = this.tracked.get(pid);
    if (process !== undefined) {
      this.untrack(process, null);
    }
  }

  /** Returns the last known identity of a tracked process, or undefined when not known. */
  identityOf(pid: number): TrackedIdentity | undefined {
    const process = this.tracked.get(pid);
    if (process === undefined || process.spiffeId === undefined) {
      return undefined;
    }
    return { spiffeId: process.spiffeId, startTime: process.startTime };
  }

  /** Returns the last known identities of all tracked processes that SPIRE has responded for. */
  identities(): Map<number, TrackedIdentity> {
    const result = new Map<number, TrackedIdentity>();
    for (const process of this.tracked.values()) {
      if (process.spiffeId !== undefined) {
        result.set(process.pid, { spiffeId: process.spiffeId, startTime: process.startTime });
      }
    }
    return result;
  }

  /** Closes every stream. Pending attest() calls reject. */
  close(): void {
    if (this.state === 'closed') {
      return;
    }
    this.state = 'closed';
    this.bundleStream?.close();
    for (const process of [...this.tracked.values()]) {
      this.untrack(process, new SpireUnavailableError('the SPIRE identity source was closed'));
    }
    this.rejectConnectWaiters(new SpireUnavailableError('the SPIRE identity source was closed'));
    this.client.close();
  }

  private waitForConnection(): Promise<void> {
    return new Promise((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
  }

  private rejectConnectWaiters(error: Error): void {
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const waiter of waiters) {
      waiter.reject(error);
    }
  }

  private unavailableError(): SpireUnavailableError {
    const detail = this.lastError === null ? 'no connection yet' : this.lastError.message;
    return new SpireUnavailableError(
      `SPIRE agent admin socket ${this.options.adminSocketPath} is unavailable: ${detail}`,
      { cause: this.lastError ?? undefined },
    );
  }

  private becomeAvailable(): void {
    if (this.state === 'closed') {
      return;
    }
    this.state = 'available';
    this.lastError = null;
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const waiter of waiters) {
      waiter.resolve();
    }
    this.emit('status', { state: 'available' });
    for (const process of this.tracked.values()) {
      if (process.subscription === null) {
        this.clearRetry(process);
        this.subscribe(process);
      }
    }
  }

  private becomeUnavailable(error: SpireRpcError, attempt: number, retryInMs: number): void {
    if (this.state === 'closed') {
      return;
    }
    this.state = 'unavailable';
    this.lastError = error;
    const unavailable = this.unavailableError();
    this.rejectConnectWaiters(unavailable);
    // The pid streams would fail too. They are reopened once the bundle stream is back, and
    // their identities stay as they are until then.
    for (const process of this.tracked.values()) {
      this.clearRetry(process);
      this.closeSubscription(process);
      this.rejectPending(process, unavailable);
    }
    this.emit('status', { state: 'unavailable', error, attempt, retryInMs });
  }

  private createPending(process: TrackedProcess): PendingAttestation {
    let resolve!: (spiffeId: string | null) => void;
    let reject!: (error: Error) => void;
    const promise = new Promise<string | null>((resolvePromise, rejectPromise) => {
      resolve = resolvePromise;
      reject = rejectPromise;
    });
    const timeoutMs = this.options.attestTimeoutMs ?? DEFAULT_ATTEST_TIMEOUT_MS;
    const timer = setTimeout(() => {
      this.rejectPending(
        process,
        new SpireUnavailableError(`SPIRE did not respond for pid ${process.pid} within ${timeoutMs} ms`),
      );
    }, timeoutMs);
    return { resolve, reject, promise, timer };
  }

  private subscribe(process: TrackedProcess): void {
    const subscription = this.client.subscribeToX509SvidsByPid(process.pid, {
      startTime: process.startTime,
      retry: false,
      livenessIntervalMs: this.options.livenessIntervalMs,
      readStartTime: this.readStartTime,
    });
    process.subscription = subscription;
    subscription.on('update', (update) => {
      if (process.subscription === subscription) {
        this.applyUpdate(process, update);
      }
    });
    subscription.on('end', (end) => {
      if (process.subscription === subscription) {
        process.subscription = null;
        this.handleSubscriptionEnd(process, end);
      }
    });
  }

  private applyUpdate(process: TrackedProcess, update: DelegatedX509SvidUpdate): void {
    process.backoff.reset();
    const validIds: string[] = [];
    for (const svid of update.svids) {
      try {
        validIds.push(validateX509Svid(svid.chain, this.bundles).spiffeId);
      } catch (error) {
        const invalid =
          error instanceof X509SvidError
            ? error
            : new X509SvidError('parse', `validation failed: ${(error as Error).message}`, { cause: error });
        this.emit('invalid-svid', process.pid, invalid);
      }
    }
    const spiffeId = this.selectSpiffeId(validIds);
    const previous = process.spiffeId;
    process.spiffeId = spiffeId;

    const pending = process.pending;
    if (pending !== null) {
      process.pending = null;
      clearTimeout(pending.timer);
      pending.resolve(spiffeId);
      return;
    }
    if (spiffeId !== previous && !(previous === undefined && spiffeId === null)) {
      this.emit('change', process.pid, spiffeId);
    }
  }

  private handleSubscriptionEnd(process: TrackedProcess, end: PidSubscriptionEnd): void {
    if (end.reason === 'closed') {
      return;
    }
    if (end.reason === 'process-exited' || end.reason === 'pid-reused' || end.reason === 'check-failed') {
      // The tracked process is gone, or its start time cannot be read. Any process that now runs
      // under the pid is a new one, which the caller attests on its own.
      this.untrack(process, null);
      return;
    }
    // The stream failed. The last known identity stays. If SPIRE as a whole is unavailable, the
    // bundle stream reports it and resubscribes later; otherwise only this pid is retried.
    this.rejectPending(process, new SpireUnavailableError(`SPIRE stream for pid ${process.pid} failed: ${end.error.message}`, {
      cause: end.error,
    }));
    if (this.state === 'available') {
      const delayMs = process.backoff.next();
      process.retryTimer = setTimeout(() => {
        process.retryTimer = null;
        if (this.state === 'available' && this.tracked.get(process.pid) === process) {
          this.subscribe(process);
        }
      }, delayMs);
    }
  }

  private rejectPending(process: TrackedProcess, error: Error): void {
    const pending = process.pending;
    if (pending !== null) {
      process.pending = null;
      clearTimeout(pending.timer);
      pending.reject(error);
    }
  }

  /**
   * Removes a tracked process. A pending attest() rejects with `error`, or resolves to null
   * when `error` is null.
   */
  private untrack(process: TrackedProcess, error: Error | null): void {
    if (this.tracked.get(process.pid) === process) {
      this.tracked.delete(process.pid);
    }
    this.clearRetry(process);
    this.closeSubscription(process);
    const pending = process.pending;
    if (pending !== null) {
      process.pending = null;
      clearTimeout(pending.timer);
      if (error === null) {
        pending.resolve(null);
      } else {
        pending.reject(error);
      }
    }
  }

  private closeSubscription(process: TrackedProcess): void {
    const subscription = process.subscription;
    process.subscription = null;
    subscription?.close();
  }

  private clearRetry(process: TrackedProcess): void {
    if (process.retryTimer !== null) {
      clearTimeout(process.retryTimer);
      process.retryTimer = null;
    }
  }
}

/** Returns the lowest SPIFFE ID in byte order, or null when there is none. */
export function selectLowestSpiffeId(spiffeIds: readonly string[]): string | null {
  let lowest: string | null = null;
  for (const id of spiffeIds) {
    if (lowest === null || Buffer.compare(Buffer.from(id), Buffer.from(lowest)) < 0) {
      lowest = id;
    }
  }
  return lowest;
}
