import { AcceptRecord, BindRecord, ConnectRecord, ExecRecord, ExitRecord } from '../kernel/codec';
import { DecisionReason, KernelAction } from '../kernel/layout';
import { RuleRef } from '../policy/compiled-rule-set';
import {
  Action,
  AgentState,
  Connection,
  Enforcer,
  EventDraft,
  EventObject,
  LossWhere,
  PolicyRef,
  Process,
  ProcessRef,
  Result,
  Severity,
  Subject,
} from '../events/audit-event';
import { ShapedDraft } from '../events/event-hub';

const EPERM = 1;

const ACTION_NAMES: Record<number, Action> = {
  [KernelAction.None]: 'none',
  [KernelAction.Allow]: 'allow',
  [KernelAction.Audit]: 'audit',
  [KernelAction.Block]: 'block',
};

const REASON_NAMES: Record<number, PolicyRef['reason']> = {
  [DecisionReason.NoPolicy]: 'no-policy',
  [DecisionReason.Rule]: 'rule',
  [DecisionReason.Posture]: 'posture',
};

/** Returns the event's name of a KernelAction value, or 'none' for an unknown one. */
export function actionName(action: number): Action {
  return ACTION_NAMES[action] ?? 'none';
}

function protocolName(protocol: number): 'tcp' | 'udp' | 'other' {
  if (protocol === 6) return 'tcp';
  if (protocol === 17) return 'udp';
  return 'other';
}

/** Severity, tags and message that a rule adds to its events, when the policy file sets them. */
export interface RuleDetails {
  severity?: Severity;
  tags?: readonly string[];
  message?: string;
}

/** Process context that the kernel record lacks and the agent may have. */
export interface ProcessContext {
  /** argv, when the agent read it (for example from /proc/<pid>/cmdline). */
  arguments?: string[];
  containerId?: string;
  /** Parent first. */
  ancestry?: readonly ProcessRef[];
}

/** Fields of a kernel record that describe the process that made the call. */
export interface RecordProcess {
  tgid: number;
  ppid: number;
  uid: number;
  gid: number;
  comm: string;
  cgroupId: bigint;
}

/** Builds the process of an event from a kernel record and the executable the agent attested. */
export function processOfRecord(record: RecordProcess, executable: string): Process {
  return {
    pid: record.tgid,
    ppid: record.ppid,
    uid: record.uid,
    gid: record.gid,
    executable,
    comm: record.comm,
    cgroupId: record.cgroupId.toString(),
    tgid: record.tgid,
  };
}

/** Adds the optional process context, leaving out what is unknown. */
function withContext(process: Process, context: ProcessContext | undefined): Process {
  if (context?.arguments?.length) process.arguments = context.arguments;
  if (context?.containerId) process.containerId = context.containerId;
  if (context?.ancestry?.length) process.ancestry = context.ancestry;
  return process;
}

/** Copies a rule's severity, tags and message into a policy reference, leaving out unset ones. */
function withRuleDetails(policy: PolicyRef, details: RuleDetails | undefined): PolicyRef {
  if (details?.severity) policy.severity = details.severity;
  if (details?.tags?.length) policy.tags = [...details.tags];
  if (details?.message) policy.message = details.message;
  return policy;
}

/*
 * Events share frozen subjects and policy references, one per SPIFFE ID and
 * one per rule. The JSON and protobuf encoders copy the cached bytes of a
 * shared object in place of encoding it again, and the hot path allocates
 * less. Each table starts over at MAX_SHARED entries, which bounds its memory.
 */
const MAX_SHARED = 4096;
const subjects = new Map<string, Subject>();
/** Policy references of rule decisions by rule, then by reason; the others by reason and name. */
const policiesByRule = new WeakMap<RuleRef, Map<string, PolicyRef>>();
const policiesWithoutRule = new Map<string, PolicyRef>();

/** Returns the shared frozen subject of a SPIFFE ID ('' for none). */
export function sharedSubject(spiffeId: string | null): Subject {
  const id = spiffeId ?? '';
  let subject = subjects.get(id);
  if (subject === undefined) {
    if (subjects.size >= MAX_SHARED) subjects.clear();
    subject = Object.freeze({ spiffeId: id });
    subjects.set(id, subject);
  }
  return subject;
}

