/**
 * Protobuf encoding of sigil.audit.v1.Event and EventBatch
 * (proto/sigil/audit/v1/audit.proto), written by hand for the event stream's
 * hot path. The generic path (proto-loader's fromObject, then protobufjs
 * encode) converts every event to a message object first and costs several
 * times more. Each event is encoded once, and its bytes are kept on the event
 * and shared by every stream client.
 *
 * The output is byte for byte what protobufjs 7 produces for the same event
 * through fromObject and encode: fields in field-number order, and every
 * field that the event object defines is written, default values included
 * ('' and 0). test/events/event-encoder.test.ts checks this for a table of
 * events that sets every field of every message.
 */
import {
  AgentStatus,
  AuditEvent,
  Connection,
  EventObject,
  Loss,
  PolicyRef,
  Process,
  ProcessRef,
  Subject,
} from './audit-event';

const VARINT = 0;
const LENGTH_DELIMITED = 2;
/** Bytes reserved for a nested message's length: a varint of up to 2^35. */
const LENGTH_RESERVE = 5;
/** Maximum length of a string copied by a JavaScript loop, which stops at the first non-ASCII unit. */
const ASCII_LOOP_MAX = 64;

/** Encoded field bytes of a frozen message or list of messages, with what encoded them. */
interface EncodedFragment {
  field: number;
  encodeBody: unknown;
  bytes: Buffer;
}

/**
 * Field bytes of frozen nested messages and frozen lists of them, by
 * identity: the event builder shares one frozen subject per SPIFFE ID, one
 * policy reference per rule and one ancestry per process, so their bytes are
 * copied in place of encoded again. A frozen value must be deeply frozen.
 */
const fragments = new WeakMap<object, EncodedFragment>();

/** Bytes of each slab that events are encoded into. */
const SLAB_BYTES = 1 << 20;

/**
 * An encoder into slabs: each event's bytes are a view of the slab they were
 * written into, so no event is copied after encoding, and a slab is freed
 * once no event's bytes refer to it. Bytes before `start` belong to finished
 * events and never change. Offsets kept across a write are relative to
 * `start`, because ensure() moves the event being written to a new slab.
 */
class ProtoWriter {
  buffer = Buffer.allocUnsafeSlow(SLAB_BYTES);
  pos = 0;
  start = 0;

  /** Starts the next event. */
  reset(): void {
    this.start = this.pos;
  }

  /** Returns the bytes written since reset(), a view that later writes leave unchanged. */
  finish(): Buffer {
    const bytes = this.buffer.subarray(this.start, this.pos);
    this.start = this.pos;
    return bytes;
  }

