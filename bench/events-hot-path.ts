/**
 * Main-thread cost per connect record of the agent's event path, without
 * the kernel, the ring-buffer thread or other processes. A framed batch of
 * connect records, as the native consumer hands it over, is decoded and
 * built into connect events as the agent builds them. The events are
 * published to a hub with the default replay buffer, a JSON event log on
 * /dev/null and a sink that encodes WatchBatches messages as a live gRPC
 * client's stream does. The records repeat one process's connects with a
 * new time stamp each, as bench/events-kernel.ts generates them. The
 * baseline, measured in the same run on the same events, is JSON.stringify
 * of each event alone.
 *
 *   npx vite-node bench/events-hot-path.ts -- [--records 2000000] [--rounds 5]
 *
 * It runs in one thread, so on a loaded machine it is less distorted than
 * the whole pipeline, but it leaves out the ring-buffer thread, the
 * write(2) calls and grpc-js.
 */
import { AuditEvent } from '../src/events/audit-event';
import { encodeEventBatch } from '../src/events/event-encoder';
import { EventHub } from '../src/events/event-hub';
import { createEventLog } from '../src/events/event-log';
import { connectEvent, ConnectContext } from '../src/enforce/event-builder';
import { decodeBatch, encodeAddress } from '../src/kernel/codec';
import { connectRecordLayout, KernelAction, RecordType } from '../src/kernel/layout';

const BATCH_RECORDS = 580;
const GRPC_BATCH_EVENTS = 1024;

function parseArgs(argv: string[]): { records: number; rounds: number } {
  const options = { records: 2_000_000, rounds: 5 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--records') options.records = Number(argv[++i]);
    else if (argv[i] === '--rounds') options.rounds = Number(argv[++i]);
    else if (argv[i] !== '--') throw new Error(`unknown argument ${argv[i]}: expected --records N --rounds N`);
  }
  for (const [name, value] of Object.entries(options)) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new Error(`invalid --${name} ${value}: expected a positive integer`);
    }
  }
  return options;
}

/** Builds a batch of connect records framed as the native consumer frames them (u32 length, u32 zero, record). */
function connectBatch(): Buffer {
  const l = connectRecordLayout;
  const frame = 8 + Math.ceil(l.size / 8) * 8;
  const batch = Buffer.alloc(frame * BATCH_RECORDS);
  for (let i = 0; i < BATCH_RECORDS; i++) {
    const at = i * frame;
    const record = at + 8;
    batch.writeUInt32LE(l.size, at);
    batch.writeUInt32LE(RecordType.Connect, record);
    batch.writeUInt32LE(l.size, record + 4);
    batch.writeBigUInt64LE(81_234_567_890_123n + BigInt(i) * 997n, record + 8);
    batch.writeUInt32LE(48211, record + l.offsetOf('tgid'));
    batch.writeUInt32LE(48100, record + l.offsetOf('ppid'));
    batch.writeUInt32LE(1001, record + l.offsetOf('uid'));
    batch.writeUInt32LE(1001, record + l.offsetOf('gid'));
    batch.writeUInt32LE(1, record + l.offsetOf('subject_id'));
    batch.writeUInt32LE(2, record + l.offsetOf('peer_id'));
    batch.writeUInt32LE(1, record + l.offsetOf('generation'));
    batch.writeUInt32LE(0, record + l.offsetOf('rule_index'));
    batch.writeBigUInt64LE(12_884n, record + l.offsetOf('cgroup_id'));
    batch.writeUInt16LE(2, record + l.offsetOf('family'));
    batch.writeUInt16LE(8080, record + l.offsetOf('port'));
    batch.writeUInt8(6, record + l.offsetOf('protocol'));
    batch.writeUInt8(KernelAction.Allow, record + l.offsetOf('action'));
    batch.writeUInt8(1, record + l.offsetOf('reason'));
    encodeAddress('10.42.7.19').copy(batch, record + l.offsetOf('addr'));
    batch.writeUInt32LE(9120, record + l.offsetOf('peer_tgid'));
    batch.write('web-server', record + l.offsetOf('comm'));
  }
  return batch;
}