/** Returns the shared frozen policy reference of a connect decision. */
function connectPolicy(
  reason: PolicyRef['reason'],
  rule: (RuleRef & RuleDetails) | undefined,
  posturePolicy: string | undefined,
): PolicyRef {
  let table = policiesWithoutRule;
  if (rule !== undefined) {
    let byReason = policiesByRule.get(rule);
    if (byReason === undefined) {
      byReason = new Map<string, PolicyRef>();
      policiesByRule.set(rule, byReason);
    }
    table = byReason;
  }
  const key = `${reason}\0${posturePolicy ?? ''}`;
  let policy = table.get(key);
  if (policy === undefined) {
    policy = withRuleDetails(
      {
        name: rule?.policy ?? posturePolicy ?? '',
        rule: rule?.rule ?? (reason === 'posture' ? 'egressPosture' : ''),
        reason,
      },
      rule,
    );
    if (policy.tags) Object.freeze(policy.tags);
    Object.freeze(policy);
    if (table.size >= MAX_SHARED) table.clear();
    table.set(key, policy);
  }
  return policy;
}

/** Builds the exec event for a process the agent attested (spiffeId null: no identity). */
export function execEvent(
  record: ExecRecord,
  spiffeId: string | null,
  executable: string,
  context?: ProcessContext,
): EventDraft {
  return {
    type: 'exec',
    ktimeNs: record.ktimeNs.toString(),
    subject: sharedSubject(spiffeId),
    process: withContext(processOfRecord(record, executable), context),
    action: 'none',
    result: 'allowed',
  };
}

/**
 * Converts the kernel's task exit_code (a wait status: the exit status in
 * bits 8..15, the terminating signal in bits 0..6) to the shell convention:
 * the exit status, or 128 + signal number.
 */
export function exitStatus(waitStatus: number): number {
  const signal = waitStatus & 0x7f;
  return signal !== 0 ? 128 + signal : (waitStatus >> 8) & 0xff;
}

/** Details of an exiting process that the exit record lacks, from the agent's process cache. */
export interface ExitContext extends ProcessContext {
  spiffeId: string | null;
  executable: string | null;
  ppid: number;
  uid: number;
  gid: number;
  comm: string;
  cgroupId: string;
}

/** Builds the exit event of a process. */
export function exitEvent(record: ExitRecord, context: ExitContext): EventDraft {
  const process = withContext(
    {
      pid: record.tgid,
      ppid: context.ppid,
      uid: context.uid,
      gid: context.gid,
      executable: context.executable ?? '',
      comm: context.comm,
      cgroupId: context.cgroupId,
      tgid: record.tgid,
    },
    context,
  );
  process.exitCode = exitStatus(record.exitCode);
  process.exitSignal = record.exitCode & 0x7f;
  return {
    type: 'exit',
    ktimeNs: record.ktimeNs.toString(),
    subject: sharedSubject(context.spiffeId),
    process,
    action: 'none',
    result: 'allowed',
  };
}

export interface ConnectContext extends ProcessContext {
  subject: string | null;
  peer: string | null;
  executable: string | null;
  /** The rule that decided, when reason is 'rule'. */
  rule?: RuleRef & RuleDetails;
  /** The policies whose posture decided, when reason is 'posture'. */
  posturePolicy?: string;
}

/** The last process of each tgid's connect events, with the facts it was built from. */
const connectProcesses = new Map<
  number,
  { process: Process; cgroupId: bigint; context: ProcessContext }
>();
/** The last connection of each tgid's connect events, with the protocol number it names. */
const connectConnections = new Map<number, { connection: Connection; protocol: number }>();

/** Returns a frozen copy of a list, or the list itself when it is frozen already. */
function frozenList<T extends object>(values: readonly T[]): readonly T[] {
  if (Object.isFrozen(values) && values.every((value) => Object.isFrozen(value))) return values;
  return Object.freeze(values.map((value) => Object.freeze({ ...value })));
}

/**
 * Returns the frozen process of a connect event: the one of the process's
 * previous connect event when every fact is the same, so that the encoders
 * copy its cached bytes, else a new one.
 */
