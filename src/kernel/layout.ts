/**
 * TypeScript mirror of bpf/include/sigil.h: struct layouts, constants, and
 * the encoders and decoders for map keys, map values and ring-buffer records.
 * test/kernel/layout.test.ts compiles the header with the host C compiler and
 * checks every size and offset here against it.
 * All integers are in the host's byte order (little-endian on x86_64), as the
 * BPF programs write them, except fields documented as big-endian.
 */

export type ScalarType = 'u8' | 'u16' | 'u32' | 'u64';

/** One field of a C struct: a scalar, an array of scalars, or a nested struct. */
export interface FieldSpec {
  name: string;
  type: ScalarType | StructLayout;
  count?: number;
}

export interface FieldLayout {
  name: string;
  type: ScalarType | StructLayout;
  count: number;
  offset: number;
  size: number;
}

export interface StructLayout {
  name: string;
  size: number;
  align: number;
  fields: FieldLayout[];
  offsetOf(field: string): number;
}

const SCALAR_SIZE: Record<ScalarType, number> = { u8: 1, u16: 2, u32: 4, u64: 8 };

/** Lays out a struct with the C rules for natural alignment, as clang does for the bpf target. */
export function defineStruct(name: string, specs: FieldSpec[]): StructLayout {
  let offset = 0;
  let align = 1;
  const fields: FieldLayout[] = [];
  for (const spec of specs) {
    const count = spec.count ?? 1;
    const elementSize = typeof spec.type === 'string' ? SCALAR_SIZE[spec.type] : spec.type.size;
    const elementAlign = typeof spec.type === 'string' ? SCALAR_SIZE[spec.type] : spec.type.align;
    offset = Math.ceil(offset / elementAlign) * elementAlign;
    fields.push({ name: spec.name, type: spec.type, count, offset, size: elementSize * count });
    offset += elementSize * count;
    align = Math.max(align, elementAlign);
  }
  const size = Math.ceil(offset / align) * align;
  const byName = new Map(fields.map((field) => [field.name, field]));
  return {
    name,
    size,
    align,
    fields,
    offsetOf(field: string): number {
      const found = byName.get(field);
      if (!found) throw new RangeError(`struct ${name} has no field ${field}`);
      return found.offset;
    },
  };
}

export const SIGIL_PATH_MAX = 256;
export const SIGIL_COMM_LEN = 16;
export const SIGIL_RULES_PER_KEY = 16;
/** 64-bit words of a subject's set of CIDR prefix lengths (0..128). */
export const SIGIL_CIDR_LENGTH_WORDS = 3;
export const SIGIL_MAX_PROCESSES = 131072;
export const SIGIL_MAX_SUBJECTS = 65536;
export const SIGIL_MAX_PEER_KEYS = 262144;
export const SIGIL_MAX_CIDR_KEYS = 262144;
export const SIGIL_MAX_LOCAL_CLIENTS = 65536;
export const SIGIL_GENERATIONS = 4;
export const SIGIL_RINGBUF_BYTES = 16 * 1024 * 1024;
export const SIGIL_PROCESS_RINGBUF_BYTES = 8 * 1024 * 1024;

export enum RecordType {
  Exec = 1,
  Exit = 2,
  Connect = 3,
  Fork = 4,
  Bind = 5,
  Cgroup = 6,
  Accept = 7,
}

export enum KernelAction {
  None = 0,
  Allow = 1,
  Audit = 2,
  Block = 3,
}

export enum DecisionReason {
  NoPolicy = 0,
  Rule = 1,
  Posture = 2,
}

/** Program that decided a connect, in sigil_connect_record.enforcer. */
export enum ConnectEnforcer {
  Cgroup = 0,
  Lsm = 1,
}

/** Indexes of the kernel's drops map: which ring buffer was full. */
export enum DropReason {
  EventsRingBufferFull = 0,
  ProcessRingBufferFull = 1,
}
export const DROP_REASON_COUNT = 2;

export const SUBJECT_HAS_EGRESS_ALLOW = 1 << 0;
/** The subject has no peer-rule entry, so the connect programs skip that map. */
export const SUBJECT_NO_PEER_RULES = 1 << 1;
export const SETTINGS_EMIT_ALL_CONNECTS = 1 << 0;
export const SETTINGS_REPORT_ALLOWED_ACCESS = 1 << 1;
export const SETTINGS_REPORT_UNIDENTIFIED_ACCEPTS = 1 << 2;
export const IDENTITY_INHERITED = 1 << 0;

export const settingsLayout = defineStruct('sigil_settings', [
  { name: 'generation', type: 'u32' },
  { name: 'flags', type: 'u32' },
  { name: 'pad', type: 'u32', count: 2 },
]);

export const identityLayout = defineStruct('sigil_identity', [
  { name: 'id', type: 'u32' },
  { name: 'flags', type: 'u32' },
  { name: 'start_ticks', type: 'u64' },
]);

