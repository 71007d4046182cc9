import { isIPv4, isIPv6 } from 'node:net';
import {
  acceptRecordLayout,
  bindRecordLayout,
  cgroupRecordLayout,
  cidrKeyLayout,
  ConnectEnforcer,
  connectRecordLayout,
  execRecordLayout,
  exitRecordLayout,
  forkRecordLayout,
  identityLayout,
  KernelAction,
  peerKeyLayout,
  RecordType,
  recordHeaderLayout,
  ruleLayout,
  ruleListLayout,
  settingsLayout,
  SIGIL_RULES_PER_KEY,
  StructLayout,
  subjectLayout,
} from './layout';

/** One rule as the kernel stores it in a sigil_rule_list. */
export interface KernelRuleEntry {
  portLo: number;
  portHi: number;
  protocol: number;
  action: KernelAction;
  ruleIndex: number;
}

export interface ExecRecord {
  type: 'exec';
  ktimeNs: bigint;
  tgid: number;
  ppid: number;
  uid: number;
  gid: number;
  inheritedId: number;
  startBoottimeNs: bigint;
  parentStartBoottimeNs: bigint;
  cgroupId: bigint;
  comm: string;
  filename: string;
}

/** A new process (threads are not reported). */
export interface ForkRecord {
  type: 'fork';
  ktimeNs: bigint;
  tgid: number;
  ppid: number;
  startBoottimeNs: bigint;
  parentStartBoottimeNs: bigint;
}

export interface ExitRecord {
  type: 'exit';
  ktimeNs: bigint;
  tgid: number;
  /** Wait status: the exit status in bits 8..15, or the terminating signal in bits 0..6. */
  exitCode: number;
  startBoottimeNs: bigint;
}

/** A task moved to another cgroup. */
export interface CgroupRecord {
  type: 'cgroup';
  ktimeNs: bigint;
  /** The moved task: a thread id, equal to the tgid for a process's leader. */
  pid: number;
  /** Hierarchy id of the destination cgroup. */
  dstRoot: number;
  dstId: bigint;
}

/** A bind() by a process that had an identity. */
export interface BindRecord {
  type: 'bind';
  ktimeNs: bigint;
  tgid: number;
  ppid: number;
  uid: number;
  gid: number;
  subjectId: number;
  cgroupId: bigint;
  family: 'ipv4' | 'ipv6';
  address: string;
  port: number;
  protocol: number;
  comm: string;
}

/** A TCP connection accepted with accept() or accept4(). */
export interface AcceptRecord {
  type: 'accept';
  ktimeNs: bigint;
  tgid: number;
  /** The thread that called accept(). */
  pid: number;
  ppid: number;
  uid: number;
  gid: number;
  subjectId: number;
  /** Identity of the local client that connected; 0 when none or not local. */
  peerId: number;
  /** The process that called connect(), 0 when not known. */
  peerTgid: number;
  cgroupId: bigint;
  /** Family of the accepted socket: an IPv6 listener also accepts IPv4 clients. */
  family: 'ipv4' | 'ipv6';
  protocol: number;
  /** The client's address and port. */
  address: string;
  port: number;
  /** The address and port the connection reached. */
  localAddress: string;
  localPort: number;
  comm: string;
}

export interface ConnectRecord {
  type: 'connect';
  /** Decimal, as events carry it: the decoder runs for every connect, and BigInt costs more. */
  ktimeNs: string;
  tgid: number;
  ppid: number;
  uid: number;
  gid: number;
  subjectId: number;
  peerId: number;
  generation: number;
  ruleIndex: number;
  cgroupId: bigint;
  family: 'ipv4' | 'ipv6';
  address: string;
  port: number;
  protocol: number;
  action: KernelAction;
  reason: number;
  denied: boolean;
  peerTgid: number;
  /** The program that decided: the cgroup connect programs or the BPF LSM socket_connect hook. */
  enforcer: 'cgroup-sock' | 'bpf-lsm';
  comm: string;
}

export type KernelRecord =
  | ExecRecord
  | ForkRecord
  | ExitRecord
  | ConnectRecord
  | BindRecord
  | CgroupRecord
  | AcceptRecord;

/** A record that could not be decoded; the stream goes on past it. */
export interface MalformedRecord {
  type: 'malformed';
  reason: string;
}

const AF_INET = 2;

function field(layout: StructLayout, name: string): number {
  return layout.offsetOf(name);
}

