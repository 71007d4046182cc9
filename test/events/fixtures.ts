import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientReadableStream } from '@grpc/grpc-js';
import { AuditEvent, EventDraft, Process } from '../../src/events/audit-event';
import { EventHub } from '../../src/events/event-hub';
import { watchEvents, WatchOptions } from '../../src/events/grpc-client';
import { AuditServer, AuditServerOptions } from '../../src/events/grpc-server';
import { waitFor } from '../helpers/agent-process';

export const WEB = 'spiffe://example.org/ns/prod/web';
export const API = 'spiffe://example.org/ns/prod/api';
export const BATCH = 'spiffe://example.org/ns/dev/batch';

export function process(pid: number, extra: Partial<Process> = {}): Process {
  return {
    pid,
    ppid: 1,
    uid: 1001,
    gid: 1001,
    executable: '/usr/bin/curl',
    comm: 'curl',
    cgroupId: '4242',
    tgid: pid,
    ...extra,
  };
}

/** Returns a draft of every event type with its optional fields set, in the order the tests publish them. */
export function sampleDrafts(): EventDraft[] {
  return [
    {
      type: 'exec',
      ktimeNs: '1000',
      subject: { spiffeId: WEB },
      process: process(100, {
        arguments: ['curl', '-s', 'http://api:8080/a b'],
        containerId: '3f2a9c',
        ancestry: [
          { pid: 90, executable: '/bin/sh', comm: 'sh', spiffeId: WEB },
          { pid: 1, executable: '/sbin/init', comm: 'systemd', spiffeId: '' },
        ],
      }),
      action: 'none',
      result: 'allowed',
    },
    {
      type: 'connect',
      ktimeNs: '2000',
      subject: { spiffeId: WEB },
      process: process(100),
      connection: {
        family: 'ipv4',
        protocol: 'tcp',
        address: '10.0.0.7',
        port: 8080,
        peerSpiffeId: API,
        peerPid: 200,
      },
      policy: { name: 'web-egress', rule: 'web-to-api', reason: 'rule' },
      action: 'allow',
      result: 'allowed',
      enforcer: 'cgroup-sock',
    },
    {
      type: 'connect',
      ktimeNs: '3000',
      subject: { spiffeId: BATCH },
      process: process(300, { executable: '/usr/bin/nc', comm: 'nc' }),
      connection: { family: 'ipv6', protocol: 'udp', address: '2001:db8::5', port: 53, peerSpiffeId: '', peerPid: 0 },
      policy: {
        name: 'dev-lockdown',
        rule: 'no-dns',
        reason: 'rule',
        severity: 'high',
        tags: ['T1071.004'],
        message: 'DNS from dev workloads',
      },
      action: 'block',
      result: 'denied',
      errno: 1,
      enforcer: 'cgroup-sock',
    },
    {
      type: 'accept',
      ktimeNs: '4000',
      subject: { spiffeId: API },
      process: process(200, { executable: '/srv/api', comm: 'api' }),
      connection: {
        family: 'ipv4',
        protocol: 'tcp',
        address: '10.0.0.9',
        port: 51514,
        peerSpiffeId: WEB,
        peerPid: 100,
        localAddress: '10.0.0.7',
        localPort: 8080,
      },
      policy: { name: 'api-ingress', rule: 'from-web', reason: 'rule' },
      action: 'audit',
      result: 'allowed',
    },
    {
      type: 'bind',
      ktimeNs: '5000',
      subject: { spiffeId: API },
      process: process(200, { executable: '/srv/api', comm: 'api' }),
      connection: {
        family: 'ipv4',
        protocol: 'tcp',
        address: '',
        port: 0,
        peerSpiffeId: '',
        peerPid: 0,
        localAddress: '0.0.0.0',
        localPort: 8080,
      },
      action: 'none',
      result: 'allowed',
      enforcer: 'cgroup-sock',
    },
    {
      type: 'file',
      ktimeNs: '6000',
      subject: { spiffeId: WEB },
      process: process(100),
      object: { path: '/etc/shadow', operation: 'open' },
      policy: { name: 'web-files', rule: 'no-secrets', reason: 'rule', severity: 'critical' },
      action: 'block',
      result: 'denied',
      errno: 13,
      enforcer: 'bpf-lsm',
    },
    {
      type: 'file',
      ktimeNs: '6500',
      subject: { spiffeId: BATCH },
      process: process(300),
      object: { path: '/tmp/a', operation: 'rename', targetPath: '/tmp/b' },
      action: 'audit',
      result: 'allowed',
      enforcer: 'apparmor',
    },
    {
      type: 'policy',
      ktimeNs: '7000',
      subject: { spiffeId: BATCH },
      process: process(300, { executable: '/usr/bin/nc', comm: 'nc' }),
      policy: { name: 'dev-lockdown', rule: 'no-netcat', reason: 'rule', severity: 'high', tags: ['T1059'] },
      action: 'block',
      result: 'denied',
      enforcer: 'tracepoint-kill',
      message: 'killed nc: exec of /usr/bin/nc is blocked for dev workloads',
    },
    {
      type: 'exit',
      ktimeNs: '8000',
      subject: { spiffeId: BATCH },
      process: process(300, { exitCode: 0, exitSignal: 0 }),
      action: 'none',
      result: 'allowed',
    },
    {
      type: 'agent',
      ktimeNs: '0',
      agent: { state: 'started', version: '0.1.0', identities: 3, rules: 7 },
      message: 'agent started: 3 identities, 7 rules',
    },
    {
      type: 'agent',
      ktimeNs: '0',
      agent: { state: 'rejected', version: '0.1.0', identities: 3, rules: 7 },
      message: 'configuration rejected; the last good configuration stays in force: x.yaml:3:1 invalid',
    },
    {
      type: 'loss',
      ktimeNs: '0',
      loss: { where: 'kernel-ringbuf', count: 17, reason: 'events-ringbuf-full' },
      message: '17 kernel decision records were dropped because their ring buffer was full',
    },
  ];
}

