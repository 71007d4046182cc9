/**
 * The audit event as the agent publishes it: the JSON lines carry this shape,
 * and the gRPC stream carries the same fields as sigil.audit.v1.Event
 * (proto/sigil/audit/v1/audit.proto, camelCase here, snake_case on the wire).
 * AUDIT_MESSAGE_FIELDS lists every field, and the compiler checks that list
 * against these interfaces, so a test can compare it with the proto.
 */
export const EVENT_TYPES = ['exec', 'exit', 'connect', 'accept', 'bind', 'file', 'policy', 'agent', 'loss'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export const ACTIONS = ['allow', 'audit', 'block', 'none'] as const;
export type Action = (typeof ACTIONS)[number];

export const RESULTS = ['allowed', 'denied', 'killed'] as const;
export type Result = (typeof RESULTS)[number];

/** Severities from lowest to highest; the order is the one min-severity filters use. */
export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

export const ENFORCERS = ['bpf-lsm', 'cgroup-sock', 'tracepoint-kill', 'apparmor'] as const;
export type Enforcer = (typeof ENFORCERS)[number];

export type LossWhere = 'kernel-ringbuf' | 'client-queue' | 'decode' | 'replay-gap' | 'agent-restart';
export type FileOperation =
  | 'open'
  | 'create'
  | 'read'
  | 'write'
  | 'unlink'
  | 'rename'
  | 'chmod'
  | 'chown'
  | 'mount'
  | 'unmount';
export type AgentState = 'started' | 'stopping' | 'reloaded' | 'rejected' | 'degraded' | 'recovered';

/** Maximum entries of Process.arguments and bytes of each argument; the hub truncates longer ones. */
export const MAX_ARGUMENTS = 64;
export const MAX_ARGUMENT_BYTES = 4096;
/** Maximum entries of Process.ancestry; the hub drops the more distant ancestors. */
export const MAX_ANCESTRY = 8;

export interface Subject {
  spiffeId: string;
}

/** An ancestor of the acting process. */
export interface ProcessRef {
  pid: number;
  executable: string;
  comm: string;
  spiffeId: string;
}

export interface Process {
  /** Thread that acted (kernel pid); equals tgid when the record only carries the process. */
  pid: number;
  ppid: number;
  uid: number;
  gid: number;
  executable: string;
  comm: string;
  /** cgroup v2 id as a decimal string (it exceeds 2^53). */
  cgroupId: string;
  /** Process id (kernel thread group id). */
  tgid: number;
  arguments?: string[];
  containerId?: string;
  /** Parent first, at most MAX_ANCESTRY entries. */
  ancestry?: readonly ProcessRef[];
  /** Exit events: exit status, or 128 + signal number. */
  exitCode?: number;
  /** Exit events: the signal that ended the process, 0 when it exited by itself. */
  exitSignal?: number;
}

export interface Connection {
  family: 'ipv4' | 'ipv6';
  protocol: 'tcp' | 'udp' | 'other';
  /** Remote address: the destination of a connect, the client of an accept; empty for bind. */
  address: string;
  port: number;
  peerSpiffeId: string;
  peerPid: number;
  localAddress?: string;
  localPort?: number;
}

export interface PolicyRef {
  name: string;
  rule: string;
  reason: 'rule' | 'posture' | 'no-policy';
  severity?: Severity;
  tags?: string[];
  message?: string;
}

/** The kernel ring buffer that was full, for kernel-ringbuf losses. */
export type KernelDropReason = 'events-ringbuf-full' | 'process-ringbuf-full';

export interface Loss {
  where: LossWhere;
  /** Events lost; 0 when unknown (agent-restart). */
  count: number;
  firstSeq?: number;
  lastSeq?: number;
  reason?: KernelDropReason;
}

export interface EventObject {
  path: string;
  operation: FileOperation;
  targetPath?: string;
}

export interface AgentStatus {
  state: AgentState;
  version: string;
  identities: number;
  rules: number;
}

export interface AuditEvent {
  /** Per-run sequence number from 1; 0 for loss events made for one client. */
  seq: number;
  time: string;
  /** Kernel boot-time clock in nanoseconds, as a decimal string (it exceeds 2^53). */
  ktimeNs: string;
  node: string;
  type: EventType;
  subject?: Subject;
  process?: Process;
  connection?: Connection;
  policy?: PolicyRef;
  action?: Action;
  result?: Result;
  errno?: number;
  enforcer?: Enforcer;
  message?: string;
  loss?: Loss;
  severity: Severity;
  object?: EventObject;
  agent?: AgentStatus;
  /** Identifies one agent run: (node, runId, seq) is unique. */
  runId: string;
}

/**
 * An event before the hub gives it a sequence number, time, node and run id.
 * Without a severity the hub assigns defaultSeverity(draft).
 */
export type EventDraft = Omit<AuditEvent, 'seq' | 'time' | 'node' | 'runId' | 'severity'> & { severity?: Severity };

/** Wire kind of a field: how the proto declares it and how the TypeScript value looks. */
export type FieldKind =
  | 'string'
  | 'uint32'
  | 'int32'
  /** uint64 carried as a decimal string in TypeScript (values may exceed 2^53). */
  | 'uint64-string'
  /** uint64 carried as a number in TypeScript (sequence numbers and counts stay below 2^53). */
  | 'uint64-number'
  | { message: AuditMessageName };

export interface FieldSpec {
  kind: FieldKind;
  repeated?: boolean;
  /** Optional in TypeScript: a proto3 default value ('', 0, empty list, no message) means absent. */
  optional?: boolean;
  /** Declared `optional` in the proto, so the wire distinguishes 0 from unset and 0 is a value. */
  presence?: boolean;
}

type FieldTable<T> = { [K in keyof Required<T>]: FieldSpec };

const message = (name: AuditMessageName) => ({ message: name });

const eventFields: FieldTable<AuditEvent> = {
  seq: { kind: 'uint64-number' },
  time: { kind: 'string' },
  ktimeNs: { kind: 'uint64-string' },
  node: { kind: 'string' },
  type: { kind: 'string' },
  subject: { kind: message('Subject'), optional: true },
  process: { kind: message('Process'), optional: true },
  connection: { kind: message('Connection'), optional: true },
  policy: { kind: message('PolicyRef'), optional: true },
  action: { kind: 'string', optional: true },
  result: { kind: 'string', optional: true },
  errno: { kind: 'int32', optional: true },
  enforcer: { kind: 'string', optional: true },
  message: { kind: 'string', optional: true },
  loss: { kind: message('Loss'), optional: true },
  severity: { kind: 'string' },
  object: { kind: message('EventObject'), optional: true },
  agent: { kind: message('AgentStatus'), optional: true },
  runId: { kind: 'string' },
};

const subjectFields: FieldTable<Subject> = { spiffeId: { kind: 'string' } };

const processFields: FieldTable<Process> = {
  pid: { kind: 'uint32' },
  ppid: { kind: 'uint32' },
  uid: { kind: 'uint32' },
  gid: { kind: 'uint32' },
  executable: { kind: 'string' },
  comm: { kind: 'string' },
  cgroupId: { kind: 'uint64-string' },
  tgid: { kind: 'uint32' },
  arguments: { kind: 'string', repeated: true, optional: true },
  containerId: { kind: 'string', optional: true },
  ancestry: { kind: message('ProcessRef'), repeated: true, optional: true },
  exitCode: { kind: 'int32', optional: true, presence: true },
  exitSignal: { kind: 'uint32', optional: true, presence: true },
};

const processRefFields: FieldTable<ProcessRef> = {
  pid: { kind: 'uint32' },
  executable: { kind: 'string' },
  comm: { kind: 'string' },
  spiffeId: { kind: 'string' },
};

const connectionFields: FieldTable<Connection> = {
  family: { kind: 'string' },
  protocol: { kind: 'string' },
  address: { kind: 'string' },
  port: { kind: 'uint32' },
  peerSpiffeId: { kind: 'string' },
  peerPid: { kind: 'uint32' },
  localAddress: { kind: 'string', optional: true },
  localPort: { kind: 'uint32', optional: true },
};

const policyFields: FieldTable<PolicyRef> = {
  name: { kind: 'string' },
  rule: { kind: 'string' },
  reason: { kind: 'string' },
  severity: { kind: 'string', optional: true },
  tags: { kind: 'string', repeated: true, optional: true },
  message: { kind: 'string', optional: true },
};

const lossFields: FieldTable<Loss> = {
  where: { kind: 'string' },
  count: { kind: 'uint64-number' },
  firstSeq: { kind: 'uint64-number', optional: true },
  lastSeq: { kind: 'uint64-number', optional: true },
  reason: { kind: 'string', optional: true },
};

const objectFields: FieldTable<EventObject> = {
  path: { kind: 'string' },
  operation: { kind: 'string' },
  targetPath: { kind: 'string', optional: true },
};

const agentFields: FieldTable<AgentStatus> = {
  state: { kind: 'string' },
  version: { kind: 'string' },
  identities: { kind: 'uint32' },
  rules: { kind: 'uint32' },
};

/**
 * Every field of every sigil.audit.v1 message that an Event contains, by
 * proto message name, in camelCase. The FieldTable type makes the compiler
 * reject a list that misses or adds a key of the TypeScript interface.
 */
export const AUDIT_MESSAGE_FIELDS = {
  Event: eventFields,
  Subject: subjectFields,
  Process: processFields,
  ProcessRef: processRefFields,
  Connection: connectionFields,
  PolicyRef: policyFields,
  Loss: lossFields,
  EventObject: objectFields,
  AgentStatus: agentFields,
};

export type AuditMessageName =
  | 'Event'
  | 'Subject'
  | 'Process'
  | 'ProcessRef'
  | 'Connection'
  | 'PolicyRef'
  | 'Loss'
  | 'EventObject'
  | 'AgentStatus';

/** Server-side filter of a subscription; an absent or empty criterion passes every event. */
export interface EventFilter {
  types?: EventType[];
  /** Subject SPIFFE ID equal to this or below it at a path segment boundary. */
  subjectPrefix?: string;
  /** Subject SPIFFE ID equal to this. */
  subjectId?: string;
  actions?: Action[];
  /** Events without a result never pass a non-empty result list. */
  results?: Result[];
  minSeverity?: Severity;
}

/** Returns the rank of a severity in SEVERITIES (info is 0). */
export function severityRank(severity: Severity): number {
  return SEVERITIES.indexOf(severity);
}

/** Returns whether an event passes a filter; an empty filter passes everything. */
export function matchesFilter(event: AuditEvent, filter: EventFilter): boolean {
  return matchesFields(
    filter,
    event.type,
    event.subject?.spiffeId ?? '',
    event.action,
    event.result,
    event.severity,
  );
}

/**
 * Returns whether an event with these fields passes a filter. subjectId is
 * the subject's SPIFFE ID, or '' for an event without a subject.
 */
export function matchesFields(
  filter: EventFilter,
  type: EventType,
  subjectId: string,
  action: Action | undefined,
  result: Result | undefined,
  severity: Severity,
): boolean {
  if (filter.types?.length && !filter.types.includes(type)) return false;
  if (filter.subjectId && subjectId !== filter.subjectId) return false;
  if (filter.subjectPrefix) {
    const prefix = filter.subjectPrefix.replace(/\/$/, '');
    if (subjectId !== prefix && !subjectId.startsWith(`${prefix}/`)) return false;
  }
  if (filter.actions?.length && (action === undefined || !filter.actions.includes(action))) return false;
  if (filter.results?.length && (result === undefined || !filter.results.includes(result))) return false;
  if (filter.minSeverity && severityRank(severity) < severityRank(filter.minSeverity)) return false;
  return true;
}

const LOSS_SEVERITY: Record<LossWhere, Severity> = {
  // Kernel records never reached user space: enforcement happened without an audit trail.
  'kernel-ringbuf': 'high',
  decode: 'medium',
  'client-queue': 'medium',
  'replay-gap': 'medium',
  'agent-restart': 'medium',
};

/**
 * Returns the severity of an event whose producer set none: the policy's
 * severity when the rule assigns one, else a default by kind (docs/events.md
 * has the table).
 */
export function defaultSeverity(draft: EventDraft): Severity {
  if (draft.policy?.severity) return draft.policy.severity;
  if (draft.type === 'loss') return draft.loss ? LOSS_SEVERITY[draft.loss.where] : 'medium';
  if (draft.type === 'agent') {
    const state = draft.agent?.state;
    return state === 'rejected' || state === 'degraded' ? 'medium' : 'info';
  }
  if (draft.result === 'denied' || draft.action === 'block') return 'medium';
  if (draft.action === 'audit') return 'low';
  return 'info';
}
