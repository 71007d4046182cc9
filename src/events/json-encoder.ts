/**
 * JSON text written straight into bytes, for the event log's hot path.
 *
 * The output is byte for byte the UTF-8 encoding of JSON.stringify(value).
 * Keys come in the same order, which is for-in order on a plain object. The
 * escapes are the same: quote, backslash, control characters and lone
 * surrogates (as \udxxx), while U+2028 and U+2029 stay literal. Undefined,
 * functions and symbols are left out of objects and written as null in
 * arrays, non-finite numbers are written as null, and toJSON() is honoured.
 * test/events/json-encoder.test.ts checks this against JSON.stringify for a
 * table of events and hostile strings.
 *
 * Why not JSON.stringify: at 100,000 and 250,000 events/s the agent spent
 * about a third of its CPU on JSON.stringify of each event, joining the
 * lines and converting the joined text to UTF-8 for write(2) (V8 CPU
 * profile of bench/events-kernel.ts). This encoder writes each line into one
 * buffer that goes to write(2) as it is. It copies the bytes of frozen
 * objects from a cache, because the event builder shares one frozen subject
 * per SPIFFE ID, one frozen policy reference per rule and one frozen
 * ancestry per process. So most of a line is copied, not encoded.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const NEWLINE = 0x0a;
/** Strings up to this length are copied by a JavaScript loop; longer ones by one native write. */
const ASCII_LOOP_MAX = 48;
/** Characters that JSON.stringify escapes in a string. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

const NULL_BYTES = Buffer.from('null');
const TRUE_BYTES = Buffer.from('true');
const FALSE_BYTES = Buffer.from('false');

/**
 * Encoded bytes of frozen plain objects and arrays, by identity. A frozen
 * object cannot change, so its bytes stay valid while it lives. The encoder
 * takes frozen to mean deeply frozen, which Object.freeze alone is not: code
 * that freezes an object for sharing must freeze the objects inside it too.
 */
const fragments = new WeakMap<object, Buffer>();

type Json = unknown;

/** Cached bytes of one head field of appendObjectLine, with the key and string value they encode. */
interface HeadSlot {
  key: string;
  value: string;
  /** Whether the bytes start with the comma that follows an earlier field. */
  afterField: boolean;
  bytes: Buffer;
  /** Bytes used, 0 when the slot keeps nothing. */
  length: number;
  /** Lines in a row whose value differed from the slot's. */
  misses: number;
  /** Lines left before the slot keeps bytes again. */
  pause: number;
}
/** Largest head field, key and value, that a slot keeps. */
const HEAD_SLOT_BYTES = 128;
/** Lines a slot skips after its value changed twice in a row. */
const HEAD_SLOT_PAUSE = 64;

/** Returns whether a value is a frozen array or frozen object of Object.prototype without toJSON. */
function isFrozenPlain(value: object): boolean {
  if (!Object.isFrozen(value)) return false;
  if (Array.isArray(value)) return true;
  if (Object.getPrototypeOf(value) !== Object.prototype) return false;
  return typeof (value as { toJSON?: unknown }).toJSON !== 'function';
}

/** Recycled buffers an encoder keeps: one being written and one waiting is the usual case. */
const MAX_SPARE_BUFFERS = 2;

/**
 * Appends JSON lines to a growing buffer. Bytes from `flushedTo` to `pos`
 * are lines that take() has not returned yet. The bytes before `flushedTo`
 * may belong to a consumer already, so the encoder never writes there again.
 */
export class JsonLineEncoder {
  private buffer: Buffer;
  private pos = 0;
  private flushedTo = 0;

  constructor(private readonly chunkBytes = 4 << 20) {
    this.buffer = Buffer.allocUnsafeSlow(chunkBytes);
  }

  /**
   * Receives the complete lines not yet taken when the buffer is full, which
   * the caller then owns as if take() had returned them. Without it, a new
   * buffer takes over those lines by a copy.
   */
  onFull: ((lines: Buffer) => void) | null = null;
  /** Buffers of chunkBytes given back by recycle(), used before a new one is allocated. */
  private readonly spare: ArrayBuffer[] = [];
  /** Start of the line being appended; ensure() moves it with the line. */
  private lineStart = 0;

