/**
 * TypeScript mirror of bpf/include/sigil_tp.h: the limits and the decision
 * record of the tracepoint-kill programs, and its decoder. The rule maps
 * reuse the key and value layouts of lsm-layout.ts. test/kernel/tp-layout.test.ts
 * compiles the header with the host C compiler and checks every size, offset
 * and constant here against it. Integers are little-endian, as the BPF
 * programs write them on x86_64.
 */
import {
  recordHeaderLayout,
  SIGIL_COMM_LEN,
  SIGIL_PATH_MAX,
  StructLayout,
  defineStruct,
} from './layout';
import {
  checkRecordSize,
  decisionRecordType,
  decodePathDecision,
  PathDecision,
  pathDecisionLayout,
} from './lsm-layout';

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
export interface TpDecisionRecord extends PathDecision {
  type: 'tp-exec-decision' | 'tp-file-decision';
  /** True when the verdict was Block, so the program sent SIGKILL (see killResult). */
  denied: boolean;
  /** bpf_send_signal's result: 0 when SIGKILL was queued (or none was sent), else a negative errno. */
  killResult: number;
  /** The descriptor the open returned; -1 for exec decisions. */
  fd: number;
  syscall: TpSyscall;
  writeIntent: boolean;
  /** The walk up the directory tree reached the root, so every ancestor's rules were looked up. */
  walkComplete: boolean;
  /**
   * The path the process passed to open() or execve(), not resolved; empty when unreadable.
   * pathLength is its length with its NUL, or a negative errno when it could not be read.
   */
  path: string;
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
  const type = decisionRecordType(buffer, at, length);
  if (type !== TpRecordType.ExecDecision && type !== TpRecordType.FileDecision) return null;
  const layout = tpDecisionRecordLayout;
  checkRecordSize(buffer, at, length, layout);
  const own = (name: string) => at + layout.offsetOf(name);
  return {
    type: type === TpRecordType.ExecDecision ? 'tp-exec-decision' : 'tp-file-decision',
    ...decodePathDecision(buffer, at, layout),
    killResult: buffer.readInt32LE(own('kill_result')),
    fd: buffer.readInt32LE(own('fd')),
    syscall: buffer.readUInt32LE(own('syscall')),
    writeIntent: buffer.readUInt8(own('write_intent')) !== 0,
    walkComplete: buffer.readUInt8(own('walk_complete')) !== 0,
  };
}
