/**
 * TypeScript mirror of bpf/include/sigil_lsm.h: struct layouts, constants and
 * the decoders of the exec and file decision records of the BPF LSM programs.
 * test/kernel/lsm-layout.test.ts compiles the header with the host C compiler
 * and checks every size, offset and constant here against it.
 * Integers are little-endian, as the BPF programs write them on x86_64.
 */
import {
  KernelAction,
  recordHeaderLayout,
  SIGIL_COMM_LEN,
  SIGIL_PATH_MAX,
  StructLayout,
  defineStruct,
} from './layout';
import { cString } from './codec';

export const SIGIL_LSM_PATH_BUFFER = 4096;
export const SIGIL_LSM_MAX_INODE_KEYS = 262144;
export const SIGIL_LSM_MAX_DIRECTORY_KEYS = 262144;
export const SIGIL_LSM_MAX_LISTENERS = 65536;

export const SIGIL_LSM_FNV_OFFSET_BASIS = 0xcbf29ce484222325n;
export const SIGIL_LSM_FNV_PRIME = 0x100000001b3n;

export enum LsmRecordType {
  ExecDecision = 16,
  FileDecision = 17,
}

/** Kind of a path rule: program execution (lsm/bprm_check_security) or file opens (lsm/file_open). */
export enum LsmKind {
  Exec = 1,
  File = 2,
}

/** Match type of the rule that decided. */
export enum LsmMatch {
  None = 0,
  /** An exact-file rule on the (device, inode). */
  Inode = 1,
  /** A non-recursive rule on the parent directory, or a rule on the opened directory itself. */
  Directory = 2,
  /** A recursive rule on an ancestor directory. */
  Subtree = 3,
}

export const LSM_SUBJECT_HAS_EXEC_ALLOW = 1 << 0;
export const LSM_SUBJECT_HAS_FILE_ALLOW = 1 << 1;
/** The subject has no exec directory rules, so lsm/bprm_check_security resolves no path to match. */
export const LSM_SUBJECT_NO_EXEC_DIRECTORIES = 1 << 2;
/** The subject has no file directory rules, so lsm/file_open resolves no path to match. */
export const LSM_SUBJECT_NO_FILE_DIRECTORIES = 1 << 3;
/** The subject has no exec exact-file rules, so lsm/bprm_check_security skips the inode lookup. */
export const LSM_SUBJECT_NO_EXEC_INODES = 1 << 4;
/** The subject has no file exact-file rules, so lsm/file_open skips the inode lookup. */
export const LSM_SUBJECT_NO_FILE_INODES = 1 << 5;

export const lsmConfigLayout = defineStruct('sigil_lsm_config', [
  { name: 'hash_seed', type: 'u64' },
]);

export const lsmSubjectLayout = defineStruct('sigil_lsm_subject', [
  { name: 'flags', type: 'u32' },
  { name: 'exec_posture', type: 'u8' },
  { name: 'file_posture', type: 'u8' },
  { name: 'pad', type: 'u8', count: 2 },
]);

export const lsmVerdictLayout = defineStruct('sigil_lsm_verdict', [
  { name: 'rule_index', type: 'u32' },
  { name: 'action', type: 'u8' },
  { name: 'pad', type: 'u8', count: 3 },
]);

export const lsmAccessLayout = defineStruct('sigil_lsm_access', [
  { name: 'read', type: lsmVerdictLayout },
  { name: 'write', type: lsmVerdictLayout },
]);

export const lsmInodeKeyLayout = defineStruct('sigil_lsm_inode_key', [
  { name: 'ino', type: 'u64' },
  { name: 'dev', type: 'u32' },
  { name: 'subject', type: 'u32' },
  { name: 'kind', type: 'u32' },
  { name: 'pad', type: 'u32' },
]);

export const lsmDirectoryKeyLayout = defineStruct('sigil_lsm_directory_key', [
  { name: 'hash', type: 'u64' },
  { name: 'subject', type: 'u32' },
  { name: 'kind', type: 'u32' },
]);

export const lsmDirectoryRulesLayout = defineStruct('sigil_lsm_directory_rules', [
  { name: 'direct', type: lsmAccessLayout },
  { name: 'subtree', type: lsmAccessLayout },
]);

