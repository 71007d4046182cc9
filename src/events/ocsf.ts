import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { AuditEvent, EventType, FileOperation, Process, ProcessRef, Severity } from './audit-event';

/**
 * OCSF rendering of audit events, with the classes, ids and attribute names
 * of OCSF 1.3.0 (schema.ocsf.io/1.3.0). docs/events.md gives the mapping
 * field by field. The tests validate every event type against the JSON
 * Schema in src/events/ocsf-1.3.0.schema.json.
 */
export const OCSF_VERSION = '1.3.0';

export interface OcsfOptions {
  /** metadata.product.version; the version in package.json by default. */
  productVersion?: string;
  /** metadata.product.vendor_name. */
  vendorName?: string;
}

/** An OCSF event object, ready for JSON.stringify. */
export type OcsfEvent = Record<string, unknown>;

interface OcsfClass {
  classUid: number;
  className: string;
  categoryUid: number;
  categoryName: string;
}

const PROCESS_ACTIVITY: OcsfClass = {
  classUid: 1007,
  className: 'Process Activity',
  categoryUid: 1,
  categoryName: 'System Activity',
};
const FILE_SYSTEM_ACTIVITY: OcsfClass = {
  classUid: 1001,
  className: 'File System Activity',
  categoryUid: 1,
  categoryName: 'System Activity',
};
const NETWORK_ACTIVITY: OcsfClass = {
  classUid: 4001,
  className: 'Network Activity',
  categoryUid: 4,
  categoryName: 'Network Activity',
};
const DETECTION_FINDING: OcsfClass = {
  classUid: 2004,
  className: 'Detection Finding',
  categoryUid: 2,
  categoryName: 'Findings',
};
const APPLICATION_LIFECYCLE: OcsfClass = {
  classUid: 6002,
  className: 'Application Lifecycle',
  categoryUid: 6,
  categoryName: 'Application Activity',
};

/** The OCSF class of each Sigil event type. */
export const OCSF_CLASS_BY_TYPE: Record<EventType, OcsfClass> = {
  exec: PROCESS_ACTIVITY,
  exit: PROCESS_ACTIVITY,
  file: FILE_SYSTEM_ACTIVITY,
  connect: NETWORK_ACTIVITY,
  accept: NETWORK_ACTIVITY,
  bind: NETWORK_ACTIVITY,
  policy: DETECTION_FINDING,
  loss: DETECTION_FINDING,
  agent: APPLICATION_LIFECYCLE,
};

const SEVERITY_IDS: Record<Severity, [number, string]> = {
  info: [1, 'Informational'],
  low: [2, 'Low'],
  medium: [3, 'Medium'],
  high: [4, 'High'],
  critical: [5, 'Critical'],
};

/** File System Activity activity_id by operation. */
const FILE_ACTIVITIES: Record<FileOperation, [number, string]> = {
  create: [1, 'Create'],
  read: [2, 'Read'],
  write: [3, 'Update'],
  unlink: [4, 'Delete'],
  rename: [5, 'Rename'],
  chmod: [7, 'Set Security'],
  chown: [7, 'Set Security'],
  mount: [12, 'Mount'],
  unmount: [13, 'Unmount'],
  open: [14, 'Open'],
};

const OTHER_ACTIVITY = 99;

/** errno names for status_code; other numbers appear as decimal text. */
const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 13: 'EACCES', 111: 'ECONNREFUSED' };

let packageVersion: string | undefined;

/** Returns the Sigil version from package.json, or '' when it cannot be read. */
export function sigilVersion(): string {
  if (packageVersion === undefined) {
    try {
      const text = readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8');
      packageVersion = String((JSON.parse(text) as { version?: unknown }).version ?? '');
    } catch {
      packageVersion = '';
    }
  }
  return packageVersion;
}

