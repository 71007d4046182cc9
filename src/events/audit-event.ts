/**
 * The audit event as the agent publishes it: the JSON lines carry this shape,
 * and the gRPC stream carries the same fields as sigil.audit.v1.Event
 * (proto/sigil/audit/v1/audit.proto, camelCase here, snake_case on the wire).
 */
export type EventType = 'exec' | 'connect' | 'agent' | 'loss';

export interface AuditEvent {
  seq: number;
  time: string;
  /** Kernel boot-time clock in nanoseconds, as a decimal string (it exceeds 2^53). */
  ktimeNs: string;
  node: string;
  type: EventType;
  subject?: { spiffeId: string };
  process?: {
    pid: number;
    ppid: number;
    uid: number;
    gid: number;
    executable: string;
    comm: string;
    cgroupId: string;
  };
  connection?: {
    family: 'ipv4' | 'ipv6';
    protocol: 'tcp' | 'udp' | 'other';
    address: string;
    port: number;
    peerSpiffeId: string;
    peerPid: number;
  };
  policy?: { name: string; rule: string; reason: 'rule' | 'posture' | 'no-policy' };
  action?: 'allow' | 'audit' | 'block' | 'none';
  result?: 'allowed' | 'denied';
  errno?: number;
  enforcer?: 'cgroup-sock';
  message?: string;
  loss?: { where: 'kernel-ringbuf' | 'client-queue' | 'decode'; count: number };
}

/** An event before the hub gives it a sequence number, time and node name. */
export type EventDraft = Omit<AuditEvent, 'seq' | 'time' | 'node'>;

/** Server-side filter of a subscription. */
export interface EventFilter {
  types: EventType[];
  subjectPrefix: string;
}

/** Returns whether an event passes a filter; an empty filter passes everything. */
export function matchesFilter(event: AuditEvent, filter: EventFilter): boolean {
  if (filter.types.length > 0 && !filter.types.includes(event.type)) return false;
  if (filter.subjectPrefix) {
    const id = event.subject?.spiffeId ?? '';
    const prefix = filter.subjectPrefix.replace(/\/$/, '');
    if (id !== prefix && !id.startsWith(`${prefix}/`)) return false;
  }
  return true;
}