/** Returns the UTF-8 text of a NUL-terminated C string in a field of length bytes at offset. */
export function cString(buffer: Buffer, offset: number, length: number): string {
  const end = buffer.indexOf(0, offset);
  const stop = end === -1 || end > offset + length ? offset + length : end;
  return buffer.toString('utf8', offset, stop);
}

/** Formats 16 address bytes as IPv4 text when IPv4-mapped, else as compressed IPv6 text. */
export function formatAddress(bytes: Buffer): string {
  let mapped = bytes[10] === 0xff && bytes[11] === 0xff;
  for (let i = 0; mapped && i < 10; i++) mapped = bytes[i] === 0;
  if (mapped) return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i));
  // Compress the longest run of two or more zero groups into '::'.
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength && j - i >= 2) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLength).join(':');
  return `${head}::${tail}`;
}

/** Encodes an IPv4 or IPv6 address as 16 bytes, IPv4 as IPv4-mapped. Throws on invalid text. */
export function encodeAddress(text: string): Buffer {
  const out = Buffer.alloc(16);
  if (isIPv4(text)) {
    out[10] = 0xff;
    out[11] = 0xff;
    text.split('.').forEach((part, i) => (out[12 + i] = Number(part)));
    return out;
  }
  if (!isIPv6(text)) throw new TypeError(`invalid IP address: ${JSON.stringify(text)}`);
  let body = text;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4Tail = body.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (v4Tail) {
    const parts = v4Tail[1].split('.').map(Number);
    const hex = `${((parts[0] << 8) | parts[1]).toString(16)}:${((parts[2] << 8) | parts[3]).toString(16)}`;
    body = body.slice(0, -v4Tail[1].length) + hex;
  }
  const [headText, tailText] = body.split('::');
  const head = headText ? headText.split(':') : [];
  const tail = tailText !== undefined && tailText !== '' ? tailText.split(':') : [];
  const groups = body.includes('::')
    ? [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail]
    : head;
  groups.forEach((group, i) => out.writeUInt16BE(parseInt(group, 16), i * 2));
  return out;
}

export function encodeU32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32LE(value >>> 0);
  return out;
}

export function encodeSettings(generation: number, flags: number): Buffer {
  const out = Buffer.alloc(settingsLayout.size);
  out.writeUInt32LE(generation >>> 0, field(settingsLayout, 'generation'));
  out.writeUInt32LE(flags >>> 0, field(settingsLayout, 'flags'));
  return out;
}

export function decodeSettings(buffer: Buffer): { generation: number; flags: number } {
  return {
    generation: buffer.readUInt32LE(field(settingsLayout, 'generation')),
    flags: buffer.readUInt32LE(field(settingsLayout, 'flags')),
  };
}

/** Encodes an identities map value; startTicks is the process start time in clock ticks, 0n if unknown. */
export function encodeIdentity(id: number, flags: number, startTicks = 0n): Buffer {
  const out = Buffer.alloc(identityLayout.size);
  out.writeUInt32LE(id >>> 0, field(identityLayout, 'id'));
  out.writeUInt32LE(flags >>> 0, field(identityLayout, 'flags'));
  out.writeBigUInt64LE(startTicks, field(identityLayout, 'start_ticks'));
  return out;
}

export function decodeIdentity(buffer: Buffer): { id: number; flags: number; startTicks: bigint } {
  return {
    id: buffer.readUInt32LE(field(identityLayout, 'id')),
    flags: buffer.readUInt32LE(field(identityLayout, 'flags')),
    startTicks: buffer.readBigUInt64LE(field(identityLayout, 'start_ticks')),
  };
}

export function encodeSubject(
  flags: number,
  egressPosture: KernelAction,
  cidrPrefixLengths: readonly number[] = [],
): Buffer {
  const out = Buffer.alloc(subjectLayout.size);
  writeSubject(out, 0, flags, egressPosture, cidrPrefixLengths);
  return out;
}

export function encodePeerKey(subject: number, peer: number): Buffer {
  const out = Buffer.alloc(peerKeyLayout.size);
  writePeerKey(out, 0, subject, peer);
  return out;
}

/** Encodes a CIDR-rule key: prefixLen counts address bits (0..128) in the IPv4-mapped space. */
export function encodeCidrKey(subject: number, prefixLen: number, addr: Buffer): Buffer {
  const out = Buffer.alloc(cidrKeyLayout.size);
  writeCidrKey(out, 0, subject, prefixLen, addr);
  return out;
}

