import { describe, expect, it } from 'vitest';
import {
  decodeBatch,
  encodeAddress,
  encodeCidrKey,
  encodeRuleList,
  encodeSubject,
  formatAddress,
} from '../../src/kernel/codec';
import {
  acceptRecordLayout,
  bindRecordLayout,
  connectRecordLayout,
  forkRecordLayout,
  KernelAction,
  RecordType,
  SIGIL_RULES_PER_KEY,
  subjectLayout,
} from '../../src/kernel/layout';

describe('address codec', () => {
  it.each([
    ['127.0.0.1', '00000000000000000000ffff7f000001'],
    ['10.1.2.3', '00000000000000000000ffff0a010203'],
    ['::1', '00000000000000000000000000000001'],
    ['2001:db8::8:1', '20010db8000000000000000000080001'],
    ['::', '00000000000000000000000000000000'],
    ['fe80::1:2:3:4', 'fe800000000000000001000200030004'],
  ])('encodes %s', (text, hex) => {
    expect(encodeAddress(text).toString('hex')).toBe(hex);
  });

  it.each([
    ['00000000000000000000ffff7f000001', '127.0.0.1'],
    ['00000000000000000000000000000001', '::1'],
    ['20010db8000000000000000000080001', '2001:db8::8:1'],
    ['20010db8000100000000000000000001', '2001:db8:1::1'],
    ['00000000000000000000000000000000', '::'],
    ['20010db8000000010000000000000001', '2001:db8:0:1::1'],
  ])('formats %s as %s', (hex, text) => {
    expect(formatAddress(Buffer.from(hex, 'hex'))).toBe(text);
  });

  it.each(['1.2.3', 'not-an-address', '1.2.3.256', ''])('rejects %j', (text) => {
    expect(() => encodeAddress(text)).toThrow(/invalid IP address/);
  });
});

describe('map key and value encoders', () => {
  it('puts the subject big-endian in front of the address in a CIDR key', () => {
    const key = encodeCidrKey(0x01020304, 104, encodeAddress('10.0.0.0'));
    expect(key.readUInt32LE(0)).toBe(32 + 104);
    expect(key.subarray(4, 8).toString('hex')).toBe('01020304');
    expect(key.subarray(8).toString('hex')).toBe('00000000000000000000ffff0a000000');
  });

  it.each([
    [104, '00000000000000000000ffff0a000000'],
    [107, '00000000000000000000ffff0a000000'],
    [108, '00000000000000000000ffff0a100000'],
    [120, '00000000000000000000ffff0a1f1f00'],
    [128, '00000000000000000000ffff0a1f1f1f'],
    [0, '00000000000000000000000000000000'],
  ])('zeroes the address bits past prefix length %i', (prefixLen, hex) => {
    const key = encodeCidrKey(7, prefixLen, encodeAddress('10.31.31.31'));
    expect(key.subarray(8).toString('hex')).toBe(hex);
  });

  it('sets one bit per CIDR prefix length in a subject', () => {
    // Bit 128 - length: the lowest set bit is the longest length.
    const value = encodeSubject(0, KernelAction.Block, [0, 63, 64, 104, 128]);
    const at = subjectLayout.offsetOf('cidr_lengths');
    const words = [0, 1, 2].map((i) => value.readBigUInt64LE(at + i * 8));
    expect(words).toEqual([1n | (1n << 24n), 1n | (1n << 1n), 1n]);
  });

  it.each([-1, 129, 1.5])('rejects CIDR prefix length %d in a subject', (length) => {
    expect(() => encodeSubject(0, KernelAction.Block, [length])).toThrow(RangeError);
  });

  it('rejects a rule list longer than the kernel holds', () => {
    const rule = { portLo: 1, portHi: 2, protocol: 6, action: KernelAction.Allow, ruleIndex: 0 };
    expect(() => encodeRuleList(Array(SIGIL_RULES_PER_KEY + 1).fill(rule))).toThrow(/at most 16/);
  });
});

function frame(record: Buffer): Buffer {
  const header = Buffer.alloc(8);
  header.writeUInt32LE(record.length, 0);
  const padded = Buffer.alloc(Math.ceil(record.length / 8) * 8);
  record.copy(padded);
  return Buffer.concat([header, padded]);
}

function connectRecord(port: number): Buffer {
  const record = Buffer.alloc(connectRecordLayout.size);
  record.writeUInt32LE(RecordType.Connect, 0);
  record.writeUInt32LE(connectRecordLayout.size, 4);
  record.writeUInt16LE(2, connectRecordLayout.offsetOf('family'));
  record.writeUInt16LE(port, connectRecordLayout.offsetOf('port'));
  encodeAddress('127.0.0.1').copy(record, connectRecordLayout.offsetOf('addr'));
  return record;
}