function connectProcess(record: ConnectRecord, context: ConnectContext): Process {
  const executable = context.executable ?? '';
  const last = connectProcesses.get(record.tgid);
  if (
    last !== undefined &&
    last.cgroupId === record.cgroupId &&
    last.process.ppid === record.ppid &&
    last.process.uid === record.uid &&
    last.process.gid === record.gid &&
    last.process.executable === executable &&
    last.process.comm === record.comm &&
    last.context.arguments === context.arguments &&
    last.context.containerId === context.containerId &&
    last.context.ancestry === context.ancestry
  ) {
    return last.process;
  }
  const process = withContext(processOfRecord(record, executable), context);
  if (process.arguments) process.arguments = Object.freeze([...process.arguments]) as string[];
  if (process.ancestry) process.ancestry = frozenList(process.ancestry);
  Object.freeze(process);
  if (connectProcesses.size >= MAX_SHARED) connectProcesses.clear();
  connectProcesses.set(record.tgid, {
    process,
    cgroupId: record.cgroupId,
    context: {
      arguments: context.arguments,
      containerId: context.containerId,
      ancestry: context.ancestry,
    },
  });
  return process;
}

/** Returns the frozen connection of a connect event, reused as connectProcess reuses processes. */
function connectConnection(record: ConnectRecord, peerSpiffeId: string): Connection {
  const last = connectConnections.get(record.tgid);
  if (
    last !== undefined &&
    last.protocol === record.protocol &&
    last.connection.family === record.family &&
    last.connection.address === record.address &&
    last.connection.port === record.port &&
    last.connection.peerSpiffeId === peerSpiffeId &&
    last.connection.peerPid === record.peerTgid
  ) {
    return last.connection;
  }
  const connection: Connection = Object.freeze({
    family: record.family,
    protocol: protocolName(record.protocol),
    address: record.address,
    port: record.port,
    peerSpiffeId,
    peerPid: record.peerTgid,
  });
  if (connectConnections.size >= MAX_SHARED) connectConnections.clear();
  connectConnections.set(record.tgid, { connection, protocol: record.protocol });
  return connection;
}

/** Builds the event for one connect decision of the cgroup-sock or the BPF LSM enforcer. */
export function connectEvent(record: ConnectRecord, context: ConnectContext): EventDraft {
  const reason = REASON_NAMES[record.reason] ?? 'no-policy';
  // Shaped, so the hub publishes this object itself in place of a copy.
  const draft: ShapedDraft = {
    seq: 0,
    time: '',
    node: '',
    type: 'connect',
    ktimeNs: record.ktimeNs,
    subject: sharedSubject(context.subject),
    process: connectProcess(record, context),
    connection: connectConnection(record, context.peer ?? ''),
    policy: connectPolicy(reason, context.rule, context.posturePolicy),
    action: actionName(record.action),
    result: record.denied ? 'denied' : 'allowed',
    enforcer: record.enforcer,
  };
  if (record.denied) draft.errno = EPERM;
  return draft;
}

/**
 * A decision on an operation, in the form every enforcer can fill: the
 * socket programs for bind, BPF LSM or the fallbacks for files.
 */
export interface Decision {
  ktimeNs: bigint;
  spiffeId: string | null;
  process: Process;
  context?: ProcessContext;
  policy?: PolicyRef & RuleDetails;
  action: Action;
  denied: boolean;
  /** errno returned to the process when denied; EPERM when not given. */
  errno?: number;
  enforcer: Enforcer;
  message?: string;
}

function decisionDraft(type: EventDraft['type'], decision: Decision): EventDraft {
  const result: Result = decision.denied ? 'denied' : 'allowed';
  const draft: EventDraft = {
    type,
    ktimeNs: decision.ktimeNs.toString(),
    subject: sharedSubject(decision.spiffeId),
    process: withContext({ ...decision.process }, decision.context),
    action: decision.action,
    result,
    enforcer: decision.enforcer,
  };
  if (decision.policy) {
    const { name, rule, reason } = decision.policy;
    draft.policy = withRuleDetails({ name, rule, reason }, decision.policy);
  }
  if (decision.denied) draft.errno = decision.errno ?? EPERM;
  if (decision.message) draft.message = decision.message;
  return draft;
}