/** Converts an audit event to an OCSF event of the class OCSF_CLASS_BY_TYPE names. */
export function toOcsf(event: AuditEvent, options: OcsfOptions = {}): OcsfEvent {
  const ocsfClass = OCSF_CLASS_BY_TYPE[event.type];
  const [activityId, activityName] = activityOf(event);
  const [severityId, severityName] = SEVERITY_IDS[event.severity];
  const out: OcsfEvent = {
    class_uid: ocsfClass.classUid,
    class_name: ocsfClass.className,
    category_uid: ocsfClass.categoryUid,
    category_name: ocsfClass.categoryName,
    activity_id: activityId,
    activity_name: activityName,
    type_uid: ocsfClass.classUid * 100 + activityId,
    type_name: `${ocsfClass.className}: ${activityName}`,
    severity_id: severityId,
    severity: severityName,
    time: Date.parse(event.time),
    metadata: metadataOf(event, options),
    device: { hostname: event.node, name: event.node, type_id: 0, type: 'Unknown' },
  };
  if (event.message) out.message = event.message;
  Object.assign(out, statusOf(event));
  Object.assign(out, decisionOf(event));
  if (event.process?.containerId) out.container = { uid: event.process.containerId };

  switch (event.type) {
    case 'exec':
    case 'exit':
      Object.assign(out, processActivity(event));
      break;
    case 'file':
      Object.assign(out, fileActivity(event));
      break;
    case 'connect':
    case 'accept':
    case 'bind':
      Object.assign(out, networkActivity(event));
      break;
    case 'policy':
    case 'loss':
      Object.assign(out, detectionFinding(event));
      break;
    case 'agent':
      out.app = productOf(options, event.agent?.version);
      break;
  }
  out.unmapped = { sigil: sigilDetails(event) };
  return out;
}

function activityOf(event: AuditEvent): [number, string] {
  switch (event.type) {
    case 'exec':
      return [1, 'Launch'];
    case 'exit':
      return [2, 'Terminate'];
    case 'file':
      return event.object ? FILE_ACTIVITIES[event.object.operation] : [OTHER_ACTIVITY, 'Other'];
    case 'connect':
    case 'accept':
      return event.result === 'denied' ? [5, 'Refuse'] : [1, 'Open'];
    case 'bind':
      return [OTHER_ACTIVITY, 'Bind'];
    case 'policy':
    case 'loss':
      return [1, 'Create'];
    case 'agent':
      return agentActivity(event);
  }
}

function agentActivity(event: AuditEvent): [number, string] {
  switch (event.agent?.state) {
    case 'started':
      return [3, 'Start'];
    case 'stopping':
      return [4, 'Stop'];
    case 'reloaded':
      return [OTHER_ACTIVITY, 'Reload'];
    case 'rejected':
      return [OTHER_ACTIVITY, 'Reload Rejected'];
    case 'degraded':
      return [OTHER_ACTIVITY, 'Degraded'];
    case 'recovered':
      return [OTHER_ACTIVITY, 'Recovered'];
    default:
      return [OTHER_ACTIVITY, 'Other'];
  }
}

function productOf(options: OcsfOptions, version?: string): Record<string, string> {
  return {
    name: 'Sigil',
    vendor_name: options.vendorName ?? 'Sigil',
    version: version || options.productVersion || sigilVersion(),
  };
}

function metadataOf(event: AuditEvent, options: OcsfOptions): Record<string, unknown> {
  const profiles = ['host'];
  if (hasDecision(event)) profiles.push('security_control');
  if (event.process?.containerId) profiles.push('container');
  const metadata: Record<string, unknown> = {
    version: OCSF_VERSION,
    product: productOf(options),
    profiles,
    log_name: 'sigil-audit',
    original_time: event.time,
  };
  // Per-client loss events (seq 0) are outside the numbered stream and have no stable id.
  if (event.seq > 0) {
    metadata.uid = `${event.runId}-${event.seq}`;
    metadata.sequence = event.seq;
  }
  return metadata;
}

function hasDecision(event: AuditEvent): boolean {
  return event.enforcer !== undefined || (event.action !== undefined && event.action !== 'none');
}

function statusOf(event: AuditEvent): Record<string, unknown> {
  if (event.type === 'policy' || event.type === 'loss') return { status_id: 1, status: 'New' };
  if (event.type === 'agent') {
    const failed = event.agent?.state === 'rejected' || event.agent?.state === 'degraded';
    return failed
      ? { status_id: 2, status: 'Failure', status_detail: event.message ?? '' }
      : { status_id: 1, status: 'Success' };
  }
  // A killed process did not complete what it started: a Failure, as a denial is.
  if (event.result === 'denied' || event.result === 'killed') {
    const status: Record<string, unknown> = { status_id: 2, status: 'Failure' };
    if (event.errno) status.status_code = ERRNO_NAMES[event.errno] ?? String(event.errno);
    if (event.message) status.status_detail = event.message;
    return status;
  }
  return { status_id: 1, status: 'Success' };
}