describe('batch decoder', () => {
  it('decodes framed records in order', () => {
    const records = decodeBatch(Buffer.concat([frame(connectRecord(80)), frame(connectRecord(443))]));
    expect(records.map((r) => (r.type === 'connect' ? r.port : r.type))).toEqual([80, 443]);
  });

  it('decodes every connect field, with 64-bit values past 2^53', () => {
    const l = connectRecordLayout;
    const record = connectRecord(5432);
    record.writeBigUInt64LE(2n ** 60n + 7n, 8);
    record.writeUInt32LE(900, l.offsetOf('tgid'));
    record.writeUInt32LE(1, l.offsetOf('ppid'));
    record.writeUInt32LE(1000, l.offsetOf('uid'));
    record.writeUInt32LE(1001, l.offsetOf('gid'));
    record.writeUInt32LE(3, l.offsetOf('subject_id'));
    record.writeUInt32LE(4, l.offsetOf('peer_id'));
    record.writeUInt32LE(9, l.offsetOf('generation'));
    record.writeUInt32LE(12, l.offsetOf('rule_index'));
    record.writeBigUInt64LE(2n ** 63n + 1n, l.offsetOf('cgroup_id'));
    record.writeUInt16LE(10, l.offsetOf('family'));
    record.writeUInt8(17, l.offsetOf('protocol'));
    record.writeUInt8(KernelAction.Block, l.offsetOf('action'));
    record.writeUInt8(1, l.offsetOf('reason'));
    record.writeUInt8(1, l.offsetOf('denied'));
    encodeAddress('2001:db8::8:1').copy(record, l.offsetOf('addr'));
    record.writeUInt32LE(950, l.offsetOf('peer_tgid'));
    record.writeUInt32LE(1, l.offsetOf('enforcer'));
    record.write('psql', l.offsetOf('comm'));

    const [decoded] = decodeBatch(frame(record));
    expect(decoded).toEqual({
      type: 'connect',
      ktimeNs: String(2n ** 60n + 7n),
      tgid: 900,
      ppid: 1,
      uid: 1000,
      gid: 1001,
      subjectId: 3,
      peerId: 4,
      generation: 9,
      ruleIndex: 12,
      cgroupId: 2n ** 63n + 1n,
      family: 'ipv6',
      address: '2001:db8::8:1',
      port: 5432,
      protocol: 17,
      action: KernelAction.Block,
      reason: 1,
      denied: true,
      peerTgid: 950,
      enforcer: 'bpf-lsm',
      comm: 'psql',
    });
  });

  it('decodes each connect of a batch with its own address, comm and cgroup', () => {
    const l = connectRecordLayout;
    const variants: [string, string, bigint][] = [
      ['127.0.0.1', 'curl', 5n],
      ['127.0.0.1', 'curl', 5n],
      ['10.0.0.1', 'curl', 5n],
      ['10.0.0.1', 'wget', 5n],
      ['10.0.0.1', 'wget', 6n],
      ['127.0.0.1', 'curl', 5n],
    ];
    const records = variants.map(([address, comm, cgroup]) => {
      const record = connectRecord(80);
      encodeAddress(address).copy(record, l.offsetOf('addr'));
      record.write(comm, l.offsetOf('comm'));
      record.writeBigUInt64LE(cgroup, l.offsetOf('cgroup_id'));
      return frame(record);
    });
    const decoded = decodeBatch(Buffer.concat(records));
    expect(decoded.map((r) => (r.type === 'connect' ? [r.address, r.comm, r.cgroupId] : r.type))).toEqual(
      variants,
    );
  });

  it('decodes a batch whose bytes are not 4-byte aligned', () => {
    const second = connectRecord(443);
    second.writeBigUInt64LE(2n ** 53n - 1n, 8);
    const bytes = Buffer.concat([frame(connectRecord(80)), frame(second)]);
    const unaligned = Buffer.alloc(bytes.length + 1).subarray(1);
    bytes.copy(unaligned);
    expect(unaligned.byteOffset % 4).not.toBe(0);
    const records = decodeBatch(unaligned);
    expect(records.map((r) => (r.type === 'connect' ? [r.port, r.address, r.ktimeNs] : r.type))).toEqual([
      [80, '127.0.0.1', '0'],
      [443, '127.0.0.1', '9007199254740991'],
    ]);
  });

  it('reports a record of unknown type and goes on', () => {
    const unknown = Buffer.alloc(16);
    unknown.writeUInt32LE(99, 0);
    unknown.writeUInt32LE(16, 4);
    const records = decodeBatch(Buffer.concat([frame(unknown), frame(connectRecord(22))]));
    expect(records[0]).toEqual({ type: 'malformed', reason: 'unknown record type 99' });
    expect(records[1].type).toBe('connect');
  });

  it('reports a record whose size does not match its type', () => {
    const short = connectRecord(22).subarray(0, 40);
    const [record] = decodeBatch(frame(Buffer.from(short)));
    expect(record.type).toBe('malformed');
  });

  it('decodes a fork record', () => {
    const record = Buffer.alloc(forkRecordLayout.size);
    record.writeUInt32LE(RecordType.Fork, 0);
    record.writeUInt32LE(forkRecordLayout.size, 4);
    record.writeUInt32LE(4321, forkRecordLayout.offsetOf('tgid'));
    record.writeUInt32LE(1234, forkRecordLayout.offsetOf('ppid'));
    record.writeBigUInt64LE(5_000_000_000n, forkRecordLayout.offsetOf('start_boottime_ns'));
    record.writeBigUInt64LE(3_000_000_000n, forkRecordLayout.offsetOf('parent_start_boottime_ns'));
    const [decoded] = decodeBatch(frame(record));
    expect(decoded).toEqual({
      type: 'fork',
      ktimeNs: 0n,
      tgid: 4321,
      ppid: 1234,
      startBoottimeNs: 5_000_000_000n,
      parentStartBoottimeNs: 3_000_000_000n,
    });
  });

  it('decodes a bind record with an IPv6 address', () => {
    const record = Buffer.alloc(bindRecordLayout.size);
    record.writeUInt32LE(RecordType.Bind, 0);
    record.writeUInt32LE(bindRecordLayout.size, 4);
    record.writeUInt32LE(77, bindRecordLayout.offsetOf('tgid'));
    record.writeUInt32LE(5, bindRecordLayout.offsetOf('subject_id'));
    record.writeUInt16LE(10, bindRecordLayout.offsetOf('family'));
    record.writeUInt16LE(8443, bindRecordLayout.offsetOf('port'));
    record.writeUInt8(6, bindRecordLayout.offsetOf('protocol'));
    encodeAddress('::1').copy(record, bindRecordLayout.offsetOf('addr'));
    record.write('server', bindRecordLayout.offsetOf('comm'));
    const [decoded] = decodeBatch(frame(record));
    expect(decoded).toMatchObject({
      type: 'bind',
      tgid: 77,
      subjectId: 5,
      family: 'ipv6',
      address: '::1',
      port: 8443,
      protocol: 6,
      comm: 'server',
    });
  });

  it('decodes an accept record with both ends', () => {
    const l = acceptRecordLayout;
    const record = Buffer.alloc(l.size);

    record.writeUInt32LE(RecordType.Accept, 0);
    record.writeUInt32LE(l.size, 4);
    record.writeBigUInt64LE(42n, 8);
    record.writeUInt32LE(900, l.offsetOf('tgid'));
    record.writeUInt32LE(901, l.offsetOf('pid'));
    record.writeUInt32LE(1, l.offsetOf('ppid'));
    record.writeUInt32LE(1000, l.offsetOf('uid'));
    record.writeUInt32LE(1001, l.offsetOf('gid'));
    record.writeUInt32LE(3, l.offsetOf('subject_id'));
    record.writeUInt32LE(4, l.offsetOf('peer_id'));
    record.writeUInt32LE(950, l.offsetOf('peer_tgid'));
    record.writeBigUInt64LE(2n ** 60n, l.offsetOf('cgroup_id'));
    record.writeUInt16LE(10, l.offsetOf('family'));
    record.writeUInt16LE(6, l.offsetOf('protocol'));
    record.writeUInt16LE(51000, l.offsetOf('port'));
    record.writeUInt16LE(5432, l.offsetOf('local_port'));
    encodeAddress('127.0.0.2').copy(record, l.offsetOf('addr'));
    encodeAddress('127.0.0.1').copy(record, l.offsetOf('local_addr'));
    record.write('postgres', l.offsetOf('comm'));

    const [decoded] = decodeBatch(frame(record));
    expect(decoded).toEqual({
      type: 'accept',
      ktimeNs: 42n,
      tgid: 900,
      pid: 901,
      ppid: 1,
      uid: 1000,
      gid: 1001,
      subjectId: 3,
      peerId: 4,
      peerTgid: 950,
      cgroupId: 2n ** 60n,
      family: 'ipv6',
      protocol: 6,
      address: '127.0.0.2',
      port: 51000,
      localAddress: '127.0.0.1',
      localPort: 5432,
      comm: 'postgres',
    });
  });

  it('stops at a frame that overruns the batch', () => {
    const batch = frame(connectRecord(22));
    batch.writeUInt32LE(10_000, 0);
    const records = decodeBatch(batch);
    expect(records).toEqual([{ type: 'malformed', reason: 'frame of 10000 bytes overruns the batch' }]);
  });
});
