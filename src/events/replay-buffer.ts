import { AuditEvent } from './audit-event';

/**
 * The most recent events, by sequence number, in a fixed-size ring. Events
 * must arrive with consecutive sequence numbers; the oldest one goes when the
 * ring is full. A capacity of 0 retains nothing.
 */
export class ReplayBuffer {
  private readonly ring: (AuditEvent | undefined)[];
  private start = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 0) {
      throw new RangeError(`invalid replay buffer capacity ${capacity}: expected an integer of 0 or more`);
    }
    this.ring = new Array<AuditEvent | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  /** Sequence number of the oldest retained event, or null when empty. */
  get oldestSeq(): number | null {
    return this.count === 0 ? null : (this.ring[this.start] as AuditEvent).seq;
  }

  /** Sequence number of the newest retained event, or null when empty. */
  get newestSeq(): number | null {
    if (this.count === 0) return null;
    return (this.ring[(this.start + this.count - 1) % this.capacity] as AuditEvent).seq;
  }

  /** Appends an event; throws when its sequence number does not follow the newest one. */
  push(event: AuditEvent): void {
    if (this.capacity === 0) return;
    const newest = this.newestSeq;
    if (newest !== null && event.seq !== newest + 1) {
      throw new RangeError(`replay buffer expected sequence number ${newest + 1}, got ${event.seq}`);
    }
    if (this.count < this.capacity) {
      this.ring[(this.start + this.count) % this.capacity] = event;
      this.count++;
      return;
    }
    this.ring[this.start] = event;
    this.start = (this.start + 1) % this.capacity;
  }

  /** Returns the event with this sequence number, or undefined when it is not retained. */
  get(seq: number): AuditEvent | undefined {
    const oldest = this.oldestSeq;
    if (oldest === null || seq < oldest || seq >= oldest + this.count) return undefined;
    return this.ring[(this.start + (seq - oldest)) % this.capacity];
  }
}
