import { describe, expect, it } from 'vitest';
import {
  AcceptQuery,
  decideAccept,
  decideConnect,
  decideExec,
  decideOpen,
  Decision,
  explainConnect,
  explainExec,
  explainOpen,
} from '../../src/policy/decide';
import { parsePolicySet } from '../../src/policy/loader';

const WEB = 'spiffe://example.org/web';
const API = 'spiffe://example.org/api';
const OTHER_DOMAIN = 'spiffe://other.org/web';

const SET = parsePolicySet(
  `
apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata: {name: web}
spec:
  subject: {spiffeId: ${WEB}}
  ingress:
    - {name: from-api, action: Allow, from: {spiffeId: ${API}}, ports: [8443], protocol: TCP}
    - {name: lan, action: Audit, from: {cidrs: [10.0.0.0/8]}}
  process:
    - {name: tools, action: Allow, directories: [/usr/bin]}
    - {name: no-curl, action: Block, paths: [/usr/bin/curl], severity: high, tags: [exfil], message: no downloads}
    - {name: app, action: Allow, directories: [/opt/app], recursive: true}
  file:
    - {name: config, action: Allow, readOnly: true, directories: [/etc], recursive: true}
    - {name: data, action: Allow, directories: [/var/lib/web], recursive: true}
    - {name: keys, action: Audit, readOnly: true, glob: true, paths: ["/home/*/.ssh/**"]}
---
apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata: {name: domain}
spec:
  subject: {trustDomain: example.org}
  processPosture: Audit
  process:
    - {name: shells, action: Block, paths: [/bin/sh]}
---
apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata: {name: unknown}
spec:
  subject: {unidentified: true}
  mode: Audit
  egress:
    - {name: dns, action: Allow, to: {cidrs: [10.0.0.53]}, ports: [53], protocol: UDP}
    - {name: metadata, action: Block, to: {cidrs: [169.254.169.254]}}
  process:
    - {name: no-nc, action: Block, paths: [/usr/bin/nc]}
`,
  'set.yaml',
);

const rule = (
  action: Decision['action'],
  policy: string,
  name: string,
  extra: Partial<Decision> = {},
): Decision => ({
  action,
  reason: 'rule',
  denied: action === 'Block',
  policy,
  rule: name,
  ...extra,
});
const posture = (action: 'Block' | 'Audit', extra: Partial<Decision> = {}): Decision => ({
  action,
  reason: 'posture',
  denied: action === 'Block',
  ...extra,
});
const NO_POLICY: Decision = { action: 'None', reason: 'no-policy', denied: false };

describe('decideExec', () => {
  it.each<[string, string | null, string, Decision]>([
    ['direct entry of an allowed directory', WEB, '/usr/bin/ls', rule('Allow', 'web', 'tools')],
    ['Block wins over Allow', WEB, '/usr/bin/curl', rule('Block', 'web', 'no-curl')],
    ['normalised query path', WEB, '//usr/bin//curl', rule('Block', 'web', 'no-curl')],
    ['nested entry of a plain directory', WEB, '/usr/bin/x/ls', posture('Block')],
    ['recursive directory', WEB, '/opt/app/bin/server', rule('Allow', 'web', 'app')],
    ['trust domain rule', WEB, '/bin/sh', rule('Block', 'domain', 'shells')],
    ['posture Block of one policy wins over Audit', WEB, '/sbin/init', posture('Block')],
    ['trust domain subject without Allow rules', API, '/usr/bin/ls', NO_POLICY],
    ['trust domain subject Block rule', API, '/bin/sh', rule('Block', 'domain', 'shells')],
    ['other trust domain', OTHER_DOMAIN, '/bin/sh', NO_POLICY],
    [
      'unidentified in Audit mode',
      null,
      '/usr/bin/nc',
      rule('Audit', 'unknown', 'no-nc', { wouldBlock: true }),
    ],
    ['unidentified without a match', null, '/usr/bin/ls', NO_POLICY],
  ])('%s', (_name, subject, path, expected) => {
    expect(decideExec(SET, { subject, path })).toEqual(expected);
  });

  it('carries severity, tags and message into the match', () => {
    const explanation = explainExec(SET, { subject: WEB, path: '/usr/bin/curl' });
    expect(explanation.kind).toBe('process');
    expect(explanation.matches.map((match) => match.rule)).toEqual(['tools', 'no-curl']);
    expect(explanation.decidingMatch).toMatchObject({
      rule: 'no-curl',
      severity: 'high',
      tags: ['exfil'],
      message: 'no downloads',
      file: 'set.yaml',
      line: 12,
    });
    expect(explanation.policies).toEqual(['web', 'domain']);
    expect(explanation.hasAllow).toBe(true);
    expect(explanation.posture).toBe('Block');
  });

  it.each([
    ['bin/sh', 'invalid exec query: path "bin/sh" is not absolute'],
    [
      '/usr/../bin/sh',
      "invalid exec query: path \"/usr/../bin/sh\" contains a '.' or '..' segment",
    ],
  ])('rejects the path %s', (path, message) => {
    expect(() => decideExec(SET, { subject: WEB, path })).toThrow(message);
  });

  it('rejects an invalid subject', () => {
    expect(() => decideExec(SET, { subject: 'web', path: '/bin/sh' })).toThrow(
      'invalid exec query: subject: invalid SPIFFE ID "web"',
    );
  });
});

