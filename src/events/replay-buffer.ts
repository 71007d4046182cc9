import {
  Action,
  AuditEvent,
  EventFilter,
  EventType,
  matchesFields,
  Result,
  Severity,
} from './audit-event';
import { encodeEvent, encodingLossEvent } from './event-encoder';

/** A retained event: its sequence number, its sigil.audit.v1.Event bytes and the fields filters read. */
export interface RetainedEvent {
  seq: number;
  bytes: Buffer;
  type: EventType;
  subjectId: string;
  action: Action | undefined;
  result: Result | undefined;
  severity: Severity;
}

/**
 * The most recent events, by sequence number, in a fixed-size ring. Events
 * must arrive with consecutive sequence numbers; the oldest one goes when the
 * ring is full. A capacity of 0 retains nothing.
 *
 * The ring keeps each event's protobuf encoding and the fields that Watch
 * filters read, not the event object. Each slot stores references to
 * strings and encoder slabs that outlive the event anyway, so a published
 * event becomes garbage in the young generation. With event objects in the
 * ring, each one was promoted to the old generation: in one pair of runs of
 * bench/events-kernel.ts at 200,000 events/s and a load average of 8, the
 * agent used 13% less CPU per event with `--replay-buffer 0`.
 */
export class ReplayBuffer {
  private readonly slabs: (ArrayBufferLike | undefined)[];
  private readonly offsets: Uint32Array;
  private readonly lengths: Uint32Array;
  private readonly types: (EventType | undefined)[];
  private readonly subjects: (string | undefined)[];
  private readonly actions: (Action | undefined)[];
  private readonly results: (Result | undefined)[];
  private readonly severities: (Severity | undefined)[];
  private start = 0;
  private count = 0;
  /** Sequence number of the slot at start. */
  private firstSeq = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 0) {
      throw new RangeError(
        `invalid replay buffer capacity ${capacity}: expected an integer of 0 or more`,
      );
    }
    this.slabs = new Array<ArrayBufferLike | undefined>(capacity);
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.types = new Array<EventType | undefined>(capacity);
    this.subjects = new Array<string | undefined>(capacity);
    this.actions = new Array<Action | undefined>(capacity);
    this.results = new Array<Result | undefined>(capacity);
    this.severities = new Array<Severity | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  /** Sequence number of the oldest retained event, or null when empty. */
  get oldestSeq(): number | null {
    return this.count === 0 ? null : this.firstSeq;
  }

  /** Sequence number of the newest retained event, or null when empty. */
  get newestSeq(): number | null {
    return this.count === 0 ? null : this.firstSeq + this.count - 1;
  }

  /**
   * Appends an event, encoding it unless it was encoded before. An event
   * that cannot be encoded is retained as its encodingLossEvent. Throws when
   * its sequence number does not follow the newest one.
   */
  push(event: AuditEvent): void {
    if (this.capacity === 0) return;
    const newest = this.newestSeq;
    if (newest !== null && event.seq !== newest + 1) {
      throw new RangeError(
        `replay buffer expected sequence number ${newest + 1}, got ${event.seq}`,
      );
    }
    let slot: number;
    if (this.count < this.capacity) {
      if (this.count === 0) this.firstSeq = event.seq;
      slot = (this.start + this.count) % this.capacity;
      this.count++;
    } else {
      slot = this.start;
      this.start = (this.start + 1) % this.capacity;
      this.firstSeq++;
    }
    let retained = event;
    let bytes: Buffer;
    try {
      bytes = encodeEvent(event);
    } catch (error) {
      retained = encodingLossEvent(event, error);
      bytes = encodeEvent(retained);
    }
    this.slabs[slot] = bytes.buffer;
    this.offsets[slot] = bytes.byteOffset;
    this.lengths[slot] = bytes.length;
    this.types[slot] = retained.type;
    this.subjects[slot] = retained.subject?.spiffeId ?? '';
    this.actions[slot] = retained.action;
    this.results[slot] = retained.result;
    this.severities[slot] = retained.severity;
  }

  /** Returns the slot of a sequence number, or -1 when it is not retained. */
  private slotOf(seq: number): number {
    if (this.count === 0 || seq < this.firstSeq || seq >= this.firstSeq + this.count) return -1;
    return (this.start + (seq - this.firstSeq)) % this.capacity;
  }

  /** Returns whether the event with this sequence number is retained and passes filter. */
  matches(seq: number, filter: EventFilter): boolean {
    const slot = this.slotOf(seq);
    if (slot < 0) return false;
    return matchesFields(
      filter,
      this.types[slot] as EventType,
      this.subjects[slot] as string,
      this.actions[slot],
      this.results[slot],
      this.severities[slot] as Severity,
    );
  }

  /** Returns the encoding of the event with this sequence number, or undefined when it is not retained. */
  bytes(seq: number): Buffer | undefined {
    const slot = this.slotOf(seq);
    if (slot < 0) return undefined;
    return Buffer.from(this.slabs[slot] as ArrayBuffer, this.offsets[slot], this.lengths[slot]);
  }

  /** Returns the retained event with this sequence number, or undefined when it is not retained. */
  get(seq: number): RetainedEvent | undefined {
    const slot = this.slotOf(seq);
    if (slot < 0) return undefined;
    return {
      seq,
      bytes: this.bytes(seq) as Buffer,
      type: this.types[slot] as EventType,
      subjectId: this.subjects[slot] as string,
      action: this.actions[slot],
      result: this.results[slot],
      severity: this.severities[slot] as Severity,
    };
  }
}