const CONTEXT: ConnectContext = {
  subject: 'spiffe://example.org/ns/prod/sa/web',
  peer: 'spiffe://example.org/ns/prod/sa/api',
  executable: '/usr/local/bin/web-server',
  ancestry: Object.freeze([
    Object.freeze({ pid: 48100, executable: '/usr/bin/bash', comm: 'bash', spiffeId: '' }),
    Object.freeze({ pid: 1, executable: '/sbin/init', comm: 'systemd', spiffeId: '' }),
  ]),
  rule: { policy: 'web-egress', rule: 'web-to-api', action: 'allow' },
};

/** Returns the CPU time in ms of one run of count records through the agent's event path. */
async function agentPath(batch: Buffer, count: number): Promise<number> {
  const hub = new EventHub('bench-node');
  const log = createEventLog('/dev/null');
  hub.subscribe({ filter: {}, deliver: (event) => log.write(event) });
  let pending: AuditEvent[] = [];
  let messageBytes = 0;
  hub.subscribe({
    filter: {},
    deliver: (event: AuditEvent) => {
      pending.push(event);
      if (pending.length < GRPC_BATCH_EVENTS) return;
      messageBytes += encodeEventBatch(pending).length;
      pending = [];
    },
  });
  const start = process.cpuUsage();
  for (let done = 0; done < count; done += BATCH_RECORDS) {
    for (const record of decodeBatch(batch)) {
      if (record.type === 'connect') hub.publish(connectEvent(record, CONTEXT));
    }
    // One batch per event-loop turn, as the agent handles them.
    await new Promise((resolve) => setImmediate(resolve));
  }
  await log.close();
  const used = process.cpuUsage(start);
  if (messageBytes === 0) throw new Error('no WatchBatches message was encoded');
  return (used.user + used.system) / 1000;
}

/** Returns the CPU time in ms of JSON.stringify of count events built the same way. */
function stringifyBaseline(batch: Buffer, count: number): number {
  const hub = new EventHub('bench-node', { replayCapacity: 0 });
  const events: AuditEvent[] = [];
  for (const record of decodeBatch(batch)) {
    if (record.type === 'connect') events.push(hub.publish(connectEvent(record, CONTEXT)));
  }
  let bytes = 0;
  const start = process.cpuUsage();
  for (let done = 0; done < count; done += events.length) {
    for (const event of events) bytes += JSON.stringify(event).length;
  }
  const used = process.cpuUsage(start);
  if (bytes === 0) throw new Error('JSON.stringify wrote nothing');
  return (used.user + used.system) / 1000;
}

async function main(): Promise<void> {
  const { records, rounds } = parseArgs(process.argv.slice(2));
  const batch = connectBatch();
  const count = Math.ceil(records / BATCH_RECORDS) * BATCH_RECORDS;
  process.stdout.write(`${count} connect records per run, ${rounds} rounds; node ${process.version}\n`);
  process.stdout.write('round  agent path (us/record)  JSON.stringify (us/event)  ratio\n');
  const ratios: number[] = [];
  for (let round = 1; round <= rounds; round++) {
    const agent = (await agentPath(batch, count)) / count;
    const baseline = stringifyBaseline(batch, count) / count;
    ratios.push(agent / baseline);
    process.stdout.write(
      `${String(round).padStart(5)}  ${(agent * 1000).toFixed(3).padStart(22)}  ` +
        `${(baseline * 1000).toFixed(3).padStart(25)}  ${(agent / baseline).toFixed(2).padStart(5)}\n`,
    );
  }
  ratios.sort((a, b) => a - b);
  process.stdout.write(`median ratio ${ratios[Math.floor(ratios.length / 2)].toFixed(2)}\n`);
}

main().catch((error: Error) => {
  process.stderr.write(`events-hot-path: ${error.message}\n`);
  process.exitCode = 1;
});