export function encodeRuleList(rules: readonly KernelRuleEntry[]): Buffer {
  const out = Buffer.alloc(ruleListLayout.size);
  writeRuleList(out, 0, rules);
  return out;
}

// Field offsets of the rule-map layouts, read once: the write functions below run for every
// entry of a rule set, tens of thousands of times per apply.
const SUBJECT_FLAGS = field(subjectLayout, 'flags');
const SUBJECT_POSTURE = field(subjectLayout, 'egress_posture');
const SUBJECT_CIDR_LENGTHS = field(subjectLayout, 'cidr_lengths');
const PEER_KEY_SUBJECT = field(peerKeyLayout, 'subject');
const PEER_KEY_PEER = field(peerKeyLayout, 'peer');
const CIDR_KEY_PREFIXLEN = field(cidrKeyLayout, 'prefixlen');
const CIDR_KEY_SUBJECT = field(cidrKeyLayout, 'subject');
const CIDR_KEY_ADDR = field(cidrKeyLayout, 'addr');
const RULE_LIST_COUNT = field(ruleListLayout, 'count');
const RULE_LIST_RULES = field(ruleListLayout, 'rules');
const RULE_PORT_LO = field(ruleLayout, 'port_lo');
const RULE_PORT_HI = field(ruleLayout, 'port_hi');
const RULE_PROTOCOL = field(ruleLayout, 'protocol');
const RULE_ACTION = field(ruleLayout, 'action');
const RULE_INDEX = field(ruleLayout, 'rule_index');

/**
 * Writes a `struct sigil_subject` at offset of a zero-filled buffer. cidrPrefixLengths are the
 * prefix lengths (0..128) of the subject's CIDR entries. The connect programs look up only
 * these lengths, so an entry of a length missing here never matches. Throws RangeError for a
 * length out of range.
 */
export function writeSubject(
  out: Buffer,
  offset: number,
  flags: number,
  egressPosture: KernelAction,
  cidrPrefixLengths: readonly number[],
): void {
  out.writeUInt32LE(flags >>> 0, offset + SUBJECT_FLAGS);
  out.writeUInt8(egressPosture, offset + SUBJECT_POSTURE);
  for (const length of cidrPrefixLengths) {
    if (!Number.isInteger(length) || length < 0 || length > 128) {
      throw new RangeError(`invalid CIDR prefix length ${length}`);
    }
    // Bit 128 - length of the set, so the lowest set bit is the longest length. Bit n % 64 of
    // word n / 64 is bit n % 8 of byte n / 8 in the little-endian words (x86-64).
    const bit = 128 - length;
    out[offset + SUBJECT_CIDR_LENGTHS + (bit >> 3)] |= 1 << (bit & 7);
  }
}

/** Writes a `struct sigil_peer_key` at offset. */
export function writePeerKey(out: Buffer, offset: number, subject: number, peer: number): void {
  out.writeUInt32LE(subject >>> 0, offset + PEER_KEY_SUBJECT);
  out.writeUInt32LE(peer >>> 0, offset + PEER_KEY_PEER);
}

/** Writes a `struct sigil_cidr_key` at offset; prefixLen counts address bits (0..128). */
export function writeCidrKey(
  out: Buffer,
  offset: number,
  subject: number,
  prefixLen: number,
  addr: Buffer,
): void {
  if (addr.length !== 16) throw new RangeError(`CIDR address must be 16 bytes, got ${addr.length}`);
  if (prefixLen < 0 || prefixLen > 128) throw new RangeError(`invalid prefix length ${prefixLen}`);
  out.writeUInt32LE(32 + prefixLen, offset + CIDR_KEY_PREFIXLEN);
  // The subject is part of the prefix, so it is stored big-endian like the address.
  out.writeUInt32BE(subject >>> 0, offset + CIDR_KEY_SUBJECT);
  // The map is a hash map, so the address bits past the prefix must be zero to match.
  const start = offset + CIDR_KEY_ADDR;
  const whole = prefixLen >> 3;
  addr.copy(out, start, 0, whole);
  if (whole < 16) {
    const bits = prefixLen & 7;
    out[start + whole] = bits === 0 ? 0 : addr[whole] & (0xff << (8 - bits));
    out.fill(0, start + whole + 1, start + 16);
  }
}

