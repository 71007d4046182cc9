/**
 * TypeScript mirror of bpf/include/sigil_tp.h: the limits and the decision
 * record of the tracepoint-kill programs, and its decoder. The rule maps
 * reuse the key and value layouts of lsm-layout.ts. test/kernel/tp-layout.test.ts
 * compiles the header with the host C compiler and checks every size, offset
 * and constant here against it. Integers are little-endian, as the BPF
 * programs write them on x86_64.
 */
import {
  KernelAction,
  recordHeaderLayout,
  SIGIL_COMM_LEN,
  SIGIL_PATH_MAX,
  StructLayout,
  defineStruct,
} from './layout';
import { LsmMatch, pathDecisionLayout } from './lsm-layout';

export const SIGIL_TP_MAX_INODE_KEYS = 262144;
export const SIGIL_TP_MAX_DIRECTORY_KEYS = 262144;
export const SIGIL_TP_MAX_WALK_STEPS = 128;

export enum TpRecordType {
  ExecDecision = 24,
  FileDecision = 25,
}

/** System call behind a decision: exec, or the call that opened the file. */
export enum TpSyscall {
  Exec = 0,
  Openat = 1,
  Openat2 = 2,
  Open = 3,
  Creat = 4,
  OpenByHandleAt = 5,
}

const SYSCALL_NAMES: Record<number, string> = {
  [TpSyscall.Exec]: 'execve',
  [TpSyscall.Openat]: 'openat',
  [TpSyscall.Openat2]: 'openat2',
  [TpSyscall.Open]: 'open',
  [TpSyscall.Creat]: 'creat',
  [TpSyscall.OpenByHandleAt]: 'open_by_handle_at',
};

/** Returns the name of a TpSyscall value, or `syscall N` for an unknown one. */
export function syscallName(value: number): string {
  return SYSCALL_NAMES[value] ?? `syscall ${value}`;
}

/** kill_result is an __s32 in C, read with readInt32LE; so is fd. */
export const tpDecisionRecordLayout = defineStruct('sigil_tp_decision_record', [
  { name: 'header', type: recordHeaderLayout },
  { name: 'decision', type: pathDecisionLayout },
  { name: 'kill_result', type: 'u32' },
  { name: 'fd', type: 'u32' },
  { name: 'syscall', type: 'u32' },
  { name: 'write_intent', type: 'u8' },
  { name: 'walk_complete', type: 'u8' },
  { name: 'pad', type: 'u8', count: 2 },
  { name: 'comm', type: 'u8', count: SIGIL_COMM_LEN },
  { name: 'path', type: 'u8', count: SIGIL_PATH_MAX },
]);

/** Every layout the header defines, for the layout test. */
export const ALL_TP_LAYOUTS: StructLayout[] = [tpDecisionRecordLayout];

/** Constants the header defines, by C name, for the layout test. */
export const TP_HEADER_CONSTANTS: Record<string, number> = {
  SIGIL_TP_MAX_INODE_KEYS,
  SIGIL_TP_MAX_DIRECTORY_KEYS,
  SIGIL_TP_MAX_WALK_STEPS,
  SIGIL_RECORD_TP_EXEC_DECISION: TpRecordType.ExecDecision,
  SIGIL_RECORD_TP_FILE_DECISION: TpRecordType.FileDecision,
  SIGIL_TP_SYSCALL_EXEC: TpSyscall.Exec,
  SIGIL_TP_SYSCALL_OPENAT: TpSyscall.Openat,
  SIGIL_TP_SYSCALL_OPENAT2: TpSyscall.Openat2,
  SIGIL_TP_SYSCALL_OPEN: TpSyscall.Open,
  SIGIL_TP_SYSCALL_CREAT: TpSyscall.Creat,
  SIGIL_TP_SYSCALL_OPEN_BY_HANDLE_AT: TpSyscall.OpenByHandleAt,
};