/** Builds a bind event: connection.localAddress and localPort name the bound address. */
export function bindEvent(decision: Decision, connection: Connection): EventDraft {
  return { ...decisionDraft('bind', decision), connection };
}

/** The ingress decision on an accepted connection, made in user space from the policy set. */
export interface AcceptDecision {
  action: Action;
  reason: PolicyRef['reason'];
  /** Policy and rule that decided, or for a posture the policies that set it. */
  policy: string;
  rule: string;
  details?: RuleDetails;
}

export interface AcceptContext extends ProcessContext {
  subject: string | null;
  peer: string | null;
  executable: string | null;
  decision: AcceptDecision;
}

/** Message of an accept event that an ingress rule or posture decided, since none is enforced. */
export const INGRESS_NOT_ENFORCED =
  'ingress rules are reported, not enforced: no enforcer applies them, so the connection was accepted';

/**
 * Builds the event of an accepted connection: connection.address is the client,
 * localAddress the listener. No enforcer applies ingress rules, so the result is
 * always allowed and the event has no enforcer, even when the decision is Block.
 */
export function acceptEvent(record: AcceptRecord, context: AcceptContext): EventDraft {
  const { decision } = context;
  const draft: EventDraft = {
    type: 'accept',
    ktimeNs: record.ktimeNs.toString(),
    subject: { spiffeId: context.subject ?? '' },
    process: withContext(
      {
        pid: record.pid,
        ppid: record.ppid,
        uid: record.uid,
        gid: record.gid,
        executable: context.executable ?? '',
        comm: record.comm,
        cgroupId: record.cgroupId.toString(),
        tgid: record.tgid,
      },
      context,
    ),
    connection: {
      family: record.family,
      protocol: protocolName(record.protocol),
      address: record.address,
      port: record.port,
      peerSpiffeId: context.peer ?? '',
      peerPid: record.peerTgid,
      localAddress: record.localAddress,
      localPort: record.localPort,
    },
    policy: withRuleDetails(
      { name: decision.policy, rule: decision.rule, reason: decision.reason },
      decision.details,
    ),
    action: decision.action,
    result: 'allowed',
  };
  if (decision.reason !== 'no-policy') draft.message = INGRESS_NOT_ENFORCED;
  return draft;
}

/** Builds a file event for one operation on a path. */
export function fileEvent(decision: Decision, object: EventObject): EventDraft {
  return { ...decisionDraft('file', decision), object };
}

/**
 * Builds a policy event: a decision reported on its own, such as a process
 * that the tracepoint-kill enforcer ended, or an AppArmor denial. Its
 * message describes the decision. The other event types carry the decision
 * beside the operation instead.
 */
export function policyEvent(decision: Decision & { message: string }): EventDraft {
  return decisionDraft('policy', decision);
}

/**
 * Builds the bind event of a process with an identity, from the post_bind
 * programs. They observe and decide nothing, so the event has no enforcer.
 */
export function observedBindEvent(
  record: BindRecord,
  context: ProcessContext & { subject: string | null; executable: string | null },
): EventDraft {
  return {
    type: 'bind',
    ktimeNs: record.ktimeNs.toString(),
    subject: sharedSubject(context.subject),
    process: withContext(processOfRecord(record, context.executable ?? ''), context),
    connection: {
      family: record.family,
      protocol: protocolName(record.protocol),
      address: '',
      port: 0,
      peerSpiffeId: '',
      peerPid: 0,
      localAddress: record.address,
      localPort: record.port,
    },
    action: 'none',
    result: 'allowed',
  };
}

/** Builds an agent status event. */
export function agentEvent(
  state: AgentState,
  status: { version: string; identities: number; rules: number },
  message: string,
): EventDraft {
  return { type: 'agent', ktimeNs: '0', agent: { state, ...status }, message };
}

/** Builds a loss event for records lost before they became events. */
export function lossEvent(where: Extract<LossWhere, 'kernel-ringbuf' | 'decode'>, count: number, message: string): EventDraft {
  return { type: 'loss', ktimeNs: '0', loss: { where, count }, message };
}