export const subjectLayout = defineStruct('sigil_subject', [
  { name: 'flags', type: 'u32' },
  { name: 'egress_posture', type: 'u8' },
  { name: 'pad', type: 'u8', count: 3 },
  { name: 'cidr_lengths', type: 'u64', count: SIGIL_CIDR_LENGTH_WORDS },
]);

export const ruleLayout = defineStruct('sigil_rule', [
  { name: 'port_lo', type: 'u16' },
  { name: 'port_hi', type: 'u16' },
  { name: 'protocol', type: 'u8' },
  { name: 'action', type: 'u8' },
  { name: 'pad', type: 'u16' },
  { name: 'rule_index', type: 'u32' },
]);

export const ruleListLayout = defineStruct('sigil_rule_list', [
  { name: 'count', type: 'u32' },
  { name: 'pad', type: 'u32' },
  { name: 'rules', type: ruleLayout, count: SIGIL_RULES_PER_KEY },
]);

export const peerKeyLayout = defineStruct('sigil_peer_key', [
  { name: 'subject', type: 'u32' },
  { name: 'peer', type: 'u32' },
]);

export const cidrKeyLayout = defineStruct('sigil_cidr_key', [
  { name: 'prefixlen', type: 'u32' },
  { name: 'subject', type: 'u32' },
  { name: 'addr', type: 'u8', count: 16 },
]);

export const socketOwnerLayout = defineStruct('sigil_socket_owner', [
  { name: 'tgid', type: 'u32' },
  { name: 'id', type: 'u32' },
  { name: 'start_ticks', type: 'u64' },
]);

export const recordHeaderLayout = defineStruct('sigil_record_header', [
  { name: 'type', type: 'u32' },
  { name: 'size', type: 'u32' },
  { name: 'ktime_ns', type: 'u64' },
]);

export const execRecordLayout = defineStruct('sigil_exec_record', [
  { name: 'header', type: recordHeaderLayout },
  { name: 'tgid', type: 'u32' },
  { name: 'ppid', type: 'u32' },
  { name: 'uid', type: 'u32' },
  { name: 'gid', type: 'u32' },
  { name: 'inherited_id', type: 'u32' },
  { name: 'pad', type: 'u32' },
  { name: 'start_boottime_ns', type: 'u64' },
  { name: 'parent_start_boottime_ns', type: 'u64' },
  { name: 'cgroup_id', type: 'u64' },
  { name: 'comm', type: 'u8', count: SIGIL_COMM_LEN },
  { name: 'filename', type: 'u8', count: SIGIL_PATH_MAX },
]);

export const forkRecordLayout = defineStruct('sigil_fork_record', [
  { name: 'header', type: recordHeaderLayout },
  { name: 'tgid', type: 'u32' },
  { name: 'ppid', type: 'u32' },
  { name: 'start_boottime_ns', type: 'u64' },
  { name: 'parent_start_boottime_ns', type: 'u64' },
]);

export const cgroupRecordLayout = defineStruct('sigil_cgroup_record', [
  { name: 'header', type: recordHeaderLayout },
  { name: 'pid', type: 'u32' },
  { name: 'dst_root', type: 'u32' },
  { name: 'dst_id', type: 'u64' },
]);

export const exitRecordLayout = defineStruct('sigil_exit_record', [
  { name: 'header', type: recordHeaderLayout },
  { name: 'tgid', type: 'u32' },
  { name: 'exit_code', type: 'u32' },
  { name: 'start_boottime_ns', type: 'u64' },
]);

export const connectRecordLayout = defineStruct('sigil_connect_record', [
  { name: 'header', type: recordHeaderLayout },
  { name: 'tgid', type: 'u32' },
  { name: 'ppid', type: 'u32' },
  { name: 'uid', type: 'u32' },
  { name: 'gid', type: 'u32' },
  { name: 'subject_id', type: 'u32' },
  { name: 'peer_id', type: 'u32' },
  { name: 'generation', type: 'u32' },
  { name: 'rule_index', type: 'u32' },
  { name: 'cgroup_id', type: 'u64' },
  { name: 'family', type: 'u16' },
  { name: 'port', type: 'u16' },
  { name: 'protocol', type: 'u8' },
  { name: 'action', type: 'u8' },
  { name: 'reason', type: 'u8' },
  { name: 'denied', type: 'u8' },
  { name: 'addr', type: 'u8', count: 16 },
  { name: 'peer_tgid', type: 'u32' },
  { name: 'enforcer', type: 'u32' },
  { name: 'comm', type: 'u8', count: SIGIL_COMM_LEN },
]);

export const bindRecordLayout = defineStruct('sigil_bind_record', [
  { name: 'header', type: recordHeaderLayout },
  { name: 'tgid', type: 'u32' },
  { name: 'ppid', type: 'u32' },
  { name: 'uid', type: 'u32' },
  { name: 'gid', type: 'u32' },
  { name: 'subject_id', type: 'u32' },
  { name: 'pad', type: 'u32' },
  { name: 'cgroup_id', type: 'u64' },
  { name: 'family', type: 'u16' },
  { name: 'port', type: 'u16' },
  { name: 'protocol', type: 'u8' },
  { name: 'pad2', type: 'u8', count: 3 },
  { name: 'addr', type: 'u8', count: 16 },
  { name: 'comm', type: 'u8', count: SIGIL_COMM_LEN },
]);