/** One exec or file decision of the tracepoint-kill programs. */
export interface TpDecisionRecord {
  type: 'tp-exec-decision' | 'tp-file-decision';
  ktimeNs: bigint;
  tgid: number;
  ppid: number;
  uid: number;
  gid: number;
  subjectId: number;
  generation: number;
  ruleIndex: number;
  /** Device of the file in the kernel's encoding (major << 20 | minor). */
  dev: number;
  ino: bigint;
  cgroupId: bigint;
  /** Length of path with its NUL, or a negative errno when it could not be read. */
  pathLength: number;
  action: KernelAction;
  /** A DecisionReason value. */
  reason: number;
  /** True when the verdict was Block, so the program sent SIGKILL (see killResult). */
  denied: boolean;
  match: LsmMatch;
  /** bpf_send_signal's result: 0 when SIGKILL was queued (or none was sent), else a negative errno. */
  killResult: number;
  /** The descriptor the open returned; -1 for exec decisions. */
  fd: number;
  syscall: TpSyscall;
  writeIntent: boolean;
  /** The walk up the directory tree reached the root, so every ancestor's rules were looked up. */
  walkComplete: boolean;
  comm: string;
  /** The path the process passed to open() or execve(), not resolved; empty when unreadable. */
  path: string;
}

function cString(buffer: Buffer, offset: number, length: number): string {
  const end = buffer.indexOf(0, offset);
  const stop = end === -1 || end > offset + length ? offset + length : end;
  return buffer.toString('utf8', offset, stop);
}

/**
 * Decodes a tracepoint-kill decision record at `at`. Returns null for other
 * record types, and throws RangeError when the record is shorter than its
 * layout or its header states another size.
 */
export function decodeTpRecord(
  buffer: Buffer,
  at = 0,
  length = buffer.length - at,
): TpDecisionRecord | null {
  if (length < recordHeaderLayout.size) {
    throw new RangeError(`record of ${length} bytes is shorter than its header`);
  }
  const type = buffer.readUInt32LE(at + recordHeaderLayout.offsetOf('type'));
  if (type !== TpRecordType.ExecDecision && type !== TpRecordType.FileDecision) return null;
  const layout = tpDecisionRecordLayout;
  const size = buffer.readUInt32LE(at + recordHeaderLayout.offsetOf('size'));
  if (size !== layout.size || length < layout.size) {
    throw new RangeError(
      `${layout.name} of ${length} bytes (header size ${size}), expected ${layout.size}`,
    );
  }
  const base = at + layout.offsetOf('decision');
  const field = (name: string) => base + pathDecisionLayout.offsetOf(name);
  const own = (name: string) => at + layout.offsetOf(name);
  return {
    type: type === TpRecordType.ExecDecision ? 'tp-exec-decision' : 'tp-file-decision',
    ktimeNs: buffer.readBigUInt64LE(at + recordHeaderLayout.offsetOf('ktime_ns')),
    tgid: buffer.readUInt32LE(field('tgid')),
    ppid: buffer.readUInt32LE(field('ppid')),
    uid: buffer.readUInt32LE(field('uid')),
    gid: buffer.readUInt32LE(field('gid')),
    subjectId: buffer.readUInt32LE(field('subject_id')),
    generation: buffer.readUInt32LE(field('generation')),
    ruleIndex: buffer.readUInt32LE(field('rule_index')),
    dev: buffer.readUInt32LE(field('dev')),
    ino: buffer.readBigUInt64LE(field('ino')),
    cgroupId: buffer.readBigUInt64LE(field('cgroup_id')),
    pathLength: buffer.readInt32LE(field('path_len')),
    action: buffer.readUInt8(field('action')),
    reason: buffer.readUInt8(field('reason')),
    denied: buffer.readUInt8(field('denied')) !== 0,
    match: buffer.readUInt8(field('match')),
    killResult: buffer.readInt32LE(own('kill_result')),
    fd: buffer.readInt32LE(own('fd')),
    syscall: buffer.readUInt32LE(own('syscall')),
    writeIntent: buffer.readUInt8(own('write_intent')) !== 0,
    walkComplete: buffer.readUInt8(own('walk_complete')) !== 0,
    comm: cString(buffer, own('comm'), SIGIL_COMM_LEN),
    path: cString(buffer, own('path'), SIGIL_PATH_MAX),
  };
}