export const lsmListenerKeyLayout = defineStruct('sigil_lsm_listener_key', [
  { name: 'addr', type: 'u8', count: 16 },
  { name: 'netns', type: 'u32' },
  { name: 'port', type: 'u16' },
  { name: 'protocol', type: 'u8' },
  { name: 'pad', type: 'u8' },
]);

export const lsmListenerLayout = defineStruct('sigil_lsm_listener', [
  { name: 'sock', type: 'u64' },
  { name: 'cookie', type: 'u64' },
  { name: 'tgid', type: 'u32' },
  { name: 'id', type: 'u32' },
  { name: 'start_ticks', type: 'u64' },
]);

/** path_len is an __s32 in C: same size and alignment as u32, read with readInt32LE. */
export const pathDecisionLayout = defineStruct('sigil_path_decision', [
  { name: 'tgid', type: 'u32' },
  { name: 'ppid', type: 'u32' },
  { name: 'uid', type: 'u32' },
  { name: 'gid', type: 'u32' },
  { name: 'subject_id', type: 'u32' },
  { name: 'generation', type: 'u32' },
  { name: 'rule_index', type: 'u32' },
  { name: 'dev', type: 'u32' },
  { name: 'ino', type: 'u64' },
  { name: 'cgroup_id', type: 'u64' },
  { name: 'path_len', type: 'u32' },
  { name: 'action', type: 'u8' },
  { name: 'reason', type: 'u8' },
  { name: 'denied', type: 'u8' },
  { name: 'match', type: 'u8' },
]);

export const execDecisionRecordLayout = defineStruct('sigil_exec_decision_record', [
  { name: 'header', type: recordHeaderLayout },
  { name: 'decision', type: pathDecisionLayout },
  { name: 'comm', type: 'u8', count: SIGIL_COMM_LEN },
  { name: 'path', type: 'u8', count: SIGIL_PATH_MAX },
]);

export const fileDecisionRecordLayout = defineStruct('sigil_file_decision_record', [
  { name: 'header', type: recordHeaderLayout },
  { name: 'decision', type: pathDecisionLayout },
  { name: 'write_intent', type: 'u8' },
  { name: 'exec_open', type: 'u8' },
  { name: 'pad', type: 'u8', count: 6 },
  { name: 'comm', type: 'u8', count: SIGIL_COMM_LEN },
  { name: 'path', type: 'u8', count: SIGIL_PATH_MAX },
]);

/** Every layout the header defines, for the layout test. */
export const ALL_LSM_LAYOUTS: StructLayout[] = [
  lsmConfigLayout,
  lsmSubjectLayout,
  lsmVerdictLayout,
  lsmAccessLayout,
  lsmInodeKeyLayout,
  lsmDirectoryKeyLayout,
  lsmDirectoryRulesLayout,
  lsmListenerKeyLayout,
  lsmListenerLayout,
  pathDecisionLayout,
  execDecisionRecordLayout,
  fileDecisionRecordLayout,
];

/** Constants the header defines, by C name, for the layout test. */
export const LSM_HEADER_CONSTANTS: Record<string, number | bigint> = {
  SIGIL_LSM_PATH_BUFFER,
  SIGIL_LSM_MAX_INODE_KEYS,
  SIGIL_LSM_MAX_DIRECTORY_KEYS,
  SIGIL_LSM_MAX_LISTENERS,
  SIGIL_LSM_FNV_OFFSET_BASIS,
  SIGIL_LSM_FNV_PRIME,
  SIGIL_RECORD_EXEC_DECISION: LsmRecordType.ExecDecision,
  SIGIL_RECORD_FILE_DECISION: LsmRecordType.FileDecision,
  SIGIL_LSM_KIND_EXEC: LsmKind.Exec,
  SIGIL_LSM_KIND_FILE: LsmKind.File,
  SIGIL_LSM_MATCH_NONE: LsmMatch.None,
  SIGIL_LSM_MATCH_INODE: LsmMatch.Inode,
  SIGIL_LSM_MATCH_DIRECTORY: LsmMatch.Directory,
  SIGIL_LSM_MATCH_SUBTREE: LsmMatch.Subtree,
  SIGIL_LSM_SUBJECT_HAS_EXEC_ALLOW: LSM_SUBJECT_HAS_EXEC_ALLOW,
  SIGIL_LSM_SUBJECT_HAS_FILE_ALLOW: LSM_SUBJECT_HAS_FILE_ALLOW,
  SIGIL_LSM_SUBJECT_NO_EXEC_DIRECTORIES: LSM_SUBJECT_NO_EXEC_DIRECTORIES,
  SIGIL_LSM_SUBJECT_NO_FILE_DIRECTORIES: LSM_SUBJECT_NO_FILE_DIRECTORIES,
  SIGIL_LSM_SUBJECT_NO_EXEC_INODES: LSM_SUBJECT_NO_EXEC_INODES,
  SIGIL_LSM_SUBJECT_NO_FILE_INODES: LSM_SUBJECT_NO_FILE_INODES,
};