export const localClientKeyLayout = defineStruct('sigil_local_client_key', [
  { name: 'netns_cookie', type: 'u64' },
  { name: 'client_addr', type: 'u8', count: 16 },
  { name: 'server_addr', type: 'u8', count: 16 },
  { name: 'client_port', type: 'u16' },
  { name: 'server_port', type: 'u16' },
  { name: 'pad', type: 'u32' },
]);

export const acceptRecordLayout = defineStruct('sigil_accept_record', [
  { name: 'header', type: recordHeaderLayout },
  { name: 'tgid', type: 'u32' },
  { name: 'pid', type: 'u32' },
  { name: 'ppid', type: 'u32' },
  { name: 'uid', type: 'u32' },
  { name: 'gid', type: 'u32' },
  { name: 'subject_id', type: 'u32' },
  { name: 'peer_id', type: 'u32' },
  { name: 'peer_tgid', type: 'u32' },
  { name: 'cgroup_id', type: 'u64' },
  { name: 'family', type: 'u16' },
  { name: 'protocol', type: 'u16' },
  { name: 'port', type: 'u16' },
  { name: 'local_port', type: 'u16' },
  { name: 'addr', type: 'u8', count: 16 },
  { name: 'local_addr', type: 'u8', count: 16 },
  { name: 'comm', type: 'u8', count: SIGIL_COMM_LEN },
]);

/** Every layout the header defines, for the layout test. */
export const ALL_LAYOUTS: StructLayout[] = [
  settingsLayout,
  identityLayout,
  subjectLayout,
  ruleLayout,
  ruleListLayout,
  peerKeyLayout,
  cidrKeyLayout,
  socketOwnerLayout,
  recordHeaderLayout,
  execRecordLayout,
  forkRecordLayout,
  exitRecordLayout,
  connectRecordLayout,
  bindRecordLayout,
  cgroupRecordLayout,
  localClientKeyLayout,
  acceptRecordLayout,
];

/** Constants the header defines, by C name, for the layout test. */
export const HEADER_CONSTANTS: Record<string, number> = {
  SIGIL_PATH_MAX,
  SIGIL_COMM_LEN,
  SIGIL_RULES_PER_KEY,
  SIGIL_CIDR_LENGTH_WORDS,
  SIGIL_MAX_PROCESSES,
  SIGIL_MAX_SUBJECTS,
  SIGIL_MAX_PEER_KEYS,
  SIGIL_MAX_CIDR_KEYS,
  SIGIL_MAX_LOCAL_CLIENTS,
  SIGIL_GENERATIONS,
  SIGIL_RINGBUF_BYTES,
  SIGIL_PROCESS_RINGBUF_BYTES,
  SIGIL_RECORD_EXEC: RecordType.Exec,
  SIGIL_RECORD_EXIT: RecordType.Exit,
  SIGIL_RECORD_CONNECT: RecordType.Connect,
  SIGIL_CONNECT_BY_CGROUP: ConnectEnforcer.Cgroup,
  SIGIL_CONNECT_BY_LSM: ConnectEnforcer.Lsm,
  SIGIL_RECORD_FORK: RecordType.Fork,
  SIGIL_RECORD_CGROUP: RecordType.Cgroup,
  SIGIL_RECORD_BIND: RecordType.Bind,
  SIGIL_RECORD_ACCEPT: RecordType.Accept,
  SIGIL_ACTION_NONE: KernelAction.None,
  SIGIL_ACTION_ALLOW: KernelAction.Allow,
  SIGIL_ACTION_AUDIT: KernelAction.Audit,
  SIGIL_ACTION_BLOCK: KernelAction.Block,
  SIGIL_REASON_NO_POLICY: DecisionReason.NoPolicy,
  SIGIL_REASON_RULE: DecisionReason.Rule,
  SIGIL_REASON_POSTURE: DecisionReason.Posture,
  SIGIL_DROP_EVENTS_RINGBUF_FULL: DropReason.EventsRingBufferFull,
  SIGIL_DROP_PROCESS_RINGBUF_FULL: DropReason.ProcessRingBufferFull,
  SIGIL_DROP_REASONS: DROP_REASON_COUNT,
  SIGIL_SUBJECT_HAS_EGRESS_ALLOW: SUBJECT_HAS_EGRESS_ALLOW,
  SIGIL_SUBJECT_NO_PEER_RULES: SUBJECT_NO_PEER_RULES,
  SIGIL_SETTINGS_EMIT_ALL_CONNECTS: SETTINGS_EMIT_ALL_CONNECTS,
  SIGIL_SETTINGS_REPORT_ALLOWED_ACCESS: SETTINGS_REPORT_ALLOWED_ACCESS,
  SIGIL_SETTINGS_REPORT_UNIDENTIFIED_ACCEPTS: SETTINGS_REPORT_UNIDENTIFIED_ACCEPTS,
  SIGIL_IDENTITY_INHERITED: IDENTITY_INHERITED,
};