/** Writes a `struct sigil_rule_list` at offset of a zero-filled buffer. */
export function writeRuleList(out: Buffer, offset: number, rules: readonly KernelRuleEntry[]): void {
  if (rules.length > SIGIL_RULES_PER_KEY) {
    throw new RangeError(`a rule list can contain at most ${SIGIL_RULES_PER_KEY} rules, got ${rules.length}`);
  }
  out.writeUInt32LE(rules.length, offset + RULE_LIST_COUNT);
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i];
    const at = offset + RULE_LIST_RULES + i * ruleLayout.size;
    out.writeUInt16LE(rule.portLo, at + RULE_PORT_LO);
    out.writeUInt16LE(rule.portHi, at + RULE_PORT_HI);
    out.writeUInt8(rule.protocol, at + RULE_PROTOCOL);
    out.writeUInt8(rule.action, at + RULE_ACTION);
    out.writeUInt32LE(rule.ruleIndex >>> 0, at + RULE_INDEX);
  }
}

function decodeExec(buffer: Buffer, at: number): ExecRecord {
  const l = execRecordLayout;
  return {
    type: 'exec',
    ktimeNs: buffer.readBigUInt64LE(at + field(recordHeaderLayout, 'ktime_ns')),
    tgid: buffer.readUInt32LE(at + field(l, 'tgid')),
    ppid: buffer.readUInt32LE(at + field(l, 'ppid')),
    uid: buffer.readUInt32LE(at + field(l, 'uid')),
    gid: buffer.readUInt32LE(at + field(l, 'gid')),
    inheritedId: buffer.readUInt32LE(at + field(l, 'inherited_id')),
    startBoottimeNs: buffer.readBigUInt64LE(at + field(l, 'start_boottime_ns')),
    parentStartBoottimeNs: buffer.readBigUInt64LE(at + field(l, 'parent_start_boottime_ns')),
    cgroupId: buffer.readBigUInt64LE(at + field(l, 'cgroup_id')),
    comm: cString(buffer, at + field(l, 'comm'), 16),
    filename: cString(buffer, at + field(l, 'filename'), 256),
  };
}

function decodeFork(buffer: Buffer, at: number): ForkRecord {
  const l = forkRecordLayout;
  return {
    type: 'fork',
    ktimeNs: buffer.readBigUInt64LE(at + field(recordHeaderLayout, 'ktime_ns')),
    tgid: buffer.readUInt32LE(at + field(l, 'tgid')),
    ppid: buffer.readUInt32LE(at + field(l, 'ppid')),
    startBoottimeNs: buffer.readBigUInt64LE(at + field(l, 'start_boottime_ns')),
    parentStartBoottimeNs: buffer.readBigUInt64LE(at + field(l, 'parent_start_boottime_ns')),
  };
}

function decodeCgroup(buffer: Buffer, at: number): CgroupRecord {
  const l = cgroupRecordLayout;
  return {
    type: 'cgroup',
    ktimeNs: buffer.readBigUInt64LE(at + field(recordHeaderLayout, 'ktime_ns')),
    pid: buffer.readUInt32LE(at + field(l, 'pid')),
    dstRoot: buffer.readInt32LE(at + field(l, 'dst_root')),
    dstId: buffer.readBigUInt64LE(at + field(l, 'dst_id')),
  };
}

function decodeBind(buffer: Buffer, at: number): BindRecord {
  const l = bindRecordLayout;
  const addrAt = at + field(l, 'addr');
  return {
    type: 'bind',
    ktimeNs: buffer.readBigUInt64LE(at + field(recordHeaderLayout, 'ktime_ns')),
    tgid: buffer.readUInt32LE(at + field(l, 'tgid')),
    ppid: buffer.readUInt32LE(at + field(l, 'ppid')),
    uid: buffer.readUInt32LE(at + field(l, 'uid')),
    gid: buffer.readUInt32LE(at + field(l, 'gid')),
    subjectId: buffer.readUInt32LE(at + field(l, 'subject_id')),
    cgroupId: buffer.readBigUInt64LE(at + field(l, 'cgroup_id')),
    family: buffer.readUInt16LE(at + field(l, 'family')) === AF_INET ? 'ipv4' : 'ipv6',
    address: formatAddress(buffer.subarray(addrAt, addrAt + 16)),
    port: buffer.readUInt16LE(at + field(l, 'port')),
    protocol: buffer.readUInt8(at + field(l, 'protocol')),
    comm: cString(buffer, at + field(l, 'comm'), 16),
  };
}

