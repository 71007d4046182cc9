import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { generateProfiles } from '../../src/apparmor/generate';
import { compileProfile } from '../../src/apparmor/parser';
import {
  BehaviourRecording,
  recordedPolicyName,
  recordedPolicyYaml,
} from '../../src/apparmor/recording';
import { parseDuration } from '../../src/cli/apparmor-record';
import { AuditEvent, EventType } from '../../src/events/audit-event';
import { parsePolicySet } from '../../src/policy/loader';

const WEB = 'spiffe://example.org/web';

// Events built by hand: the recording's logic only reads these fields. The agent test
// records real events from the kernel.
function event(type: EventType, fields: Partial<AuditEvent>, spiffeId = WEB): AuditEvent {
  return {
    seq: 1,
    time: '2026-01-01T00:00:00Z',
    ktimeNs: '0',
    node: 'test',
    type,
    severity: 'info',
    runId: 'run',
    subject: { spiffeId },
    ...fields,
  } as AuditEvent;
}

function exec(executable: string, spiffeId = WEB): AuditEvent {
  return event('exec', { process: { executable } as AuditEvent['process'] }, spiffeId);
}

function connect(address: string, port: number, protocol: 'tcp' | 'udp', peer = ''): AuditEvent {
  const family = address.includes(':') ? 'ipv6' : 'ipv4';
  return event('connect', {
    connection: { family, protocol, address, port, peerSpiffeId: peer, peerPid: 0 },
  });
}

function file(path: string, operation: string): AuditEvent {
  return event('file', { object: { path, operation } as AuditEvent['object'] });
}

function recordingOf(events: AuditEvent[]): BehaviourRecording {
  const recording = new BehaviourRecording(WEB);
  for (const item of events) recording.add(item);
  return recording;
}

describe('BehaviourRecording', () => {
  it('merges duplicate execs and sorts them', () => {
    const recording = recordingOf([exec('/usr/bin/b'), exec('/usr/bin/a'), exec('/usr/bin/b')]);
    expect([...recording.executables].sort()).toEqual(['/usr/bin/a', '/usr/bin/b']);
  });

  it('ignores other subjects', () => {
    const recording = recordingOf([exec('/usr/bin/a', 'spiffe://example.org/other')]);
    expect(recording.executables.size).toBe(0);
  });

  it('skips deleted executables', () => {
    const recording = recordingOf([exec('/tmp/x (deleted)')]);
    expect(recording.executables.size).toBe(0);
    expect(recording.skipped).toBe(1);
  });

  it('merges connects to one destination', () => {
    const recording = recordingOf([
      connect('10.0.0.1', 443, 'tcp'),
      connect('10.0.0.1', 443, 'tcp'),
      connect('::1', 53, 'udp'),
      connect('127.0.0.1', 8080, 'tcp', 'spiffe://example.org/api'),
    ]);
    expect(recording.connectDestinations()).toEqual([
      { protocol: 'TCP', port: 443, peer: '', cidr: '10.0.0.1/32' },
      { protocol: 'TCP', port: 8080, peer: 'spiffe://example.org/api', cidr: '127.0.0.1/32' },
      { protocol: 'UDP', port: 53, peer: '', cidr: '::1/128' },
    ]);
  });

  it('collapses written siblings into their directory', () => {
    const recording = recordingOf([
      file('/var/tmp/run-1.tmp', 'write'),
      file('/var/tmp/run-2.tmp', 'create'),
      file('/var/tmp/seen.txt', 'open'),
      file('/etc/app.conf', 'open'),
      file('/var/log/app.log', 'write'),
    ]);
    expect(recording.fileObjects()).toEqual({
      readPaths: ['/etc/app.conf'],
      writePaths: ['/var/log/app.log'],
      writeDirectories: ['/var/tmp'],
    });
  });

  it('reads write intent of BPF LSM opens', () => {
    const write = event('file', {
      object: { path: '/var/log/app.log', operation: 'open' },
      message: 'open of /var/log/app.log for write allowed',
    });
    const read = event('file', {
      object: { path: '/etc/app.conf', operation: 'open' },
      message: 'open of /etc/app.conf for read allowed',
    });
    const objects = recordingOf([write, read]).fileObjects();
    expect(objects.writePaths).toEqual(['/var/log/app.log']);
    expect(objects.readPaths).toEqual(['/etc/app.conf']);
  });

  it('skips denied operations', () => {
    const denied = { ...exec('/usr/bin/curl'), result: 'denied' as const };
    const recording = recordingOf([denied]);
    expect(recording.executables.size).toBe(0);
    expect(recording.skipped).toBe(1);
  });

  it('never collapses read-only siblings', () => {
    const recording = recordingOf([file('/etc/a', 'open'), file('/etc/b', 'open')]);
    expect(recording.fileObjects().readPaths).toEqual(['/etc/a', '/etc/b']);
    expect(recording.fileObjects().writeDirectories).toEqual([]);
  });
});

