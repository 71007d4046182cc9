import { EventDraft } from '../src/events/audit-event';

/** A connect decision and an exec with arguments, alternating. */
export const DRAFTS: EventDraft[] = [
  {
    type: 'connect',
    ktimeNs: '81234567890123',
    subject: { spiffeId: 'spiffe://example.org/ns/prod/sa/web' },
    process: {
      pid: 48211,
      ppid: 48100,
      uid: 1001,
      gid: 1001,
      executable: '/usr/local/bin/web-server',
      comm: 'web-server',
      cgroupId: '12884',
      tgid: 48211,
    },
    connection: {
      family: 'ipv4',
      protocol: 'tcp',
      address: '10.42.7.19',
      port: 8080,
      peerSpiffeId: 'spiffe://example.org/ns/prod/sa/api',
      peerPid: 9120,
    },
    policy: { name: 'web-egress', rule: 'web-to-api', reason: 'rule' },
    action: 'allow',
    result: 'allowed',
    enforcer: 'cgroup-sock',
  },
  {
    type: 'exec',
    ktimeNs: '81234567990123',
    subject: { spiffeId: 'spiffe://example.org/ns/prod/sa/web' },
    process: {
      pid: 48230,
      ppid: 48211,
      uid: 1001,
      gid: 1001,
      executable: '/usr/bin/curl',
      comm: 'curl',
      cgroupId: '12884',
      tgid: 48230,
      arguments: ['curl', '-s', 'http://api:8080/health'],
    },
    action: 'none',
    result: 'allowed',
  },
];