function decodeAccept(buffer: Buffer, at: number): AcceptRecord {
  const l = acceptRecordLayout;
  const addrAt = at + field(l, 'addr');
  const localAddrAt = at + field(l, 'local_addr');
  return {
    type: 'accept',
    ktimeNs: buffer.readBigUInt64LE(at + field(recordHeaderLayout, 'ktime_ns')),
    tgid: buffer.readUInt32LE(at + field(l, 'tgid')),
    pid: buffer.readUInt32LE(at + field(l, 'pid')),
    ppid: buffer.readUInt32LE(at + field(l, 'ppid')),
    uid: buffer.readUInt32LE(at + field(l, 'uid')),
    gid: buffer.readUInt32LE(at + field(l, 'gid')),
    subjectId: buffer.readUInt32LE(at + field(l, 'subject_id')),
    peerId: buffer.readUInt32LE(at + field(l, 'peer_id')),
    peerTgid: buffer.readUInt32LE(at + field(l, 'peer_tgid')),
    cgroupId: buffer.readBigUInt64LE(at + field(l, 'cgroup_id')),
    family: buffer.readUInt16LE(at + field(l, 'family')) === AF_INET ? 'ipv4' : 'ipv6',
    protocol: buffer.readUInt16LE(at + field(l, 'protocol')),
    address: formatAddress(buffer.subarray(addrAt, addrAt + 16)),
    port: buffer.readUInt16LE(at + field(l, 'port')),
    localAddress: formatAddress(buffer.subarray(localAddrAt, localAddrAt + 16)),
    localPort: buffer.readUInt16LE(at + field(l, 'local_port')),
    comm: cString(buffer, at + field(l, 'comm'), 16),
  };
}

function decodeExit(buffer: Buffer, at: number): ExitRecord {
  const l = exitRecordLayout;
  return {
    type: 'exit',
    ktimeNs: buffer.readBigUInt64LE(at + field(recordHeaderLayout, 'ktime_ns')),
    tgid: buffer.readUInt32LE(at + field(l, 'tgid')),
    exitCode: buffer.readUInt32LE(at + field(l, 'exit_code')),
    startBoottimeNs: buffer.readBigUInt64LE(at + field(l, 'start_boottime_ns')),
  };
}

/** Offsets of the connect record's fields, looked up once: the decoder runs for every connect. */
const CONNECT_OFFSETS = Object.fromEntries(
  connectRecordLayout.fields.map((entry) => [entry.name, entry.offset] as const),
) as Record<string, number>;
const KTIME_OFFSET = field(recordHeaderLayout, 'ktime_ns');
const HEADER_TYPE_OFFSET = field(recordHeaderLayout, 'type');
const HEADER_SIZE_OFFSET = field(recordHeaderLayout, 'size');

/**
 * Values a connect record repeats from the previous one, decoded once: a
 * process's connects mostly share the cgroup, the destination and the comm,
 * and the decoder runs for every connect. Each entry stores the raw words
 * it was decoded from.
 */
const connectRepeats = {
  cgroupLow: -1,
  cgroupHigh: -1,
  cgroupId: 0n,
  addr: new Uint32Array(4),
  addrValid: false,
  address: '',
  comm: new Uint32Array(4),
  commValid: false,
  commText: '',
};

/**
 * Word indexes of the connect record's fields, relative to the record. The
 * u16 fields family and port share one word, and the u8 fields protocol,
 * action, reason and denied another; the asserts check that layout.
 */
const CONNECT_WORDS = {
  ktime: wordIndex(KTIME_OFFSET),
  tgid: wordIndex(CONNECT_OFFSETS.tgid),
  ppid: wordIndex(CONNECT_OFFSETS.ppid),
  uid: wordIndex(CONNECT_OFFSETS.uid),
  gid: wordIndex(CONNECT_OFFSETS.gid),
  subject_id: wordIndex(CONNECT_OFFSETS.subject_id),
  peer_id: wordIndex(CONNECT_OFFSETS.peer_id),
  generation: wordIndex(CONNECT_OFFSETS.generation),
  rule_index: wordIndex(CONNECT_OFFSETS.rule_index),
  cgroup_id: wordIndex(CONNECT_OFFSETS.cgroup_id),
  family: wordIndex(CONNECT_OFFSETS.family),
  protocol: wordIndex(CONNECT_OFFSETS.protocol),
  addr: wordIndex(CONNECT_OFFSETS.addr),
  peer_tgid: wordIndex(CONNECT_OFFSETS.peer_tgid),
  enforcer: wordIndex(CONNECT_OFFSETS.enforcer),
  comm: wordIndex(CONNECT_OFFSETS.comm),
};
if (
  CONNECT_OFFSETS.port !== CONNECT_OFFSETS.family + 2 ||
  CONNECT_OFFSETS.action !== CONNECT_OFFSETS.protocol + 1 ||
  CONNECT_OFFSETS.reason !== CONNECT_OFFSETS.protocol + 2 ||
  CONNECT_OFFSETS.denied !== CONNECT_OFFSETS.protocol + 3
) {
  throw new Error('sigil_connect_record layout changed: update decodeConnect');
}

