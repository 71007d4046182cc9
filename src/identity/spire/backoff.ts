/** Exponential backoff for reconnecting to SPIRE. */

export interface BackoffOptions {
  /** Delay before the first retry, in milliseconds. Defaults to 500. */
  initialDelayMs?: number;
  /** Upper bound of any delay, in milliseconds. Defaults to 30 000. */
  maxDelayMs?: number;
  /** Factor between consecutive delays. Defaults to 2. */
  multiplier?: number;
  /**
   * Fraction of each delay that is randomized, from 0 to 1, so that many clients restarting
   * together do not retry in step. Defaults to 0.2: a delay d becomes a value in [0.8 d, d].
   */
  jitter?: number;
}

/** Produces growing delays: initial, initial * multiplier, ... up to the maximum. */
export class ExponentialBackoff {
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly multiplier: number;
  private readonly jitter: number;
  private nextDelayMs: number;
  private attemptCount = 0;

  constructor(options: BackoffOptions = {}) {
    this.initialDelayMs = options.initialDelayMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 30_000;
    this.multiplier = options.multiplier ?? 2;
    this.jitter = options.jitter ?? 0.2;
    if (!(this.initialDelayMs > 0) || !(this.maxDelayMs >= this.initialDelayMs)) {
      throw new RangeError(
        `invalid backoff delays: initial ${this.initialDelayMs} ms, maximum ${this.maxDelayMs} ms; ` +
          'expected 0 < initial <= maximum',
      );
    }
    if (!(this.multiplier >= 1) || !(this.jitter >= 0 && this.jitter <= 1)) {
      throw new RangeError(
        `invalid backoff multiplier ${this.multiplier} or jitter ${this.jitter}; ` +
          'expected multiplier >= 1 and jitter between 0 and 1',
      );
    }
    this.nextDelayMs = this.initialDelayMs;
  }

  /** Number of delays handed out since the last reset. */
  get attempts(): number {
    return this.attemptCount;
  }

  /** Returns the next delay in milliseconds and grows the one after it. */
  next(): number {
    const base = this.nextDelayMs;
    this.nextDelayMs = Math.min(this.maxDelayMs, base * this.multiplier);
    this.attemptCount++;
    return Math.round(base * (1 - this.jitter * Math.random()));
  }

  /** Starts again from the initial delay, after a success. */
  reset(): void {
    this.nextDelayMs = this.initialDelayMs;
    this.attemptCount = 0;
  }
}