  private ensure(bytes: number): void {
    if (this.pos + bytes <= this.buffer.length) return;
    const pending = this.pos - this.start;
    const slab = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, (pending + bytes) * 2));
    this.buffer.copy(slab, 0, this.start, this.pos);
    this.buffer = slab;
    this.start = 0;
    this.pos = pending;
  }

  /** Writes an unsigned varint of up to 2^53. */
  private varint(value: number): void {
    this.ensure(10);
    const buffer = this.buffer;
    let pos = this.pos;
    let rest = value;
    while (rest > 0x7fffffff) {
      buffer[pos++] = (rest % 128) | 0x80;
      rest = Math.floor(rest / 128);
    }
    while (rest > 0x7f) {
      buffer[pos++] = (rest & 0x7f) | 0x80;
      rest >>>= 7;
    }
    buffer[pos++] = rest;
    this.pos = pos;
  }

  /** Writes a 64-bit varint from its low and high 32 bits, both unsigned. */
  private varint64(low: number, high: number): void {
    this.ensure(10);
    let lo = low;
    let hi = high;
    while (hi !== 0 || lo > 0x7f) {
      this.buffer[this.pos++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    this.buffer[this.pos++] = lo;
  }

  /** Writes a field's key; field numbers below 16 take one byte, the others of Event two. */
  private tag(field: number, wireType: number): void {
    this.ensure(2);
    const key = (field << 3) | wireType;
    if (key < 0x80) {
      this.buffer[this.pos++] = key;
      return;
    }
    this.buffer[this.pos++] = (key & 0x7f) | 0x80;
    this.buffer[this.pos++] = key >>> 7;
  }

  uint32(field: number, value: number | undefined): void {
    if (value === undefined || value === null) return;
    this.tag(field, VARINT);
    this.varint(value >>> 0);
  }

  /**
   * Writes an int32. A negative value takes ten bytes, sign-extended to 64
   * bits as protobuf requires.
   */
  int32(field: number, value: number | undefined): void {
    if (value === undefined || value === null) return;
    this.tag(field, VARINT);
    const signed = value | 0;
    if (signed >= 0) this.varint(signed);
    else this.varint64(signed >>> 0, 0xffffffff);
  }

  /** Writes a uint64 given as a number below 2^53. */
  uint64Number(field: number, value: number | undefined): void {
    if (value === undefined || value === null) return;
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(
        `invalid uint64 field ${field}: ${value} is not an integer from 0 to 2^53 - 1`,
      );
    }
    this.tag(field, VARINT);
    this.varint(value);
  }

  /** Writes a uint64 given as a decimal string, as the event carries values that may pass 2^53. */
  uint64String(field: number, value: string | undefined): void {
    if (value === undefined || value === null) return;
    this.tag(field, VARINT);
    const number = Number(value);
    if (number <= Number.MAX_SAFE_INTEGER && number >= 0 && Number.isInteger(number)) {
      this.varint(number);
      return;
    }
    let big: bigint;
    try {
      big = BigInt(value);
    } catch {
      throw new RangeError(
        `invalid uint64 field ${field}: ${JSON.stringify(value)} is not a decimal integer`,
      );
    }
    if (big < 0n || big >= 1n << 64n) {
      throw new RangeError(`invalid uint64 field ${field}: ${value} is outside 0 to 2^64 - 1`);
    }
    this.varint64(Number(big & 0xffffffffn), Number(big >> 32n));
  }

  string(field: number, value: string | undefined): void {
    if (value === undefined || value === null) return;
    this.tag(field, LENGTH_DELIMITED);
    const length = value.length;
    if (length <= ASCII_LOOP_MAX) {
      // Short ASCII strings: the length is one byte and each unit is one byte.
      this.ensure(1 + length);
      const buffer = this.buffer;
      const start = this.pos + 1;
      let i = 0;
      for (; i < length; i++) {
        const unit = value.charCodeAt(i);
        if (unit >= 0x80) break;
        buffer[start + i] = unit;
      }
      if (i === length) {
        buffer[this.pos] = length;
        this.pos = start + length;
        return;
      }
    }
    const bytes = Buffer.byteLength(value);
    this.varint(bytes);
    this.ensure(bytes);
    this.buffer.write(value, this.pos, bytes, 'utf8');
    this.pos += bytes;
  }

  strings(field: number, values: readonly string[] | undefined): void {
    if (values === undefined || values === null) return;
    for (const value of values) this.string(field, value);
  }

  /** Copies bytes in; TypedArray.set, since Buffer.copy costs more than a short copy itself. */
  raw(bytes: Buffer): void {
    this.ensure(bytes.length);
    this.buffer.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** Copies the cached bytes of a frozen value; returns false when there are none yet. */
  private cached(value: object, field: number, encodeBody: unknown): boolean {
    const fragment = fragments.get(value);
    if (fragment === undefined || fragment.field !== field || fragment.encodeBody !== encodeBody) {
      return false;
    }
    this.raw(fragment.bytes);
    return true;
  }

  /** Keeps the bytes written since start for a frozen value. */
  private keep(value: object, field: number, encodeBody: unknown, start: number): void {
    if (!Object.isFrozen(value)) return;
    const bytes = Buffer.from(this.buffer.subarray(start, this.pos));
    fragments.set(value, { field, encodeBody, bytes });
  }

  /** Writes a nested message, or copies its bytes when it is frozen and was encoded before. */
  message<T extends object>(
    field: number,
    value: T | undefined,
    encodeBody: (writer: ProtoWriter, value: T) => void,
  ): void {
    if (value === undefined || value === null) return;
    if (this.cached(value, field, encodeBody)) return;
    const offset = this.pos - this.start;
    this.messageBody(field, value, encodeBody);
    this.keep(value, field, encodeBody, this.start + offset);
  }

  /**
   * Writes a nested message: its body goes LENGTH_RESERVE bytes ahead, and
   * moves back once its length, and so the length's own size, is known.
   */
  private messageBody<T>(
    field: number,
    value: T,
    encodeBody: (writer: ProtoWriter, value: T) => void,
  ): void {
    this.tag(field, LENGTH_DELIMITED);
    this.ensure(LENGTH_RESERVE);
    const lengthOffset = this.pos - this.start;
    this.pos += LENGTH_RESERVE;
    encodeBody(this, value);
    const lengthAt = this.start + lengthOffset;
    const bodyAt = lengthAt + LENGTH_RESERVE;
    const bodyLength = this.pos - bodyAt;
    // The length goes into the reserved bytes, which hold any length below 2^35.
    let pos = lengthAt;
    let rest = bodyLength;
    while (rest > 0x7f) {
      this.buffer[pos++] = (rest & 0x7f) | 0x80;
      rest >>>= 7;
    }
    this.buffer[pos++] = rest;
    if (pos !== bodyAt) this.buffer.copyWithin(pos, bodyAt, bodyAt + bodyLength);
    this.pos = pos + bodyLength;
  }

  messages<T extends object>(
    field: number,
    values: readonly T[] | undefined,
    encodeBody: (writer: ProtoWriter, value: T) => void,
  ): void {
    if (values === undefined || values === null) return;
    if (this.cached(values, field, encodeBody)) return;
    const offset = this.pos - this.start;
    for (const value of values) this.message(field, value, encodeBody);
    this.keep(values, field, encodeBody, this.start + offset);
  }
}

function encodeSubject(writer: ProtoWriter, subject: Subject): void {
  writer.string(1, subject.spiffeId);
}

function encodeProcessRef(writer: ProtoWriter, ref: ProcessRef): void {
  writer.uint32(1, ref.pid);
  writer.string(2, ref.executable);
  writer.string(3, ref.comm);
  writer.string(4, ref.spiffeId);
}

function encodeProcess(writer: ProtoWriter, process: Process): void {
  writer.uint32(1, process.pid);
  writer.uint32(2, process.ppid);
  writer.uint32(3, process.uid);
  writer.uint32(4, process.gid);
  writer.string(5, process.executable);
  writer.string(6, process.comm);
  writer.uint64String(7, process.cgroupId);
  writer.uint32(8, process.tgid);
  writer.strings(9, process.arguments);
  writer.string(10, process.containerId);
  writer.messages(11, process.ancestry, encodeProcessRef);
  writer.int32(12, process.exitCode);
  writer.uint32(13, process.exitSignal);
}

function encodeConnection(writer: ProtoWriter, connection: Connection): void {
  writer.string(1, connection.family);
  writer.string(2, connection.protocol);
  writer.string(3, connection.address);
  writer.uint32(4, connection.port);
  writer.string(5, connection.peerSpiffeId);
  writer.uint32(6, connection.peerPid);
  writer.string(7, connection.localAddress);
  writer.uint32(8, connection.localPort);
}

function encodePolicy(writer: ProtoWriter, policy: PolicyRef): void {
  writer.string(1, policy.name);
  writer.string(2, policy.rule);
  writer.string(3, policy.reason);
  writer.string(4, policy.severity);
  writer.strings(5, policy.tags);
  writer.string(6, policy.message);
}

function encodeLoss(writer: ProtoWriter, loss: Loss): void {
  writer.string(1, loss.where);
  writer.uint64Number(2, loss.count);
  writer.uint64Number(3, loss.firstSeq);
  writer.uint64Number(4, loss.lastSeq);
  writer.string(5, loss.reason);
}

function encodeObject(writer: ProtoWriter, object: EventObject): void {
  writer.string(1, object.path);
  writer.string(2, object.operation);
  writer.string(3, object.targetPath);
}

function encodeAgent(writer: ProtoWriter, agent: AgentStatus): void {
  writer.string(1, agent.state);
  writer.string(2, agent.version);
  writer.uint32(3, agent.identities);
  writer.uint32(4, agent.rules);
}

/** Fields 4 to 19 of an event: after seq, time and ktimeNs, the fields that often repeat. */
type EventTail = Omit<AuditEvent, 'seq' | 'time' | 'ktimeNs'>;

/** The tail of the last event encoded and its bytes, or null when it could change. */
let previousTail: { tail: EventTail; bytes: Buffer } | null = null;

function sameTail(tail: EventTail, event: AuditEvent): boolean {
  return (
    tail.subject === event.subject &&
    tail.process === event.process &&
    tail.connection === event.connection &&
    tail.policy === event.policy &&
    tail.node === event.node &&
    tail.type === event.type &&
    tail.action === event.action &&
    tail.result === event.result &&
    tail.errno === event.errno &&
    tail.enforcer === event.enforcer &&
    tail.message === event.message &&
    tail.loss === event.loss &&
    tail.severity === event.severity &&
    tail.object === event.object &&
    tail.agent === event.agent &&
    tail.runId === event.runId
  );
}

/** Returns whether every message of an event's tail is absent or frozen, so its bytes stay valid. */
function frozenTail(event: AuditEvent): boolean {
  const messages = [event.subject, event.process, event.connection, event.policy];
  if (event.loss || event.object || event.agent) return false;
  return messages.every((message) => message === undefined || Object.isFrozen(message));
}

function encodeEventTail(writer: ProtoWriter, event: AuditEvent): void {
  writer.string(4, event.node);
  writer.string(5, event.type);
  writer.message(6, event.subject, encodeSubject);
  writer.message(7, event.process, encodeProcess);
  writer.message(8, event.connection, encodeConnection);
  writer.message(9, event.policy, encodePolicy);
  writer.string(10, event.action);
  writer.string(11, event.result);
  writer.int32(12, event.errno);
  writer.string(13, event.enforcer);
  writer.string(14, event.message);
  writer.message(15, event.loss, encodeLoss);
  writer.string(16, event.severity);
  writer.message(17, event.object, encodeObject);
  writer.message(18, event.agent, encodeAgent);
  writer.string(19, event.runId);
}

/** Field 2 (time) of the previous event, and its bytes; null before the first event. */
const previousTime: { text: string | undefined; bytes: Buffer | null } = { text: undefined, bytes: null };

/**
 * Encodes an event. When fields 4 to 19 are identical (===) to those of the
 * previous event and its messages are frozen, as for a process's repeated
 * connects, their bytes are copied from the previous event.
 */
function encodeEventBody(writer: ProtoWriter, event: AuditEvent): void {
  writer.uint64Number(1, event.seq);
  // The time changes once per millisecond: its field bytes are copied while it repeats.
  if (event.time === previousTime.text && previousTime.bytes !== null) {
    writer.raw(previousTime.bytes);
  } else {
    // Relative to start, which ensure() moves when the event continues in a new slab.
    const offset = writer.pos - writer.start;
    writer.string(2, event.time);
    previousTime.text = event.time;
    previousTime.bytes = Buffer.from(writer.buffer.subarray(writer.start + offset, writer.pos));
  }
  writer.uint64String(3, event.ktimeNs);
  const previous = previousTail;
  if (previous !== null && sameTail(previous.tail, event)) {
    writer.raw(previous.bytes);
    return;
  }
  const offset = writer.pos - writer.start;
  encodeEventTail(writer, event);
  if (!frozenTail(event)) {
    previousTail = null;
    return;
  }
  const { seq, time, ktimeNs, ...tail } = event;
  const bytes = Buffer.from(writer.buffer.subarray(writer.start + offset, writer.pos));
  previousTail = { tail, bytes };
}

const scratchWriter = new ProtoWriter();
/** The encoded bytes kept on an event; a symbol key, so JSON.stringify leaves it out. */
const ENCODED = Symbol('sigil.audit.v1.Event bytes');

type EncodedCache = { [ENCODED]?: Buffer };

/**
 * Returns the sigil.audit.v1.Event encoding of an event. The first call
 * encodes and keeps the bytes on the event, so an event must not change
 * after it is first encoded (the hub never changes a published event).
 */
export function encodeEvent(event: AuditEvent): Buffer {
  const cache = event as AuditEvent & EncodedCache;
  const cached = cache[ENCODED];
  if (cached !== undefined) return cached;
  scratchWriter.reset();
  encodeEventBody(scratchWriter, event);
  const bytes = scratchWriter.finish();
  Object.defineProperty(cache, ENCODED, { value: bytes, enumerable: false });
  return bytes;
}

/**
 * Returns the loss event that replaces an event that cannot be encoded (a
 * value outside its field's range). It has the same sequence number, time
 * and run, and a message with the encoder's error.
 */
export function encodingLossEvent(event: AuditEvent, error: unknown): AuditEvent {
  return {
    seq: event.seq,
    time: event.time,
    node: event.node,
    type: 'loss',
    ktimeNs: '0',
    loss: { where: 'decode', count: 1, firstSeq: event.seq, lastSeq: event.seq },
    message: `event ${event.seq} (${event.type}) could not be encoded: ${(error as Error).message}`,
    severity: 'medium',
    runId: event.runId,
  };
}

/**
 * Returns encodeEvent(event), or for an event that cannot be encoded the
 * encoding of its encodingLossEvent, so that a malformed event never stops a
 * stream. Either result is kept on the event like encodeEvent's.
 */
export function encodeEventOrLoss(event: AuditEvent): Buffer {
  const cache = event as AuditEvent & EncodedCache;
  const cached = cache[ENCODED];
  if (cached !== undefined) return cached;
  try {
    return encodeEvent(event);
  } catch (error) {
    const bytes = encodeEvent(encodingLossEvent(event, error));
    Object.defineProperty(cache, ENCODED, { value: bytes, enumerable: false });
    return bytes;
  }
}

/** Returns the size of a varint. */
function varintSize(value: number): number {
  let size = 1;
  for (let rest = value; rest > 0x7f; rest = Math.floor(rest / 128)) size++;
  return size;
}

/**
 * Returns the sigil.audit.v1.EventBatch encoding of events: each event's
 * bytes as field 1, length-delimited, in order.
 */
export function encodeEventBatch(events: readonly AuditEvent[]): Buffer {
  return encodeEncodedBatch(events.map(encodeEvent));
}

/** Returns the sigil.audit.v1.EventBatch encoding of events already encoded by encodeEvent. */
export function encodeEncodedBatch(encoded: readonly Buffer[]): Buffer {
  return encodeEncodedBatchInto(encoded, Buffer.allocUnsafe(encodedBatchSize(encoded)));
}

/** Returns the size of the sigil.audit.v1.EventBatch encoding of encoded events. */
export function encodedBatchSize(encoded: readonly Buffer[]): number {
  let size = 0;
  for (const bytes of encoded) size += 1 + varintSize(bytes.length) + bytes.length;
  return size;
}

/**
 * Writes the sigil.audit.v1.EventBatch encoding of encoded events at the
 * start of out, which must have room for encodedBatchSize(encoded) bytes,
 * and returns the view of out that contains it.
 */
export function encodeEncodedBatchInto(encoded: readonly Buffer[], out: Buffer): Buffer {
  let pos = 0;
  for (const bytes of encoded) {
    out[pos++] = (1 << 3) | LENGTH_DELIMITED;
    for (let rest = bytes.length; ; rest = Math.floor(rest / 128)) {
      if (rest <= 0x7f) {
        out[pos++] = rest;
        break;
      }
      out[pos++] = (rest % 128) | 0x80;
    }
    out.set(bytes, pos);
    pos += bytes.length;
  }
  return out.subarray(0, pos);
}