/** Returns the index of the 32-bit word at a byte offset, which must be 4-byte aligned. */
function wordIndex(offset: number): number {
  if (offset % 4 !== 0) throw new Error(`connect record field at offset ${offset} is not 4-byte aligned`);
  return offset / 4;
}

/** The 32-bit words of the batch decoded last, or null when its bytes are not 4-byte aligned. */
let wordsBuffer: Buffer | null = null;
let wordsView: Uint32Array | null = null;

/**
 * Returns a Uint32Array over a batch's bytes, made once per batch. Indexed
 * reads of it cost a fraction of Buffer.readUInt32LE, which checks its
 * arguments on each call. The words are in host byte order, as the BPF
 * programs on this host wrote them.
 */
function wordsOf(buffer: Buffer): Uint32Array | null {
  if (buffer !== wordsBuffer) {
    wordsBuffer = buffer;
    wordsView =
      buffer.byteOffset % 4 === 0 ? new Uint32Array(buffer.buffer, buffer.byteOffset, buffer.length >>> 2) : null;
  }
  return wordsView;
}

/** Returns an unsigned 64-bit value from its two 32-bit halves, with no BigInt arithmetic below 2^53. */
function u64(low: number, high: number): bigint {
  return high < 0x200000 ? BigInt(high * 0x100000000 + low) : (BigInt(high) << 32n) | BigInt(low);
}

/** Returns an unsigned 64-bit value from its two 32-bit halves in decimal, with no BigInt below 2^53. */
function u64Decimal(low: number, high: number): string {
  return high < 0x200000 ? String(high * 0x100000000 + low) : ((BigInt(high) << 32n) | BigInt(low)).toString();
}

/** Returns whether four words equal those in cached, and stores them in cached. */
function sameWords(w0: number, w1: number, w2: number, w3: number, cached: Uint32Array): boolean {
  if (cached[0] === w0 && cached[1] === w1 && cached[2] === w2 && cached[3] === w3) return true;
  cached[0] = w0;
  cached[1] = w1;
  cached[2] = w2;
  cached[3] = w3;
  return false;
}

function decodeConnect(buffer: Buffer, at: number): ConnectRecord {
  const words = at % 4 === 0 ? wordsOf(buffer) : null;
  if (words !== null) return decodeConnectWords(buffer, at, words);
  // A record that is not 4-byte aligned: decode an aligned copy.
  const copy = Buffer.alloc(connectRecordLayout.size);
  buffer.copy(copy, 0, at, at + connectRecordLayout.size);
  return decodeConnectWords(copy, 0, new Uint32Array(copy.buffer, copy.byteOffset, copy.length >>> 2));
}