  /** Bytes of complete lines not yet taken. */
  get pendingBytes(): number {
    return this.pos - this.flushedTo;
  }

  /** Appends JSON.stringify(value) and a newline. Throws as JSON.stringify does (BigInt, cycles). */
  appendLine(value: Json): void {
    this.lineStart = this.pos;
    try {
      if (!this.value(value, '')) this.raw(NULL_BYTES);
      this.byte(NEWLINE);
    } catch (error) {
      this.pos = this.lineStart;
      throw error;
    }
  }

  /**
   * Appends JSON.stringify(value) and a newline for a plain object whose
   * fields after the first headFields repeat from line to line, as an
   * event's fields after seq, time, node, type and ktimeNs do. When every
   * later key and value is identical (===) to those of the previous call,
   * and each value is a primitive or a frozen plain object or array, the
   * bytes of those fields are copied from the previous call.
   */
  appendObjectLine(value: Record<string, Json>, headFields: number): void {
    if (Object.getPrototypeOf(value) !== Object.prototype || Object.isFrozen(value)) {
      this.appendLine(value);
      return;
    }
    if (typeof value.toJSON === 'function') {
      this.appendLine(value);
      return;
    }
    const keys = this.keys;
    const values = this.values;
    let count = 0;
    for (const key in value) {
      keys[count] = key;
      values[count] = value[key];
      count++;
    }
    this.lineStart = this.pos;
    try {
      this.byte(0x7b);
      let first = true;
      const head = Math.min(headFields, count);
      for (let i = 0; i < head; i++) first = this.headField(i, keys[i], values[i], first);
      const tail = this.tail;
      if (tail !== null && this.tailMatches(tail, head, count, first)) {
        this.raw(tail.bytes);
      } else {
        this.writeTail(head, count, first);
      }
      this.byte(0x7d);
      this.byte(NEWLINE);
    } catch (error) {
      this.pos = this.lineStart;
      throw error;
    } finally {
      // The scratch lists must not keep the object's values alive.
      values.fill(undefined, 0, count);
    }
  }

  /**
   * Bytes of the head fields of the previous lines, by position, for string
   * values that repeat: an event's time changes once per millisecond and its
   * node and type rarely. A slot whose value changed twice in a row, as a
   * kernel time stamp does on every event, stops copying its bytes for
   * HEAD_SLOT_PAUSE lines.
   */
  private readonly headSlots: HeadSlot[] = [];

  /** Writes head field i of appendObjectLine, from its slot when key and string value repeat. */
  private headField(i: number, key: string, field: Json, first: boolean): boolean {
    let slot = this.headSlots[i];
    if (slot === undefined) {
      slot = { key: '', value: '', afterField: false, bytes: Buffer.alloc(HEAD_SLOT_BYTES), length: 0, misses: 0, pause: 0 };
      this.headSlots[i] = slot;
    }
    if (slot.length > 0 && slot.value === field && slot.key === key && slot.afterField === !first) {
      this.ensure(slot.length);
      const buffer = this.buffer;
      const bytes = slot.bytes;
      let pos = this.pos;
      for (let j = 0; j < slot.length; j++) buffer[pos++] = bytes[j];
      this.pos = pos;
      slot.misses = 0;
      return false;
    }
    const start = this.pos;
    const empty = this.field(key, field, first);
    const length = this.pos - start;
    slot.length = 0;
    if (slot.pause > 0) {
      slot.pause--;
      return empty;
    }
    if (++slot.misses >= 2) {
      slot.misses = 0;
      slot.pause = HEAD_SLOT_PAUSE;
      return empty;
    }
    if (typeof field === 'string' && length <= HEAD_SLOT_BYTES) {
      this.buffer.copy(slot.bytes, 0, start, this.pos);
      slot.key = key;
      slot.value = field;
      slot.afterField = !first;
      slot.length = length;
    }
    return empty;
  }

  /** Fields from head on, as appendObjectLine read them, and their bytes; null when not reusable. */
  private tail: { keys: string[]; values: Json[]; afterField: boolean; bytes: Buffer } | null = null;
  private readonly keys: string[] = [];
  private readonly values: Json[] = [];

