import { describe, expect, it } from 'vitest';
import { policyWarnings } from '../../src/policy/enforcer-warnings';
import { parsePolicies, parsePolicySet } from '../../src/policy/loader';
import { ConfigError, formatIssue } from '../../src/util/config-error';

/** Joins lines with newlines, so that line numbers in a case are easy to count. */
const lines = (...text: string[]) => `${text.join('\n')}\n`;

const HEADER = ['apiVersion: sigil.dev/v1alpha1', 'kind: IdentityPolicy', 'metadata: {name: p}'];

function issuesOf(text: string): string[] {
  try {
    parsePolicies(text, 'p.yaml');
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.issues.map(formatIssue);
  }
}

describe('subjects', () => {
  it.each([
    ['trustDomain: example.org', { kind: 'trustDomain', trustDomain: 'example.org' }],
    ['trustDomain: spiffe://example.org', { kind: 'trustDomain', trustDomain: 'example.org' }],
    ['unidentified: true', { kind: 'unidentified' }],
    [
      'spiffeIdPrefix: spiffe://example.org/ns/',
      { kind: 'spiffeIdPrefix', spiffeIdPrefix: 'spiffe://example.org/ns' },
    ],
  ])('reads %s', (subject, expected) => {
    const [policy] = parsePolicies(lines(...HEADER, `spec: {subject: {${subject}}}`), 'p.yaml');
    expect(policy.subjectSelector).toEqual(expected);
  });

  it('keeps the SPIFFE selector view of new subjects', () => {
    const text = lines(
      ...HEADER,
      'spec: {subject: {trustDomain: example.org}}',
      '---',
      'apiVersion: sigil.dev/v1alpha1',
      'kind: IdentityPolicy',
      'metadata: {name: q}',
      'spec: {subject: {unidentified: true}}',
    );
    const [trustDomain, unidentified] = parsePolicies(text, 'p.yaml');
    expect(trustDomain.subject).toEqual({
      kind: 'spiffeIdPrefix',
      spiffeIdPrefix: 'spiffe://example.org',
    });
    expect(unidentified.subject).toEqual({ kind: 'spiffeId', spiffeId: '' });
  });

  it.each([
    [
      'invalid trust domain',
      'trustDomain: Example.org',
      'p.yaml:4:31: error: spec.subject.trustDomain: invalid trust domain "Example.org": the trust domain contains',
    ],
    [
      'trust domain with a path',
      'trustDomain: spiffe://example.org/web',
      'spec.subject.trustDomain: invalid trust domain "spiffe://example.org/web": a trust domain has no path',
    ],
    [
      'unidentified false',
      'unidentified: false',
      'p.yaml:4:32: error: spec.subject.unidentified: unidentified must be true',
    ],
    [
      'unidentified as a string',
      'unidentified: "true"',
      'spec.subject.unidentified: expected true or false, found the string "true"',
    ],
    [
      'two subject forms',
      'trustDomain: example.org, unidentified: true',
      'spec.subject: expected exactly one of spiffeId, spiffeIdPrefix, trustDomain, unidentified, found trustDomain and unidentified',
    ],
  ])('rejects %s', (_name, subject, expected) => {
    const issues = issuesOf(lines(...HEADER, `spec: {subject: {${subject}}}`));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toContain(expected);
  });
});

describe('policy settings', () => {
  it('defaults mode and every posture', () => {
    const [policy] = parsePolicies(
      lines(...HEADER, 'spec: {subject: {unidentified: true}}'),
      'p.yaml',
    );
    expect(policy.mode).toBe('Enforce');
    expect([
      policy.egressPosture,
      policy.ingressPosture,
      policy.processPosture,
      policy.filePosture,
    ]).toEqual(['Block', 'Block', 'Block', 'Block']);
    expect([policy.ingress, policy.process, policy.file]).toEqual([[], [], []]);
  });

  it('reads mode and postures', () => {
    const text = lines(
      ...HEADER,
      'spec:',
      '  subject: {unidentified: true}',
      '  mode: Audit',
      '  ingressPosture: Audit',
      '  processPosture: Audit',
      '  filePosture: Audit',
    );
    const [policy] = parsePolicies(text, 'p.yaml');
    expect(policy.mode).toBe('Audit');
    expect([policy.ingressPosture, policy.processPosture, policy.filePosture]).toEqual([
      'Audit',
      'Audit',
      'Audit',
    ]);
  });
});

