import { ConnectRecord, ExecRecord } from '../kernel/codec';
import { DecisionReason, KernelAction } from '../kernel/layout';
import { RuleRef } from '../policy/compiled-rule-set';
import { EventDraft } from '../events/audit-event';

const EPERM = 1;

const ACTION_NAMES: Record<number, 'allow' | 'audit' | 'block' | 'none'> = {
  [KernelAction.None]: 'none',
  [KernelAction.Allow]: 'allow',
  [KernelAction.Audit]: 'audit',
  [KernelAction.Block]: 'block',
};

const REASON_NAMES: Record<number, 'rule' | 'posture' | 'no-policy'> = {
  [DecisionReason.NoPolicy]: 'no-policy',
  [DecisionReason.Rule]: 'rule',
  [DecisionReason.Posture]: 'posture',
};

function protocolName(protocol: number): 'tcp' | 'udp' | 'other' {
  if (protocol === 6) return 'tcp';
  if (protocol === 17) return 'udp';
  return 'other';
}

/** Builds the exec event for a process the agent attested (spiffeId null: no identity). */
export function execEvent(record: ExecRecord, spiffeId: string | null, executable: string): EventDraft {
  return {
    type: 'exec',
    ktimeNs: record.ktimeNs.toString(),
    subject: { spiffeId: spiffeId ?? '' },
    process: {
      pid: record.tgid,
      ppid: record.ppid,
      uid: record.uid,
      gid: record.gid,
      executable,
      comm: record.comm,
      cgroupId: record.cgroupId.toString(),
    },
    action: 'none',
    result: 'allowed',
  };
}

export interface ConnectContext {
  subject: string | null;
  peer: string | null;
  executable: string | null;
  /** The rule that decided, when reason is 'rule'. */
  rule?: RuleRef;
  /** The policies whose posture decided, when reason is 'posture'. */
  posturePolicy?: string;
}

/** Builds the event for one connect decision of the cgroup-sock enforcer. */
export function connectEvent(record: ConnectRecord, context: ConnectContext): EventDraft {
  const reason = REASON_NAMES[record.reason] ?? 'no-policy';
  const draft: EventDraft = {
    type: 'connect',
    ktimeNs: record.ktimeNs.toString(),
    subject: { spiffeId: context.subject ?? '' },
    process: {
      pid: record.tgid,
      ppid: record.ppid,
      uid: record.uid,
      gid: record.gid,
      executable: context.executable ?? '',
      comm: record.comm,
      cgroupId: record.cgroupId.toString(),
    },
    connection: {
      family: record.family,
      protocol: protocolName(record.protocol),
      address: record.address,
      port: record.port,
      peerSpiffeId: context.peer ?? '',
      peerPid: record.peerTgid,
    },
    policy: {
      name: context.rule?.policy ?? context.posturePolicy ?? '',
      rule: context.rule?.rule ?? (reason === 'posture' ? 'egressPosture' : ''),
      reason,
    },
    action: ACTION_NAMES[record.action] ?? 'none',
    result: record.denied ? 'denied' : 'allowed',
    enforcer: 'cgroup-sock',
  };
  if (record.denied) draft.errno = EPERM;
  return draft;
}