describe('recordedPolicyYaml', () => {
  const recording = recordingOf([
    exec('/usr/bin/curl'),
    exec('/bin/sh'),
    connect('10.0.0.1', 443, 'tcp'),
    file('/etc/app.conf', 'open'),
  ]);
  const text = recordedPolicyYaml(recording, recordedPolicyName(WEB));

  it('loads as a valid policy', () => {
    const set = parsePolicySet(text, 'recorded.yaml');
    expect(set.policies).toHaveLength(1);
    expect(set.policies[0].processPosture).toBe('Block');
    expect(set.policies[0].process[0].paths).toEqual(['/bin/sh', '/usr/bin/curl']);
    expect(set.policies[0].egress[0].ports).toEqual([{ lo: 443, hi: 443 }]);
    expect(set.policies[0].file[0].readOnly).toBe(true);
  });

  it('leaves unrecorded kinds open', () => {
    const only = recordedPolicyYaml(recordingOf([exec('/usr/bin/curl')]), 'x');
    const spec = parse(only).spec;
    expect(spec.file).toBeUndefined();
    expect(spec.egress).toBeUndefined();
    expect(spec.processPosture).toBe('Block');
  });

  it('gives the same text for the same events', () => {
    const again = recordingOf([
      file('/etc/app.conf', 'open'),
      connect('10.0.0.1', 443, 'tcp'),
      exec('/bin/sh'),
      exec('/usr/bin/curl'),
    ]);
    expect(recordedPolicyYaml(again, recordedPolicyName(WEB))).toBe(text);
  });

  it('becomes a profile that compiles', async () => {
    const generation = generateProfiles(parsePolicySet(text, 'recorded.yaml'), null);
    const profile = generation.profiles[0].text;
    expect(profile).toContain('"/usr/bin/curl" mrix,');
    expect(profile).toContain('"/etc/app.conf" r,');
    expect(await compileProfile(profile)).toBe('');
  });
});

describe('recordedPolicyName', () => {
  it.each([
    ['spiffe://example.org/ns/web', 'recorded-example-org-ns-web'],
    ['spiffe://Example.org/A_B', 'recorded-example-org-a-b'],
  ])('names %s', (spiffeId, expected) => {
    expect(recordedPolicyName(spiffeId)).toBe(expected);
  });

  it('stays within the name limit', () => {
    const name = recordedPolicyName(`spiffe://example.org/${'a'.repeat(100)}`);
    expect(name.length).toBeLessThanOrEqual(63);
    expect(name).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  });
});

describe('parseDuration', () => {
  it.each([
    ['30', 30],
    ['90s', 90],
    ['5m', 300],
    ['1h', 3600],
    ['0.5s', 0.5],
  ])('reads %s', (text, seconds) => {
    expect(parseDuration(text)).toBe(seconds);
  });

  it.each(['', '0', '-1s', '5d', 'abc'])('rejects %j', (text) => {
    expect(() => parseDuration(text)).toThrow(/expected a duration/);
  });
});