/** A hub, an audit server on a socket in a fresh directory, and clean-up. */
export class ServerFixture {
  readonly dir = mkdtempSync(join(tmpdir(), 'sigil-events-'));
  readonly socket = join(this.dir, 'audit.sock');
  server: AuditServer;

  constructor(
    public hub: EventHub = new EventHub('test-node'),
    readonly options: AuditServerOptions = {},
  ) {
    this.server = new AuditServer(hub, this.socket, options);
  }

  async start(): Promise<this> {
    await this.server.start();
    return this;
  }

  /** Stops the server and starts a new one on the same socket, with hub as its hub. */
  async restart(hub: EventHub = this.hub): Promise<void> {
    await this.server.stop();
    this.hub = hub;
    this.server = new AuditServer(hub, this.socket, this.options);
    await this.server.start();
  }

  async close(): Promise<void> {
    await this.server.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A Watch stream whose events and errors are collected. */
export class Collector {
  readonly events: AuditEvent[] = [];
  error: (Error & { code?: number }) | null = null;
  ended = false;
  readonly stream: ClientReadableStream<AuditEvent>;

  constructor(options: WatchOptions) {
    this.stream = watchEvents(options, (event) => this.events.push(event));
    this.stream.on('error', (error: Error & { code?: number }) => (this.error = error));
    this.stream.on('end', () => (this.ended = true));
  }

  /** Resolves when the server has subscribed the stream. */
  async live(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.stream.once('metadata', () => resolve());
      this.stream.once('error', reject);
    });
    return this;
  }

  async waitForCount(count: number, timeoutMs = 10_000): Promise<AuditEvent[]> {
    return waitFor(`${count} events`, () => (this.events.length >= count ? this.events : undefined), timeoutMs);
  }

  async waitForError(): Promise<Error & { code?: number }> {
    return waitFor('a stream error', () => this.error ?? undefined);
  }

  cancel(): void {
    this.stream.cancel();
  }
}

/** Sequence numbers of the numbered events, in order of arrival. */
export function seqs(events: AuditEvent[]): number[] {
  return events.filter((event) => event.seq > 0).map((event) => event.seq);
}

export function range(first: number, last: number): number[] {
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}