/** Fields that exec and file decision records share. */
export interface PathDecision {
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
  /** bpf_d_path's result: the full path's length with its NUL, or a negative errno. */
  pathLength: number;
  action: KernelAction;
  /** A DecisionReason value. */
  reason: number;
  denied: boolean;
  match: LsmMatch;
  comm: string;
  /** The resolved path, cut to SIGIL_PATH_MAX - 1 bytes; empty when bpf_d_path failed. */
  path: string;
}

export interface ExecDecisionRecord extends PathDecision {
  type: 'exec-decision';
}

export interface FileDecisionRecord extends PathDecision {
  type: 'file-decision';
  /** The open had FMODE_WRITE or O_TRUNC. */
  writeIntent: boolean;
  /** execve opened the file (__FMODE_EXEC in f_flags). */
  execOpen: boolean;
}

export type LsmRecord = ExecDecisionRecord | FileDecisionRecord;

/**
 * Decodes the header time, the decision and the comm and path fields of a
 * record at `at` whose layout embeds pathDecisionLayout as `decision`.
 */
export function decodePathDecision(buffer: Buffer, at: number, layout: StructLayout): PathDecision {
  const base = at + layout.offsetOf('decision');
  const field = (name: string) => base + pathDecisionLayout.offsetOf(name);
  return {
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
    comm: cString(buffer, at + layout.offsetOf('comm'), SIGIL_COMM_LEN),
    path: cString(buffer, at + layout.offsetOf('path'), SIGIL_PATH_MAX),
  };
}

/**
 * Returns the type in the header of the record at `at`, and throws
 * RangeError when the record is shorter than its header.
 */
export function decisionRecordType(buffer: Buffer, at: number, length: number): number {
  if (length < recordHeaderLayout.size) {
    throw new RangeError(`record of ${length} bytes is shorter than its header`);
  }
  return buffer.readUInt32LE(at + recordHeaderLayout.offsetOf('type'));
}

/** Throws RangeError when the record at `at` is shorter than layout or its header states another size. */
export function checkRecordSize(
  buffer: Buffer,
  at: number,
  length: number,
  layout: StructLayout,
): void {
  const size = buffer.readUInt32LE(at + recordHeaderLayout.offsetOf('size'));
  if (size !== layout.size || length < layout.size) {
    throw new RangeError(
      `${layout.name} of ${length} bytes (header size ${size}), expected ${layout.size}`,
    );
  }
}

/**
 * Decodes an exec or file decision record at `at`. Returns null for other
 * record types, and throws RangeError when the record is shorter than its
 * layout or its header states another size.
 */
export function decodeLsmRecord(
  buffer: Buffer,
  at = 0,
  length = buffer.length - at,
): LsmRecord | null {
  const type = decisionRecordType(buffer, at, length);
  let layout: StructLayout;
  if (type === LsmRecordType.ExecDecision) layout = execDecisionRecordLayout;
  else if (type === LsmRecordType.FileDecision) layout = fileDecisionRecordLayout;
  else return null;
  checkRecordSize(buffer, at, length, layout);

  const decision = decodePathDecision(buffer, at, layout);
  if (type === LsmRecordType.ExecDecision) return { type: 'exec-decision', ...decision };
  return {
    type: 'file-decision',
    ...decision,
    writeIntent: buffer.readUInt8(at + layout.offsetOf('write_intent')) !== 0,
    execOpen: buffer.readUInt8(at + layout.offsetOf('exec_open')) !== 0,
  };
}