/** Decodes the connect record at byte `at` of buffer, whose 32-bit words are words. */
function decodeConnectWords(buffer: Buffer, at: number, words: Uint32Array): ConnectRecord {
  const base = at >>> 2;
  const o = CONNECT_WORDS;
  const repeats = connectRepeats;

  const cgroupLow = words[base + o.cgroup_id];
  const cgroupHigh = words[base + o.cgroup_id + 1];
  if (cgroupLow !== repeats.cgroupLow || cgroupHigh !== repeats.cgroupHigh) {
    repeats.cgroupId = u64(cgroupLow, cgroupHigh);
    repeats.cgroupLow = cgroupLow;
    repeats.cgroupHigh = cgroupHigh;
  }
  const a = base + o.addr;
  if (!sameWords(words[a], words[a + 1], words[a + 2], words[a + 3], repeats.addr) || !repeats.addrValid) {
    const addrAt = at + CONNECT_OFFSETS.addr;
    repeats.address = formatAddress(buffer.subarray(addrAt, addrAt + 16));
    repeats.addrValid = true;
  }
  const c = base + o.comm;
  if (!sameWords(words[c], words[c + 1], words[c + 2], words[c + 3], repeats.comm) || !repeats.commValid) {
    repeats.commText = cString(buffer, at + CONNECT_OFFSETS.comm, 16);
    repeats.commValid = true;
  }
  // family and port share a word, as do protocol, action, reason and denied.
  const familyPort = words[base + o.family];
  const flags = words[base + o.protocol];

  return {
    type: 'connect',
    ktimeNs: u64Decimal(words[base + o.ktime], words[base + o.ktime + 1]),
    tgid: words[base + o.tgid],
    ppid: words[base + o.ppid],
    uid: words[base + o.uid],
    gid: words[base + o.gid],
    subjectId: words[base + o.subject_id],
    peerId: words[base + o.peer_id],
    generation: words[base + o.generation],
    ruleIndex: words[base + o.rule_index],
    cgroupId: repeats.cgroupId,
    family: (familyPort & 0xffff) === AF_INET ? 'ipv4' : 'ipv6',
    address: repeats.address,
    port: familyPort >>> 16,
    protocol: flags & 0xff,
    action: (flags >>> 8) & 0xff,
    reason: (flags >>> 16) & 0xff,
    denied: flags >>> 24 !== 0,
    peerTgid: words[base + o.peer_tgid],
    enforcer: words[base + o.enforcer] === ConnectEnforcer.Lsm ? 'bpf-lsm' : 'cgroup-sock',
    comm: repeats.commText,
  };
}

const DECODERS: Record<number, { layout: StructLayout; decode: (b: Buffer, at: number) => KernelRecord }> = {
  [RecordType.Exec]: { layout: execRecordLayout, decode: decodeExec },
  [RecordType.Exit]: { layout: exitRecordLayout, decode: decodeExit },
  [RecordType.Connect]: { layout: connectRecordLayout, decode: decodeConnect },
  [RecordType.Fork]: { layout: forkRecordLayout, decode: decodeFork },
  [RecordType.Cgroup]: { layout: cgroupRecordLayout, decode: decodeCgroup },
  [RecordType.Bind]: { layout: bindRecordLayout, decode: decodeBind },
  [RecordType.Accept]: { layout: acceptRecordLayout, decode: decodeAccept },
};

/** Decodes one record; a record of unknown type or wrong size comes back as malformed. */
export function decodeRecord(buffer: Buffer, at = 0, length = buffer.length - at): KernelRecord | MalformedRecord {
  if (length < recordHeaderLayout.size) {
    return { type: 'malformed', reason: `record of ${length} bytes is shorter than its header` };
  }
  const type = buffer.readUInt32LE(at + HEADER_TYPE_OFFSET);
  const size = buffer.readUInt32LE(at + HEADER_SIZE_OFFSET);
  const decoder = DECODERS[type];
  if (!decoder) return { type: 'malformed', reason: `unknown record type ${type}` };
  if (size !== decoder.layout.size || length < size) {
    return {
      type: 'malformed',
      reason: `${decoder.layout.name} of ${length} bytes (header size ${size}), expected ${decoder.layout.size}`,
    };
  }
  return decoder.decode(buffer, at);
}

/**
 * Decodes a batch from the ring-buffer consumer: each record framed as a
 * u32 length, a u32 zero, the record bytes, and padding to 8 bytes.
 */
export function decodeBatch(batch: Buffer): (KernelRecord | MalformedRecord)[] {
  const records: (KernelRecord | MalformedRecord)[] = [];
  forEachRecord(batch, (record) => records.push(record));
  return records;
}

/**
 * Decodes the records of a batch (framed as decodeBatch reads them) and
 * passes each to visit as soon as it is decoded, so that a record can be
 * collected before the next one is decoded.
 */
export function forEachRecord(batch: Buffer, visit: (record: KernelRecord | MalformedRecord) => void): void {
  let at = 0;
  while (at + 8 <= batch.length) {
    const length = batch.readUInt32LE(at);
    if (at + 8 + length > batch.length) {
      visit({ type: 'malformed', reason: `frame of ${length} bytes overruns the batch` });
      break;
    }
    visit(decodeRecord(batch, at + 8, length));
    at += 8 + Math.ceil(length / 8) * 8;
  }
}