const RULES = lines(
  ...HEADER,
  'spec:',
  '  subject: {spiffeId: spiffe://example.org/web}',
  '  ingress:',
  '    - name: from-api',
  '      action: Allow',
  '      from: {spiffeIdPrefix: spiffe://example.org/api/}',
  '      ports: [8443]',
  '      protocol: TCP',
  '      severity: low',
  '    - action: Block',
  '      from: {cidrs: [0.0.0.0/0]}',
  '  process:',
  '    - name: tools',
  '      action: Allow',
  '      paths: [/usr/bin//env, /usr/bin/env]',
  '      directories: [/usr/local/bin/, /opt/app]',
  '      recursive: true',
  '      tags: [baseline, "mitre:t1059"]',
  '      message: only the tools of the image',
  '    - action: Block',
  '      glob: true',
  '      paths: ["/home/*/bin/**"]',
  '  file:',
  '    - name: config',
  '      action: Allow',
  '      readOnly: true',
  '      directories: [/etc]',
  '      severity: critical',
);

describe('ingress, process and file rules', () => {
  const [policy] = parsePolicies(RULES, 'rules.yaml');

  it('reads ingress rules', () => {
    const [fromApi, everyone] = policy.ingress;
    expect(fromApi).toMatchObject({
      name: 'from-api',
      action: 'Allow',
      from: {
        kind: 'peer',
        peer: { kind: 'spiffeIdPrefix', spiffeIdPrefix: 'spiffe://example.org/api' },
      },
      ports: [{ lo: 8443, hi: 8443 }],
      protocol: 'TCP',
      severity: 'low',
      tags: [],
      position: { file: 'rules.yaml', line: 7, column: 7 },
    });
    expect(everyone.name).toBe('ingress-1');
    expect(everyone.from.kind).toBe('cidrs');
  });

  it('normalises and deduplicates paths', () => {
    const [tools, home] = policy.process;
    expect(tools.paths).toEqual(['/usr/bin/env']);
    expect(tools.directories).toEqual(['/usr/local/bin', '/opt/app']);
    expect(tools.recursive).toBe(true);
    expect(tools.glob).toBe(false);
    expect(tools.tags).toEqual(['baseline', 'mitre:t1059']);
    expect(tools.message).toBe('only the tools of the image');
    expect(home).toMatchObject({ name: 'process-1', glob: true, paths: ['/home/*/bin/**'] });
  });

  it('reads file rules', () => {
    expect(policy.file[0]).toMatchObject({
      name: 'config',
      readOnly: true,
      directories: ['/etc'],
      paths: [],
      recursive: false,
      severity: 'critical',
    });
  });

  it('warns about every rule that no enforcer applies', () => {
    const set = parsePolicySet(RULES, 'rules.yaml');
    expect(set.warnings.map(formatIssue)).toEqual([
      'rules.yaml:7:7: warning: ingress rule "from-api" of policy "p": no enforcer on this node can apply it (Sigil has no ingress enforcer yet)',
      'rules.yaml:13:7: warning: ingress rule "ingress-1" of policy "p": no enforcer on this node can apply it (Sigil has no ingress enforcer yet)',
      'rules.yaml:16:7: warning: process rule "tools" of policy "p": no enforcer on this node can apply it (needs BPF LSM or the tracepoint-kill enforcer, with pinning on; `sigil status` lists both)',
      'rules.yaml:23:7: warning: process rule "process-1" of policy "p": no enforcer on this node can apply it (needs BPF LSM or the tracepoint-kill enforcer, with pinning on; `sigil status` lists both)',
      'rules.yaml:27:7: warning: file rule "config" of policy "p": no enforcer on this node can apply it (needs BPF LSM or the tracepoint-kill enforcer, with pinning on; `sigil status` lists both)',
    ]);
  });

  it('warns about a Block egress posture for unidentified processes', () => {
    const text = lines(
      ...HEADER,
      'spec:',
      '  subject: {unidentified: true}',
      '  egress: [{action: Allow, to: {cidrs: [10.0.0.0/8]}}]',
    );
    const [warning] = parsePolicySet(text, 'p.yaml').warnings.map(formatIssue);
    expect(warning).toContain(
      'p.yaml:1:1: warning: spec.egressPosture: policy "p" blocks every connect',
    );
    const audit = text.replace('spec:\n', 'spec:\n  mode: Audit\n');
    expect(parsePolicySet(audit, 'p.yaml').warnings).toEqual([]);
  });

  it('reports every error of a file at once', () => {
    const text = lines(
      ...HEADER,
      'spec:',
      '  subject: {spiffeId: spiffe://example.org/web}',
      '  mode: audit',
      '  processPosture: Allow',
      '  ingress:',
      '    - name: dup',
      '      action: Allow',
      '      from: {spiffeIdPrefix: spiffe://example.org/web}',
      '      severity: High',
      '  process:',
      '    - name: dup',
      '      action: Block',
      '      paths: [bin/sh, /usr/bin/../bin/sh, /usr/bin/*, /etc/]',
      '      recursive: true',
      '    - action: Allow',
      '      directories: [/usr/bin/]',
      '      glob: "yes"',
      '    - action: Audit',
      '  file:',
      '    - action: Block',
      '      readOnly: true',
      '      paths: [/etc/shadow]',
      '      tags: [pci, pci, Bad]',
      `      message: "${'m'.repeat(257)}"`,
      '    - action: Allow',
      '      glob: true',
      '      paths: ["/home/*/.ssh/**", "/a/b**", "/x/?", "/y/[ab]"]',
    );
    const expected = [
      'p.yaml:6:9: error: spec.mode: invalid mode "audit" (did you mean "Audit"? valid values: Enforce, Audit)',
      'p.yaml:7:19: error: spec.processPosture: invalid processPosture "Allow" (valid values: Block, Audit)',
      'p.yaml:12:17: error: spec.ingress[0].severity: invalid severity "High" (did you mean "high"?',
      'p.yaml:14:13: error: spec.process[0].name: duplicate rule name "dup", first used at p.yaml:9:13',
      'p.yaml:16:15: error: spec.process[0].paths[0]: invalid path "bin/sh": the path is not absolute',
      'p.yaml:16:23: error: spec.process[0].paths[1]: invalid path "/usr/bin/../bin/sh": the path contains the segment \'..\'',
      'p.yaml:16:43: error: spec.process[0].paths[2]: invalid path "/usr/bin/*": the path contains the glob character \'*\' (set glob: true',
      'p.yaml:16:55: error: spec.process[0].paths[3]: invalid path "/etc/": the path ends with \'/\', so it names a directory (list /etc under directories',
      'p.yaml:17:18: error: spec.process[0].recursive: recursive: true needs directories',
      'p.yaml:20:13: error: spec.process[1].glob: expected true or false, found the string "yes"',
      'p.yaml:21:7: error: spec.process[2]: missing paths or directories',
      'p.yaml:24:17: error: spec.file[0].readOnly: readOnly: true is not allowed with action Block (use action Allow or Audit, or remove readOnly)',
      'p.yaml:26:19: error: spec.file[0].tags[1]: duplicate tag "pci"',
      'p.yaml:26:24: error: spec.file[0].tags[2]: invalid tag "Bad"',
      'p.yaml:27:16: error: spec.file[0].message: message is 257 characters long (use at most 256 characters)',
      'p.yaml:30:34: error: spec.file[1].paths[1]: invalid path "/a/b**": \'**\' must be a whole path segment',
      'p.yaml:30:44: error: spec.file[1].paths[2]: invalid path "/x/?": \'?\' is not a supported glob character',
      'p.yaml:30:52: error: spec.file[1].paths[3]: invalid path "/y/[ab]": \'[\' is not a supported glob character',
    ];
    const issues = issuesOf(text);
    for (const [index, substring] of expected.entries()) expect(issues[index]).toContain(substring);
    expect(issues).toHaveLength(expected.length);
  });

  it('accepts a message of 256 characters', () => {
    const text = lines(
      ...HEADER,
      'spec:',
      '  subject: {spiffeId: spiffe://example.org/web}',
      `  egress: [{action: Audit, message: "${'é'.repeat(256)}"}]`,
    );
    expect(parsePolicies(text, 'p.yaml')[0].egress[0].message).toHaveLength(256);
  });
});

