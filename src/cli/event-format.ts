import { AuditEvent } from '../events/audit-event';

/** Formats an event as one readable line for `sigil events --format table`. */
export function formatEventRow(event: AuditEvent): string {
  const time = event.time.slice(11, 23);
  const subject = event.subject?.spiffeId || '-';
  switch (event.type) {
    case 'connect': {
      const c = event.connection;
      const peer = c?.peerSpiffeId ? ` (${c.peerSpiffeId})` : '';
      const policy = event.policy?.name ? ` policy=${event.policy.name}/${event.policy.rule}` : '';
      return `${time} #${event.seq} connect ${event.result} action=${event.action} ${subject} pid=${event.process?.pid} -> ${c?.protocol} ${c?.address}:${c?.port}${peer}${policy}`;
    }
    case 'exec':
      return `${time} #${event.seq} exec ${subject} pid=${event.process?.pid} ${event.process?.executable}`;
    case 'loss':
      return `${time} loss ${event.loss?.where} count=${event.loss?.count}`;
    default:
      return `${time} #${event.seq} ${event.type} ${event.message ?? ''}`;
  }
}