  private tailMatches(
    tail: { keys: string[]; values: Json[]; afterField: boolean },
    head: number,
    count: number,
    first: boolean,
  ): boolean {
    if (tail.keys.length !== count - head || tail.afterField !== !first) return false;
    for (let i = head; i < count; i++) {
      if (tail.keys[i - head] !== this.keys[i] || tail.values[i - head] !== this.values[i]) return false;
    }
    return true;
  }

  private writeTail(head: number, count: number, first: boolean): void {
    const tailStart = this.pos;
    let reusable = true;
    let empty = first;
    for (let i = head; i < count; i++) {
      const field = this.values[i];
      if (typeof field === 'object' && field !== null && !isFrozenPlain(field)) reusable = false;
      empty = this.field(this.keys[i], field, empty);
    }
    this.tail = reusable
      ? {
          keys: this.keys.slice(head, count),
          values: this.values.slice(head, count),
          afterField: !first,
          bytes: Buffer.from(this.buffer.subarray(tailStart, this.pos)),
        }
      : null;
  }

  /**
   * Returns the lines appended since the last call, and hands their bytes to
   * the caller: the encoder writes later lines after them, never over them.
   */
  take(): Buffer {
    const lines = this.buffer.subarray(this.flushedTo, this.pos);
    this.flushedTo = this.pos;
    return lines;
  }

  /** Tests whether `memory` is the buffer the encoder appends to now. */
  appendsTo(memory: ArrayBufferLike): boolean {
    return this.buffer.buffer === memory;
  }

  /**
   * Gives back the memory of lines that take() or onFull handed out, once
   * the caller no longer needs any bytes of it, so that the next buffer
   * reuses it instead of allocating one. V8 counts every new ArrayBuffer
   * towards its external memory. At the log's 140 MB/s, new buffers made
   * V8 start a scavenge every few tens of milliseconds (`--trace-gc` gave
   * the reason "external memory pressure").
   */
  recycle(memory: ArrayBufferLike): void {
    if (memory.byteLength !== this.chunkBytes || this.appendsTo(memory)) return;
    if (this.spare.length < MAX_SPARE_BUFFERS && !this.spare.includes(memory as ArrayBuffer)) {
      this.spare.push(memory as ArrayBuffer);
    }
  }

  /**
   * Makes room for `bytes` more in a new buffer. The line being appended
   * moves to it. The complete lines not yet taken go to onFull when it is
   * set, else they move too.
   */
  private ensure(bytes: number): void {
    if (this.pos + bytes <= this.buffer.length) return;
    const handOver = this.onFull !== null && this.lineStart > this.flushedTo;
    const from = handOver ? this.lineStart : this.flushedTo;
    const kept = this.pos - from;
    const size = Math.max(this.chunkBytes, (kept + bytes) * 2);
    const spare = size === this.chunkBytes ? this.spare.pop() : undefined;
    const grown = spare ? Buffer.from(spare) : Buffer.allocUnsafeSlow(size);
    this.buffer.copy(grown, 0, from, this.pos);
    const lines = handOver ? this.buffer.subarray(this.flushedTo, this.lineStart) : null;
    this.lineStart -= from;
    this.buffer = grown;
    this.flushedTo = 0;
    this.pos = kept;
    if (lines !== null) this.onFull?.(lines);
  }

  private byte(value: number): void {
    this.ensure(1);
    this.buffer[this.pos++] = value;
  }

