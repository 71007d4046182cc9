import { AuditEvent } from './audit-event';

function processPart(event: AuditEvent): string {
  const process = event.process;
  if (!process) return '';
  const exe = process.executable || process.comm;
  return ` pid=${process.tgid || process.pid} ${exe}`;
}

function policyPart(event: AuditEvent): string {
  const policy = event.policy;
  if (!policy?.name && !policy?.rule) return '';
  return ` policy=${policy.name}/${policy.rule}`;
}

function decisionPart(event: AuditEvent): string {
  const enforcer = event.enforcer ? ` by ${event.enforcer}` : '';
  return ` ${event.result ?? '-'} action=${event.action ?? 'none'}${enforcer}`;
}

function endpoint(address: string | undefined, port: number | undefined): string {
  if (!address) return port ? `:${port}` : '-';
  return address.includes(':') ? `[${address}]:${port ?? 0}` : `${address}:${port ?? 0}`;
}

/** Formats an event as one line for `sigil events --format table`: time, seq, severity, type, then the details. */
export function formatEventRow(event: AuditEvent): string {
  const time = event.time.slice(11, 23);
  const head = `${time} #${event.seq} ${event.severity.padEnd(8)} ${event.type.padEnd(7)}`;
  const subject = event.subject?.spiffeId || '-';
  const c = event.connection;
  switch (event.type) {
    case 'connect': {
      const peer = c?.peerSpiffeId ? ` (${c.peerSpiffeId})` : '';
      return `${head}${decisionPart(event)} ${subject}${processPart(event)} -> ${c?.protocol} ${endpoint(c?.address, c?.port)}${peer}${policyPart(event)}`;
    }
    case 'accept':
      return `${head}${decisionPart(event)} ${subject}${processPart(event)} <- ${c?.protocol} ${endpoint(c?.address, c?.port)} on ${endpoint(c?.localAddress, c?.localPort)}${policyPart(event)}`;
    case 'bind':
      return `${head}${decisionPart(event)} ${subject}${processPart(event)} ${c?.protocol} ${endpoint(c?.localAddress, c?.localPort)}${policyPart(event)}`;
    case 'file': {
      const target = event.object?.targetPath ? ` -> ${event.object.targetPath}` : '';
      return `${head}${decisionPart(event)} ${subject}${processPart(event)} ${event.object?.operation} ${event.object?.path}${target}${policyPart(event)}`;
    }
    case 'exec':
      return `${head} ${subject}${processPart(event)}${event.process?.arguments ? ` ${JSON.stringify(event.process.arguments)}` : ''}`;
    case 'exit': {
      const signal = event.process?.exitSignal ? ` signal=${event.process.exitSignal}` : '';
      return `${head} ${subject}${processPart(event)} exit=${event.process?.exitCode ?? '?'}${signal}`;
    }
    case 'policy':
      return `${head}${decisionPart(event)} ${subject}${processPart(event)}${policyPart(event)} ${event.message ?? ''}`;
    case 'loss': {
      const range = event.loss?.firstSeq ? ` seq=${event.loss.firstSeq}-${event.loss.lastSeq}` : '';
      const reason = event.loss?.reason ? ` reason=${event.loss.reason}` : '';
      return `${head} ${event.loss?.where}${reason} count=${event.loss?.count}${range} ${event.message ?? ''}`;
    }
    case 'agent':
      return `${head} ${event.agent?.state ?? ''} ${event.message ?? ''}`;
  }
}
