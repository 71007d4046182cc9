/**
 * The gRPC consumer of bench/events-kernel.ts, run as its own process so it
 * does not share the agent's or the bench's event loop. It reads the agent's
 * connect events on a WatchBatches stream and its loss events on a Watch
 * stream, over a unix socket, and prints running totals as one JSON line
 * every 100 ms on stdout:
 *
 *   {"marked":N,"events":N,"kernelLoss":N,"clientLoss":N,"otherLoss":N}
 *
 * marked counts connect events whose connection.port is --port (the records
 * of the kernel-side generator), events counts every numbered event, and the
 * loss fields sum Loss.count by where. The consumer reads only the fields
 * it counts, straight from the wire bytes, so it costs far less per event
 * than the agent and measures the agent rather than itself. A SOC client
 * that decodes every field (src/events/grpc-client.ts) needs more CPU.
 *
 *   npx vite-node bench/events-consumer.ts -- --socket PATH --port N
 */
import * as grpc from '@grpc/grpc-js';
import * as protobuf from 'protobufjs';
import { AUDIT_PROTO } from '../src/events/audit-proto';

interface Totals {
  marked: number;
  events: number;
  kernelLoss: number;
  clientLoss: number;
  otherLoss: number;
}

function parseArgs(argv: string[]): { socket: string; port: number } {
  let socket = '';
  let port = 0;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--socket') socket = argv[++i];
    else if (argv[i] === '--port') port = Number(argv[++i]);
    else if (argv[i] !== '--')
      throw new Error(`unknown argument ${argv[i]}: expected --socket PATH --port N`);
  }
  if (!socket || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error('expected --socket PATH and --port N (1 to 65535)');
  }
  return { socket, port };
}

/** A cursor over protobuf wire bytes. */
class WireReader {
  constructor(
    readonly bytes: Buffer,
    public pos: number,
    readonly end: number,
  ) {}

  varint(): number {
    let value = 0;
    let scale = 1;
    for (;;) {
      const byte = this.bytes[this.pos++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
  }

  /** Skips a field's value of the given wire type (varint, 64-bit, length-delimited or 32-bit). */
  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.pos += 8;
    else if (wireType === 2) {
      const length = this.varint();
      this.pos += length;
    } else if (wireType === 5) this.pos += 4;
    else throw new Error(`unsupported wire type ${wireType} at byte ${this.pos}`);
  }
}

/** Returns a uint32 field of a nested message (Connection.port is field 4). */
function readUint32Field(bytes: Buffer, start: number, end: number, field: number): number {
  const reader = new WireReader(bytes, start, end);
  while (reader.pos < end) {
    const key = reader.varint();
    if (key >>> 3 === field && (key & 7) === 0) return reader.varint();
    reader.skip(key & 7);
  }
  return 0;
}

/** Adds a Loss message's count (field 2) to the totals by its where (field 1). */
function countLoss(totals: Totals, bytes: Buffer, start: number, end: number): void {
  const reader = new WireReader(bytes, start, end);
  let where = '';
  let count = 0;
  while (reader.pos < end) {
    const key = reader.varint();
    if (key === ((1 << 3) | 2)) {
      const length = reader.varint();
      where = bytes.toString('latin1', reader.pos, reader.pos + length);
      reader.pos += length;
    } else if (key === ((2 << 3) | 0)) count = reader.varint();
    else reader.skip(key & 7);
  }
  if (where === 'kernel-ringbuf') totals.kernelLoss += count;
  else if (where === 'client-queue') totals.clientLoss += count;
  else totals.otherLoss += count;
}

/**
 * Counts one encoded sigil.audit.v1.Event, reading only seq (1), type (5),
 * connection (8) and loss (15), so the consumer costs little per event.
 */
function countEvent(totals: Totals, bytes: Buffer, start: number, end: number, port: number): void {
  const reader = new WireReader(bytes, start, end);
  let seq = 0;
  let type = '';
  let connection: [number, number] | null = null;
  while (reader.pos < end) {
    const key = reader.varint();
    const field = key >>> 3;
    if (field === 1 && (key & 7) === 0) {
      seq = reader.varint();
      continue;
    }
    if ((key & 7) !== 2 || (field !== 5 && field !== 8 && field !== 15)) {
      reader.skip(key & 7);
      continue;
    }
    const length = reader.varint();
    const at = reader.pos;
    reader.pos += length;
    if (field === 5) type = bytes.toString('latin1', at, at + length);
    else if (field === 8) connection = [at, at + length];
    else countLoss(totals, bytes, at, at + length);
  }
  if (seq === 0) return;
  totals.events++;
  if (
    type === 'connect' &&
    connection &&
    readUint32Field(bytes, connection[0], connection[1], 4) === port
  ) {
    totals.marked++;
  }
}

/** Counts every event of an encoded EventBatch (events are field 1). */
function countBatch(totals: Totals, bytes: Buffer, port: number): void {
  const reader = new WireReader(bytes, 0, bytes.length);
  while (reader.pos < bytes.length) {
    const key = reader.varint();
    if (key !== ((1 << 3) | 2)) {
      reader.skip(key & 7);
      continue;
    }
    const length = reader.varint();
    countEvent(totals, bytes, reader.pos, reader.pos + length, port);
    reader.pos += length;
  }
}

function main(): void {
  const { socket, port } = parseArgs(process.argv.slice(2));
  const root = protobuf.loadSync(AUDIT_PROTO);
  const request = root.lookupType('sigil.audit.v1.WatchRequest');
  // HTTP/2 flow-control window granted to the agent, per stream and per connection. With the
  // default of 64 KiB the agent can send about 200 events per round trip, which on a loaded
  // machine held a WatchBatches stream to about 5,000 events/s.
  const client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': -1,
    'grpc-node.flow_control_window': 8 * 1024 * 1024,
  });
  const totals: Totals = { marked: 0, events: 0, kernelLoss: 0, clientLoss: 0, otherLoss: 0 };
  const serialize = (value: object) => Buffer.from(request.encode(request.create(value)).finish());
  const open = (method: string, types: string[], onData: (bytes: Buffer) => void) => {
    const stream = client.makeServerStreamRequest(
      `/sigil.audit.v1.AuditService/${method}`,
      serialize,
      (bytes: Buffer) => bytes,
      { types },
    );
    stream.on('data', onData);
    stream.on('error', (error: Error) => {
      process.stderr.write(`events-consumer: ${method} stream failed: ${error.message}\n`);
      process.exit(1);
    });
    stream.on('end', () => process.exit(0));
    return stream;
  };
  // Connect events only, so every client-queue loss on this stream is of connect events; kernel
  // loss events come on a second stream of their own.
  const connects = open('WatchBatches', ['connect'], (bytes) => countBatch(totals, bytes, port));
  const losses = open('Watch', ['loss'], (bytes) =>
    countEvent(totals, bytes, 0, bytes.length, port),
  );
  let headers = 0;
  const onHeaders = () => {
    if (++headers === 2) process.stdout.write('{"ready":true}\n');
  };
  connects.on('metadata', onHeaders);
  losses.on('metadata', onHeaders);
  setInterval(() => process.stdout.write(`${JSON.stringify(totals)}\n`), 100);
}

main();