  /** Copies bytes in; TypedArray.set, since Buffer.copy costs more than a short copy itself. */
  private raw(bytes: Buffer): void {
    this.ensure(bytes.length);
    this.buffer.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** Writes a value; returns false, writing nothing, for what JSON.stringify leaves out. */
  private value(value: Json, key: string | number): boolean {
    switch (typeof value) {
      case 'string':
        this.string(value);
        return true;
      case 'number':
        this.number(value);
        return true;
      case 'boolean':
        this.raw(value ? TRUE_BYTES : FALSE_BYTES);
        return true;
      case 'object':
        if (value === null) this.raw(NULL_BYTES);
        else return this.object(value, key);
        return true;
      case 'bigint':
        // JSON.stringify throws a TypeError for a BigInt without toJSON.
        return this.fallback(value, key);
      default:
        return false;
    }
  }

  private object(value: object, key: string | number): boolean {
    const cached = fragments.get(value);
    if (cached !== undefined) {
      this.raw(cached);
      return true;
    }
    const isArray = Array.isArray(value);
    const prototype = Object.getPrototypeOf(value);
    const plain = prototype === Object.prototype || prototype === null;
    if (!isArray && !plain) return this.fallback(value, key);
    if (!isArray && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
      return this.fallback(value, key);
    }
    const start = this.pos;
    if (isArray) this.array(value as Json[]);
    else this.plainObject(value as Record<string, Json>);
    if (Object.isFrozen(value)) {
      fragments.set(value, Buffer.from(this.buffer.subarray(start, this.pos)));
    }
    return true;
  }

  private array(values: Json[]): void {
    this.byte(0x5b);
    for (let i = 0; i < values.length; i++) {
      if (i > 0) this.byte(COMMA);
      if (!this.value(values[i], i)) this.raw(NULL_BYTES);
    }
    this.byte(0x5d);
  }

  private plainObject(value: Record<string, Json>): void {
    this.byte(0x7b);
    let first = true;
    for (const key in value) first = this.field(key, value[key], first);
    this.byte(0x7d);
  }

  /** Writes one field of an object; returns whether the object still has no field written. */
  private field(key: string, field: Json, first: boolean): boolean {
    const kind = typeof field;
    if (kind === 'undefined' || kind === 'function' || kind === 'symbol') return first;
    const fieldStart = this.pos;
    if (!first) this.byte(COMMA);
    this.string(key);
    this.byte(COLON);
    if (this.value(field, key)) return false;
    this.pos = fieldStart; // a toJSON() that returned undefined
    return first;
  }

  /** Writes what JSON.stringify writes for a value that this encoder does not handle itself. */
  private fallback(value: Json, key: string | number): boolean {
    // Through a wrapper object, so that toJSON() receives the key as JSON.stringify passes it.
    const name = String(key);
    const text = JSON.stringify({ [name]: value }) as string;
    // The wrapper is {"key":...}: the value's text follows the key and its colon.
    const valueText = text.slice(JSON.stringify(name).length + 2, -1);
    if (valueText === '') return false;
    this.utf8(valueText);
    return true;
  }

  private utf8(text: string): void {
    this.ensure(text.length * 3);
    this.pos += this.buffer.write(text, this.pos, 'utf8');
  }

  private string(value: string): void {
    const length = value.length;
    if (length <= ASCII_LOOP_MAX) {
      this.ensure(length + 2);
      const buffer = this.buffer;
      let pos = this.pos;
      buffer[pos++] = QUOTE;
      let i = 0;
      for (; i < length; i++) {
        const unit = value.charCodeAt(i);
        if (unit < 0x20 || unit >= 0x80 || unit === QUOTE || unit === BACKSLASH) break;
        buffer[pos++] = unit;
      }
      if (i === length) {
        buffer[pos++] = QUOTE;
        this.pos = pos;
        return;
      }
    }
    if (NEEDS_ESCAPE.test(value)) {
      this.utf8(JSON.stringify(value));
      return;
    }
    this.ensure(length * 3 + 2);
    this.buffer[this.pos++] = QUOTE;
    this.pos += this.buffer.write(value, this.pos, 'utf8');
    this.buffer[this.pos++] = QUOTE;
  }

  private number(value: number): void {
    if (!Number.isSafeInteger(value)) {
      if (Number.isFinite(value)) this.utf8(String(value));
      else this.raw(NULL_BYTES);
      return;
    }
    // 16 digits and a sign hold every safe integer.
    this.ensure(17);
    const buffer = this.buffer;
    let rest = value;
    if (rest < 0) {
      buffer[this.pos++] = 0x2d;
      rest = -rest;
    }
    let digits = 1;
    for (let power = 10; power <= rest; power *= 10) digits++;
    let pos = this.pos + digits;
    this.pos = pos;
    do {
      buffer[--pos] = 0x30 + (rest % 10);
      rest = Math.floor(rest / 10);
    } while (rest > 0);
  }
}

/** Returns the bytes of JSON.stringify(value) and a newline, as the event log writes them. */
export function jsonLine(value: Json): Buffer {
  const encoder = new JsonLineEncoder(256);
  encoder.appendLine(value);
  return Buffer.from(encoder.take());
}