/** action_id and disposition_id of the Security Control profile, for events an enforcer decided. */
function decisionOf(event: AuditEvent): Record<string, unknown> {
  if (!hasDecision(event)) return {};
  if (event.result === 'denied' || event.result === 'killed') {
    return { action_id: 2, action: 'Denied', disposition_id: 2, disposition: 'Blocked' };
  }
  // A Block that no enforcer applied (ingress rules on accept events) was only recorded.
  if (event.action === 'audit' || (event.action === 'block' && event.enforcer === undefined)) {
    return { action_id: 1, action: 'Allowed', disposition_id: 17, disposition: 'Logged' };
  }
  return { action_id: 1, action: 'Allowed', disposition_id: 1, disposition: 'Allowed' };
}

/** Quotes an argument for a POSIX shell when it needs quoting. */
function shellQuote(arg: string): string {
  if (arg !== '' && /^[\w@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

function fileOf(path: string): Record<string, unknown> {
  return { name: basename(path) || path, path, type_id: 1, type: 'Regular File' };
}

function ancestorOf(ref: ProcessRef): Record<string, unknown> {
  const out: Record<string, unknown> = { pid: ref.pid };
  if (ref.comm) out.name = ref.comm;
  if (ref.executable) out.file = fileOf(ref.executable);
  return out;
}

/** Nests the ancestry as parent_process chains, parent first. */
function parentChain(process: Process): Record<string, unknown> | undefined {
  const ancestry = process.ancestry ?? [];
  if (ancestry.length === 0) return process.ppid > 0 ? { pid: process.ppid } : undefined;
  let chain: Record<string, unknown> | undefined;
  for (let i = ancestry.length - 1; i >= 0; i--) {
    const node = ancestorOf(ancestry[i]);
    if (chain) node.parent_process = chain;
    chain = node;
  }
  return chain;
}

/** Converts a Sigil process to an OCSF process object. */
export function ocsfProcess(process: Process): Record<string, unknown> {
  const out: Record<string, unknown> = {
    pid: process.tgid || process.pid,
    tid: process.pid,
    name: process.comm,
    user: { uid: String(process.uid), groups: [{ uid: String(process.gid) }] },
  };
  if (process.executable) out.file = fileOf(process.executable);
  if (process.arguments?.length) out.cmd_line = process.arguments.map(shellQuote).join(' ');
  const parent = parentChain(process);
  if (parent) out.parent_process = parent;
  return out;
}

function processActivity(event: AuditEvent): Record<string, unknown> {
  const process = event.process ? ocsfProcess(event.process) : { pid: 0 };
  const out: Record<string, unknown> = { process };
  if (event.type === 'exec') {
    // The actor of a launch is the parent; without one the process stands for itself.
    const parent = (process as Record<string, unknown>).parent_process;
    out.actor = { process: parent ?? process };
  } else {
    // Exit is reflexive: the process terminates itself.
    out.actor = { process };
    if (event.process?.exitCode !== undefined) out.exit_code = event.process.exitCode;
  }
  return out;
}

function fileActivity(event: AuditEvent): Record<string, unknown> {
  const path = event.object?.path ?? '';
  const out: Record<string, unknown> = {
    actor: { process: event.process ? ocsfProcess(event.process) : { pid: 0 } },
    file: { ...fileOf(path), type_id: 0, type: 'Unknown' },
  };
  if (event.object?.targetPath) out.file_result = { ...fileOf(event.object.targetPath), type_id: 0, type: 'Unknown' };
  return out;
}

function endpoint(address: string | undefined, port: number | undefined, hostname?: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (hostname) out.hostname = hostname;
  if (address) out.ip = address;
  if (port) out.port = port;
  return out;
}

const DIRECTIONS: Record<string, [number, string]> = {
  connect: [2, 'Outbound'],
  accept: [1, 'Inbound'],
  bind: [0, 'Unknown'],
};

function networkActivity(event: AuditEvent): Record<string, unknown> {
  const connection = event.connection;
  const local = endpoint(connection?.localAddress, connection?.localPort, event.node);
  const remote = endpoint(connection?.address, connection?.port);
  const [directionId, direction] = DIRECTIONS[event.type];
  const connectionInfo: Record<string, unknown> = { direction_id: directionId, direction };
  if (connection) {
    connectionInfo.protocol_name = connection.protocol;
    if (connection.protocol === 'tcp') connectionInfo.protocol_num = 6;
    if (connection.protocol === 'udp') connectionInfo.protocol_num = 17;
    connectionInfo.protocol_ver_id = connection.family === 'ipv6' ? 6 : 4;
  }
  const out: Record<string, unknown> = {
    actor: { process: event.process ? ocsfProcess(event.process) : { pid: 0 } },
    connection_info: connectionInfo,
  };
  if (event.type === 'accept') {
    out.src_endpoint = remote;
    out.dst_endpoint = local;
  } else if (event.type === 'connect') {
    out.src_endpoint = local;
    out.dst_endpoint = remote;
  } else {
    out.src_endpoint = local;
  }
  return out;
}

function detectionFinding(event: AuditEvent): Record<string, unknown> {
  // Per-client loss events (seq 0) have no stable id, so each gets a random one.
  const uid = event.seq > 0 ? `${event.runId}-${event.seq}` : randomUUID();
  const info: Record<string, unknown> = { uid, title: findingTitle(event) };
  if (event.message) info.desc = event.message;
  if (event.type === 'loss') info.types = ['Audit Event Loss'];
  if (event.type === 'policy') {
    info.types = ['Policy Decision'];
    if (event.policy?.tags?.length) info.types = ['Policy Decision', ...event.policy.tags];
    if (event.policy?.rule) info.analytic = { name: event.policy.rule, type_id: 1, type: 'Rule' };
  }
  const out: Record<string, unknown> = { finding_info: info };
  if (event.process) out.actor = { process: ocsfProcess(event.process) };
  return out;
}

function findingTitle(event: AuditEvent): string {
  if (event.type === 'loss') return `Audit events lost (${event.loss?.where ?? 'unknown'})`;
  if (event.policy?.message) return event.policy.message;
  if (event.policy?.name) return `Policy ${event.policy.name} rule ${event.policy.rule}: ${event.action ?? 'none'}`;
  return event.message ?? 'Policy decision';
}

/** Sigil fields that OCSF has no attribute for, in snake_case. */
function sigilDetails(event: AuditEvent): Record<string, unknown> {
  const details: Record<string, unknown> = {
    type: event.type,
    node: event.node,
    run_id: event.runId,
    seq: event.seq,
    ktime_ns: event.ktimeNs,
    severity: event.severity,
  };
  if (event.subject) details.subject_spiffe_id = event.subject.spiffeId;
  if (event.action) details.action = event.action;
  if (event.result) details.result = event.result;
  if (event.enforcer) details.enforcer = event.enforcer;
  if (event.errno) details.errno = event.errno;
  if (event.process) details.cgroup_id = event.process.cgroupId;
  if (event.process?.exitSignal !== undefined) details.exit_signal = event.process.exitSignal;

  if (event.connection) {
    details.peer_spiffe_id = event.connection.peerSpiffeId;
    details.peer_pid = event.connection.peerPid;
  }
  if (event.policy) {
    details.policy = {
      name: event.policy.name,
      rule: event.policy.rule,
      reason: event.policy.reason,
      severity: event.policy.severity,
      tags: event.policy.tags,
      message: event.policy.message,
    };
  }

  if (event.object) details.file_operation = event.object.operation;
  if (event.loss) {
    details.loss = {
      where: event.loss.where,
      count: event.loss.count,
      first_seq: event.loss.firstSeq,
      last_seq: event.loss.lastSeq,
      reason: event.loss.reason,
    };
  }
  if (event.agent) {
    details.agent = { state: event.agent.state, identities: event.agent.identities, rules: event.agent.rules };
  }
  return details;
}