describe('contradictions of the new kinds', () => {
  it.each([
    [
      'file paths',
      [
        'file:',
        '  - {name: a, action: Allow, paths: [/etc/passwd, /etc/hosts]}',
        '  - {name: b, action: Block, paths: [/etc//hosts]}',
      ],
      'p.yaml:8:25: error: spec.file[1].action: rule "b" (Block) contradicts rule "a" (Allow) at p.yaml:7:7: both match the path /etc/hosts',
    ],
    [
      'recursive directories',
      [
        'process:',
        '  - {name: a, action: Allow, directories: [/opt], recursive: true}',
        '  - {name: b, action: Block, directories: [/opt/], recursive: true}',
      ],
      'both match the entries of the directory /opt and everything below it',
    ],
    [
      'read-only Allow and Block',
      [
        'file:',
        '  - {name: a, action: Allow, readOnly: true, paths: [/etc/hosts]}',
        '  - {name: b, action: Block, paths: [/etc/hosts]}',
      ],
      'rule "b" (Block) contradicts rule "a" (Allow)',
    ],
    [
      'ingress sources',
      [
        'ingress:',
        '  - {name: a, action: Allow, from: {cidrs: [10.0.0.0/8]}, ports: [80]}',
        '  - {name: b, action: Block, from: {cidrs: [10.0.0.0/8]}, ports: ["80"]}',
      ],
      'both have the same source, ports and protocol',
    ],
  ])('rejects %s', (_name, rules, expected) => {
    const text = lines(
      ...HEADER,
      'spec:',
      '  subject: {spiffeId: spiffe://example.org/web}',
      ...rules.map((line) => `  ${line}`),
    );
    const issues = issuesOf(text);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toContain(expected);
  });

  it.each([
    [
      'different depth',
      [
        'process:',
        '  - {action: Allow, directories: [/opt], recursive: true}',
        '  - {action: Block, directories: [/opt]}',
      ],
    ],
    [
      'a narrower Block',
      [
        'process:',
        '  - {action: Allow, directories: [/usr/bin]}',
        '  - {action: Block, paths: [/usr/bin/curl]}',
      ],
    ],
    [
      'Audit and Block',
      [
        'file:',
        '  - {action: Audit, paths: [/etc/hosts]}',
        '  - {action: Block, paths: [/etc/hosts]}',
      ],
    ],
    [
      'different kinds',
      [
        'process:',
        '  - {action: Allow, paths: [/etc/hosts]}',
        'file:',
        '  - {action: Block, paths: [/etc/hosts]}',
      ],
    ],
  ])('accepts %s', (_name, rules) => {
    const text = lines(
      ...HEADER,
      'spec:',
      '  subject: {spiffeId: spiffe://example.org/web}',
      ...rules.map((line) => `  ${line}`),
    );
    expect(issuesOf(text)).toEqual([]);
  });
});

describe('policyWarnings', () => {
  it('leaves out the kinds that the caller enforces', () => {
    const [policy] = parsePolicies(RULES, 'rules.yaml');
    const kinds = policyWarnings([policy], ['egress', 'process', 'file']).map(
      (warning) => warning.message.split(' ')[0],
    );
    expect(kinds).toEqual(['ingress', 'ingress']);
  });
});