describe('decideOpen', () => {
  it.each<[string, string, boolean, Decision]>([
    ['read of a read-only file', '/etc/hosts', false, rule('Allow', 'web', 'config')],
    ['write of a read-only file', '/etc/hosts', true, rule('Block', 'web', 'config')],
    [
      'write below a read-only directory',
      '/etc/ssl/certs/x.pem',
      true,
      rule('Block', 'web', 'config'),
    ],
    ['write of an allowed file', '/var/lib/web/db', true, rule('Allow', 'web', 'data')],
    [
      'read of an audited read-only file',
      '/home/ann/.ssh/id_rsa',
      false,
      rule('Audit', 'web', 'keys'),
    ],
    [
      'write of an audited read-only file',
      '/home/ann/.ssh/id_rsa',
      true,
      rule('Block', 'web', 'keys'),
    ],
    ['file without a rule', '/tmp/x', false, posture('Block')],
  ])('%s', (_name, path, write, expected) => {
    expect(decideOpen(SET, { subject: WEB, path, write })).toEqual(expected);
  });

  it('applies directory rules to the opened directory itself', () => {
    const open = (directory: boolean) =>
      decideOpen(SET, { subject: WEB, path: '/etc', write: false, directory });
    expect(open(true)).toEqual(rule('Allow', 'web', 'config'));
    expect(open(false)).toEqual(posture('Block'));
  });

  it('marks the read-only write in the match', () => {
    const explanation = explainOpen(SET, { subject: WEB, path: '/etc/hosts', write: true });
    expect(explanation.decidingMatch).toMatchObject({
      action: 'Block',
      writtenAction: 'Allow',
      readOnlyWrite: true,
    });
  });
});

describe('decideAccept', () => {
  const accept = (peer: string | null, address: string, port: number): AcceptQuery => ({
    subject: WEB,
    peer,
    address,
    port,
    protocol: 'TCP',
  });

  it.each<[string, AcceptQuery, Decision]>([
    ['local client by identity', accept(API, '127.0.0.1', 8443), rule('Allow', 'web', 'from-api')],
    ['identity on another port', accept(API, '127.0.0.1', 80), posture('Block')],
    [
      'source CIDR Audit wins over Allow',
      accept(API, '10.1.2.3', 8443),
      rule('Audit', 'web', 'lan'),
    ],
    ['IPv4-mapped source', accept(null, '::ffff:10.1.2.3', 22), rule('Audit', 'web', 'lan')],
    ['unknown source', accept(null, '192.0.2.1', 8443), posture('Block')],
  ])('%s', (_name, query, expected) => {
    expect(decideAccept(SET, query)).toEqual(expected);
  });

  it('rejects an invalid address', () => {
    expect(() => decideAccept(SET, accept(null, '10.0.0', 80))).toThrow(
      'invalid accept query: address "10.0.0" is not IPv4 or IPv6',
    );
  });
});

describe('audit mode', () => {
  const connect = (address: string, port: number, protocol: 'TCP' | 'UDP') => ({
    subject: null,
    peer: null,
    address,
    port,
    protocol,
  });

  it('turns a Block rule into Audit with wouldBlock', () => {
    expect(decideConnect(SET, connect('169.254.169.254', 80, 'TCP'))).toEqual(
      rule('Audit', 'unknown', 'metadata', { wouldBlock: true }),
    );
  });

  it('turns the Block posture into Audit with wouldBlock', () => {
    expect(decideConnect(SET, connect('1.1.1.1', 443, 'TCP'))).toEqual(
      posture('Audit', { wouldBlock: true }),
    );
  });

  it('leaves Allow rules alone', () => {
    expect(decideConnect(SET, connect('10.0.0.53', 53, 'UDP'))).toEqual(
      rule('Allow', 'unknown', 'dns'),
    );
  });

  it('reports the posture as would-block', () => {
    const explanation = explainConnect(SET, connect('1.1.1.1', 443, 'TCP'));
    expect(explanation.posture).toBe('Audit');
    expect(explanation.postureWouldBlock).toBe(true);
    expect(explanation.egressPosture).toBe('Audit');
  });

  it('marks a would-block even when an Audit rule decides', () => {
    const set = parsePolicySet(
      `
apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata: {name: watch}
spec:
  subject: {spiffeId: ${WEB}}
  egress: [{name: watch-all, action: Audit}]
---
apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata: {name: trial}
spec:
  subject: {spiffeId: ${WEB}}
  mode: Audit
  egress: [{name: no-smtp, action: Block, ports: [25]}]
---
apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata: {name: enforced}
spec:
  subject: {spiffeId: ${WEB}}
  egress: [{name: no-irc, action: Block, ports: [6667]}]
`,
      'modes.yaml',
    );
    const query = (port: number) => ({
      subject: WEB,
      peer: null,
      address: '192.0.2.1',
      port,
      protocol: 'TCP' as const,
    });
    // The first Audit rule decides, as the kernel names it, and the Block of the trial shows.
    expect(decideConnect(set, query(25))).toEqual(
      rule('Audit', 'watch', 'watch-all', { wouldBlock: true }),
    );
    expect(decideConnect(set, query(6667))).toEqual(rule('Block', 'enforced', 'no-irc'));
    expect(decideConnect(set, query(80))).toEqual(rule('Audit', 'watch', 'watch-all'));
    const matches = explainConnect(set, query(25)).matches;
    expect(matches[1]).toMatchObject({
      rule: 'no-smtp',
      action: 'Audit',
      writtenAction: 'Block',
      wouldBlock: true,
    });
  });
});
