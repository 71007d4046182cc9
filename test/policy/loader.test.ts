import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadPolicyFiles, parsePolicies, PolicyFileCache } from '../../src/policy/loader';
import { ConfigError, formatIssue } from '../../src/util/config-error';

/** Joins lines with newlines, so that line numbers in a case are easy to count. */
const lines = (...text: string[]) => `${text.join('\n')}\n`;

const HEADER = ['apiVersion: sigil.dev/v1alpha1', 'kind: IdentityPolicy'];

/** Returns the formatted issues that parsing the text throws, or [] when it succeeds. */
function issuesOf(text: string, file = 'p.yaml'): string[] {
  try {
    parsePolicies(text, file);
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.issues.map(formatIssue);
  }
}

const GOOD_POLICY = lines(
  ...HEADER,
  'metadata:',
  '  name: web-egress',
  'spec:',
  '  subject:',
  '    spiffeId: spiffe://example.org/web',
  '  egressPosture: Audit',
  '  egress:',
  '    - name: to-api',
  '      action: Allow',
  '      to:',
  '        spiffeId: spiffe://example.org/api',
  '      ports: [8080, "9000-9100"]',
  '      protocol: TCP',
  '    - action: Block',
  '      to:',
  '        cidrs: [10.0.0.0/8, "2001:db8::/32", 127.0.0.2, "2001:db8::1"]',
  '    - action: Audit',
  '      to:',
  '        spiffeIdPrefix: spiffe://example.org/ns/',
  '      protocol: UDP',
  '    - action: Audit',
);

describe('parsePolicies', () => {
  it('reads a valid policy', () => {
    const [policy] = parsePolicies(GOOD_POLICY, 'web.yaml');
    expect(policy.name).toBe('web-egress');
    expect(policy.subject).toEqual({ kind: 'spiffeId', spiffeId: 'spiffe://example.org/web' });
    expect(policy.egressPosture).toBe('Audit');
    expect(policy.position).toEqual({ file: 'web.yaml', line: 1, column: 1 });
    expect(policy.egress).toHaveLength(4);
  });

  it('reads rule fields and defaults', () => {
    const [policy] = parsePolicies(GOOD_POLICY, 'web.yaml');
    const [toApi, block, audit, everything] = policy.egress;
    expect(toApi.name).toBe('to-api');
    expect(toApi.to).toEqual({
      kind: 'peer',
      peer: { kind: 'spiffeId', spiffeId: 'spiffe://example.org/api' },
    });
    expect(toApi.ports).toEqual([
      { lo: 8080, hi: 8080 },
      { lo: 9000, hi: 9100 },
    ]);
    expect(toApi.protocol).toBe('TCP');
    expect(toApi.position).toEqual({ file: 'web.yaml', line: 10, column: 7 });
    expect(block.name).toBe('egress-1');
    expect(block.ports).toBeNull();
    expect(block.protocol).toBe('Any');
    // The prefix is stored in canonical form, without the trailing slash.
    expect(audit.to).toEqual({
      kind: 'peer',
      peer: { kind: 'spiffeIdPrefix', spiffeIdPrefix: 'spiffe://example.org/ns' },
    });
    expect(everything.to).toEqual({ kind: 'any' });
  });

  it('normalises CIDRs and bare addresses', () => {
    const [policy] = parsePolicies(GOOD_POLICY, 'web.yaml');
    const to = policy.egress[1].to;
    expect(to.kind).toBe('cidrs');
    if (to.kind !== 'cidrs') return;
    expect(to.cidrs.map((cidr) => cidr.text)).toEqual([
      '10.0.0.0/8',
      '2001:db8::/32',
      '127.0.0.2/32',
      '2001:db8::1/128',
    ]);
    expect(to.cidrs.map((cidr) => cidr.prefixLen)).toEqual([104, 32, 128, 128]);
  });

  it('defaults the posture to Block', () => {
    const text = lines(
      ...HEADER,
      'metadata: {name: p}',
      'spec:',
      '  subject: {spiffeId: spiffe://a/b}',
    );
    const [policy] = parsePolicies(text, 'p.yaml');
    expect(policy.egressPosture).toBe('Block');
    expect(policy.egress).toEqual([]);
  });

  it('reads every document of a multi-document file', () => {
    const policy = (name: string) =>
      lines(...HEADER, `metadata: {name: ${name}}`, 'spec: {subject: {spiffeId: spiffe://a/b}}');
    const text = `---\n${policy('one')}---\n# only a comment\n---\n${policy('two')}---\n`;
    const policies = parsePolicies(text, 'p.yaml');
    expect(policies.map((p) => p.name)).toEqual(['one', 'two']);
    expect(policies[1].position.line).toBe(9);
  });

  it.each([
    { name: 'an empty file', text: '' },
    { name: 'a file of comments', text: '# policies moved to web.yaml\n' },
    { name: 'a file of empty documents', text: '---\n---\n' },
  ])('rejects $name, so a truncated file never removes its rules', ({ text }) => {
    expect(issuesOf(text, 'empty.yaml')).toEqual([
      'empty.yaml:1:1: error: the file holds no policy document ' +
        '(write at least one policy in it, or delete the file to remove its policies)',
    ]);
  });

  it.each([
    {
      name: 'YAML syntax error',
      text: lines(...HEADER, 'metadata: {name: p', 'spec: x'),
      expected: ['p.yaml:4:1: error: invalid YAML: Flow map in block collection'],
      count: 1,
    },
    {
      name: 'duplicate YAML key',
      text: lines(...HEADER, 'kind: IdentityPolicy'),
      expected: ['p.yaml:3:1: error: invalid YAML: Map keys must be unique'],
      count: 1,
    },
    {
      name: 'document that is not a map',
      text: lines('- a', '- b'),
      expected: ['p.yaml:1:1: error: expected a map, found a list'],
      count: 1,
    },
    {
      name: 'missing top-level fields',
      text: lines('kind: IdentityPolicy'),
      expected: [
        'p.yaml:1:1: error: apiVersion: missing required field "apiVersion" (use sigil.dev/v1alpha1)',
        'p.yaml:1:1: error: metadata: missing required field "metadata"',
        'p.yaml:1:1: error: spec: missing required field "spec"',
      ],
      count: 3,
    },
    {
      name: 'wrong apiVersion and kind',
      text: lines(
        'apiVersion: sigil.dev/v1',
        'kind: NetworkPolicy',
        'metadata: {name: p}',
        'spec: {subject: {spiffeId: spiffe://a/b}}',
      ),
      expected: [
        'p.yaml:1:13: error: apiVersion: unsupported apiVersion "sigil.dev/v1" (use sigil.dev/v1alpha1)',
        'p.yaml:2:7: error: kind: unsupported kind "NetworkPolicy" (use IdentityPolicy)',
      ],
      count: 2,
    },
    {
      name: 'unknown fields at every level',
      text: lines(
        ...HEADER,
        'metadata: {name: p, labels: {}}',
        'spec:',
        '  subject: {spiffeId: spiffe://a/b, selector: x}',
        '  egres: []',
        '  egress:',
        '    - action: Allow',
        '      port: 80',
        '      to: {cidr: 10.0.0.0/8}',
        'status: {}',
      ),
      expected: [
        'p.yaml:3:21: error: metadata.labels: unknown field "labels" (allowed fields: name)',
        'p.yaml:5:37: error: spec.subject.selector: unknown field "selector"',
        'p.yaml:6:3: error: spec.egres: unknown field "egres" (did you mean "egress"? allowed fields: subject, mode, egressPosture, egress, ingressPosture, ingress, processPosture, process, filePosture, file, capabilityPosture, capability)',
        'p.yaml:9:7: error: spec.egress[0].port: unknown field "port" (did you mean "ports"?',
        'p.yaml:10:12: error: spec.egress[0].to.cidr: unknown field "cidr" (did you mean "cidrs"?',
        'p.yaml:10:11: error: spec.egress[0].to: expected exactly one of spiffeId, spiffeIdPrefix, cidrs, found none',
        'p.yaml:11:1: error: status: unknown field "status" (allowed fields: apiVersion, kind, metadata, spec)',
      ],
      count: 7,
    },
    {
      name: 'invalid names',
      text: lines(
        ...HEADER,
        'metadata: {name: Web_Egress}',
        'spec:',
        '  subject: {spiffeId: spiffe://a/b}',
        '  egress:',
        `    - {name: ${'r'.repeat(64)}, action: Allow}`,
        '    - {name: -bad, action: Allow}',
        '    - {name: 7, action: Allow}',
      ),
      expected: [
        'p.yaml:3:18: error: metadata.name: invalid name "Web_Egress" (use at most 63 lowercase',
        'p.yaml:7:14: error: spec.egress[0].name: name "rrrr',
        'is 64 characters long',
        'p.yaml:8:14: error: spec.egress[1].name: invalid name "-bad"',
        'p.yaml:9:14: error: spec.egress[2].name: expected a string, found the number 7',
      ],
      count: 4,
    },
    {
      name: 'invalid subjects',
      text: lines(
        ...HEADER,
        'metadata: {name: p}',
        'spec:',
        '  subject: {spiffeId: "spiffe://Example.org/web", spiffeIdPrefix: "http://a/"}',
      ),
      expected: [
        'p.yaml:5:12: error: spec.subject: expected exactly one of spiffeId, spiffeIdPrefix, trustDomain, unidentified, found spiffeId and spiffeIdPrefix',
        'p.yaml:5:23: error: spec.subject.spiffeId: invalid SPIFFE ID "spiffe://Example.org/web": the trust domain contains',
        'p.yaml:5:67: error: spec.subject.spiffeIdPrefix: invalid SPIFFE ID prefix "http://a/": the scheme must be',
      ],
      count: 3,
    },
    {
      name: 'missing subject selector',
      text: lines(...HEADER, 'metadata: {name: p}', 'spec:', '  subject: {}'),
      expected: [
        'p.yaml:5:12: error: spec.subject: expected exactly one of spiffeId, spiffeIdPrefix, trustDomain, unidentified, found none',
      ],
      count: 1,
    },
    {
      name: 'invalid enums',
      text: lines(
        ...HEADER,
        'metadata: {name: p}',
        'spec:',
        '  subject: {spiffeId: spiffe://a/b}',
        '  egressPosture: Allow',
        '  egress:',
        '    - action: allow',
        '      protocol: ICMP',
        '    - protocol: TCP',
      ),
      expected: [
        'p.yaml:6:18: error: spec.egressPosture: invalid egressPosture "Allow" (valid values: Block, Audit)',
        'p.yaml:8:15: error: spec.egress[0].action: invalid action "allow" (did you mean "Allow"? valid values: Allow, Audit, Block)',
        'p.yaml:9:17: error: spec.egress[0].protocol: invalid protocol "ICMP" (valid values: TCP, UDP, Any)',
        'p.yaml:10:7: error: spec.egress[1].action: missing required field "action"',
      ],
      count: 4,
    },
    {
      name: 'invalid CIDRs',
      text: lines(
        ...HEADER,
        'metadata: {name: p}',
        'spec:',
        '  subject: {spiffeId: spiffe://a/b}',
        '  egress:',
        '    - action: Allow',
        '      to:',
        '        cidrs:',
        '          - 10.1.2.3/8',
        '          - 2001:db8::1/32',
        '          - 10.0.0.0/40',
        '          - 10.0.0.300',
        '          - 8',
        '    - action: Allow',
        '      to: {cidrs: []}',
      ),
      expected: [
        'p.yaml:10:13: error: spec.egress[0].to.cidrs[0]: invalid CIDR "10.1.2.3/8": host bits are set after the prefix (use 10.0.0.0/8)',
        'p.yaml:11:13: error: spec.egress[0].to.cidrs[1]: invalid CIDR "2001:db8::1/32": host bits are set after the prefix (use 2001:db8::/32)',
        'p.yaml:12:13: error: spec.egress[0].to.cidrs[2]: invalid CIDR "10.0.0.0/40": prefix length "40" is invalid (IPv4 prefix lengths are 0-32)',
        'p.yaml:13:13: error: spec.egress[0].to.cidrs[3]: invalid CIDR "10.0.0.300": "10.0.0.300" is not an IPv4 or IPv6 address',
        'p.yaml:14:13: error: spec.egress[0].to.cidrs[4]: expected a CIDR string, found the number 8',
        'p.yaml:16:19: error: spec.egress[1].to.cidrs: cidrs is empty',
      ],
      count: 6,
    },
    {
      name: 'invalid ports',
      text: lines(
        ...HEADER,
        'metadata: {name: p}',
        'spec:',
        '  subject: {spiffeId: spiffe://a/b}',
        '  egress:',
        '    - action: Allow',
        '      ports: [0, 65536, "9100-9000", http, 80.5, [1]]',
        '    - action: Allow',
        '      ports: []',
        '    - action: Allow',
        '      ports: 80',
      ),
      expected: [
        'p.yaml:8:15: error: spec.egress[0].ports[0]: invalid port: port 0 is out of range (expected a port 1-65535',
        'p.yaml:8:18: error: spec.egress[0].ports[1]: invalid port: port 65536 is out of range',
        'p.yaml:8:25: error: spec.egress[0].ports[2]: invalid port: range "9100-9000" starts after it ends (use "9000-9100")',
        'p.yaml:8:38: error: spec.egress[0].ports[3]: invalid port: "http" is not a port or a port range',
        'p.yaml:8:44: error: spec.egress[0].ports[4]: invalid port: port 80.5 is not an integer',
        'p.yaml:8:50: error: spec.egress[0].ports[5]: invalid port: a port must be a number',
        'p.yaml:10:14: error: spec.egress[1].ports: ports is empty',
        'p.yaml:12:14: error: spec.egress[2].ports: expected a list, found the number 80',
      ],
      count: 8,
    },
    {
      name: 'two destinations in one rule',
      text: lines(
        ...HEADER,
        'metadata: {name: p}',
        'spec:',
        '  subject: {spiffeId: spiffe://a/b}',
        '  egress:',
        '    - action: Allow',
        '      to: {spiffeId: spiffe://a/c, cidrs: [10.0.0.0/8]}',
      ),
      expected: [
        'p.yaml:8:11: error: spec.egress[0].to: expected exactly one of spiffeId, spiffeIdPrefix, cidrs, found spiffeId and cidrs (remove "to" to match every destination)',
      ],
      count: 1,
    },
    {
      name: 'duplicate rule names, explicit and default',
      text: lines(
        ...HEADER,
        'metadata: {name: p}',
        'spec:',
        '  subject: {spiffeId: spiffe://a/b}',
        '  egress:',
        '    - {name: egress-1, action: Allow, ports: [1]}',
        '    - {action: Allow, ports: [2]}',
        '    - {name: egress-1, action: Bogus}',
      ),
      expected: [
        'p.yaml:8:7: error: spec.egress[1].name: duplicate rule name "egress-1", first used at p.yaml:7:14',
        'p.yaml:9:14: error: spec.egress[2].name: duplicate rule name "egress-1", first used at p.yaml:7:14',
        'p.yaml:9:32: error: spec.egress[2].action: invalid action "Bogus"',
      ],
      count: 3,
    },
    {
      name: 'duplicate policy names in one file',
      text: lines(
        ...HEADER,
        'metadata: {name: p}',
        'spec: {subject: {spiffeId: spiffe://a/b}}',
        '---',
        ...HEADER,
        'metadata: {name: p}',
        'spec: {subject: {spiffeId: spiffe://a/c}}',
      ),
      expected: [
        'p.yaml:8:18: error: metadata.name: duplicate policy name "p", first used at p.yaml:3:18',
      ],
      count: 1,
    },
    {
      name: 'contradictory rules',
      text: lines(
        ...HEADER,
        'metadata: {name: p}',
        'spec:',
        '  subject: {spiffeId: spiffe://a/b}',
        '  egress:',
        '    - {name: allow-db, action: Allow, to: {cidrs: [10.0.0.0/8, 10.1.0.0/16]}, ports: [80, 81]}',
        '    - {name: audit-db, action: Audit, to: {cidrs: [10.1.0.0/16, 10.0.0.0/8]}, ports: ["80-81"]}',
        '    - {name: block-db, action: Block, to: {cidrs: [10.1.0.0/16, 10.0.0.0/8]}, ports: ["80-81"]}',
        '    - {name: block-udp, action: Block, to: {cidrs: [10.0.0.0/8, 10.1.0.0/16]}, ports: [80, 81], protocol: UDP}',
        '    - {name: allow-peer, action: Allow, to: {spiffeIdPrefix: "spiffe://a/ns/"}}',
        '    - {name: block-peer, action: Block, to: {spiffeIdPrefix: "spiffe://a/ns"}}',
        '    - {name: allow-all, action: Allow}',
        '    - {name: block-all, action: Block}',
      ),
      expected: [
        'p.yaml:9:32: error: spec.egress[2].action: rule "block-db" (Block) contradicts rule "allow-db" (Allow) at p.yaml:7:7',
        'p.yaml:12:34: error: spec.egress[5].action: rule "block-peer" (Block) contradicts rule "allow-peer" (Allow) at p.yaml:11:7',
        'p.yaml:14:33: error: spec.egress[7].action: rule "block-all" (Block) contradicts rule "allow-all" (Allow) at p.yaml:13:7',
      ],
      count: 3,
    },
  ])('reports $name', ({ text, expected, count }) => {
    const issues = issuesOf(text);
    for (const substring of expected) {
      expect(issues.join('\n')).toContain(substring);
    }
    expect(issues).toHaveLength(count);
  });

  it('throws ConfigError with the count in the message', () => {
    const text = lines(...HEADER, 'metadata: {name: P}', 'spec: {subject: {}}');
    expect(() => parsePolicies(text, 'p.yaml')).toThrow(/invalid configuration \(2 errors\)/);
  });
});

const policyText = (name: string, subject = 'spiffe://a/b') =>
  lines(...HEADER, `metadata: {name: ${name}}`, `spec: {subject: {spiffeId: "${subject}"}}`);

/** Makes a temporary directory, removed after the calling describe block, and a writer of files in it. */
function policyDirectory(prefix: string): {
  root: string;
  write: (path: string, text: string) => string;
} {
  const root = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const write = (path: string, text: string) => {
    const file = join(root, path);
    writeFileSync(file, text);
    return file;
  };
  return { root, write };
}

describe('loadPolicyFiles', () => {
  const { root, write } = policyDirectory('sigil-policy-loader-');

  it('expands directories to sorted YAML files', () => {
    mkdirSync(join(root, 'dir'));
    mkdirSync(join(root, 'dir', 'nested.yaml'));
    write('dir/b.yml', policyText('b'));
    write('dir/a.yaml', policyText('a'));
    write('dir/README.md', 'not a policy');
    write('dir/c.yaml.bak', 'not a policy');
    const single = write('single.yaml', policyText('single'));

    const set = loadPolicyFiles([single, join(root, 'dir')]);
    expect(set.files).toEqual([single, join(root, 'dir', 'a.yaml'), join(root, 'dir', 'b.yml')]);
    expect(set.policies.map((policy) => policy.name)).toEqual(['single', 'a', 'b']);
    expect(set.policies[1].position.file).toBe(join(root, 'dir', 'a.yaml'));
  });

  it('lists issues of every file at once', () => {
    const first = write('first.yaml', policyText('same'));
    const second = write('second.yaml', lines(policyText('same'), 'extra: 1'));
    const third = write('third.yaml', policyText('other', 'spiffe://a/b/'));
    const missing = join(root, 'missing.yaml');

    let error: unknown;
    try {
      loadPolicyFiles([first, second, third, missing]);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const issues = (error as ConfigError).issues.map(formatIssue);
    expect(issues).toHaveLength(4);
    expect(issues[0]).toContain(`${missing}:1:1: error: cannot read the path: ENOENT`);
    expect(issues[1]).toContain(
      `${second}:3:18: error: metadata.name: duplicate policy name "same", first used at ${first}:3:18`,
    );
    expect(issues[2]).toContain(`${second}:6:1: error: extra: unknown field "extra"`);
    expect(issues[3]).toContain(
      `${third}:4:28: error: spec.subject.spiffeId: invalid SPIFFE ID "spiffe://a/b/"`,
    );
  });

  it('reports an unreadable file', () => {
    const directoryAsFile = join(root, 'dir', 'nested.yaml');
    const load = () => loadPolicyFiles([join(root, 'dir'), `${directoryAsFile}/x.yaml`]);
    expect(load).toThrow(ConfigError);
    expect(load).toThrow(/x\.yaml:1:1: error: cannot read the path/);
  });
});

describe('loadPolicyFiles with a PolicyFileCache', () => {
  const { write } = policyDirectory('sigil-policy-cache-');

  it('keeps the policies of unchanged files and parses a changed one', () => {
    const first = write('keep-1.yaml', policyText('one'));
    const second = write('keep-2.yaml', policyText('two'));
    const cache = new PolicyFileCache();

    const before = loadPolicyFiles([first, second], cache);
    write('keep-2.yaml', policyText('two', 'spiffe://a/c'));
    const after = loadPolicyFiles([first, second], cache);

    expect(after.policies[0]).toBe(before.policies[0]);
    expect(after.policies[1]).not.toBe(before.policies[1]);
    expect(after.policies[1].subject).toEqual(loadPolicyFiles([second]).policies[0].subject);
  });

  it('reports the errors of a file again on every load', () => {
    const good = write('errors-good.yaml', policyText('good'));
    const bad = write('errors-bad.yaml', lines(policyText('bad'), 'extra: 1'));
    const cache = new PolicyFileCache();

    expect(() => loadPolicyFiles([good, bad], cache)).toThrow(/unknown field "extra"/);
    expect(() => loadPolicyFiles([good, bad], cache)).toThrow(/unknown field "extra"/);
  });

  it('finds a duplicate name between a cached file and a changed one', () => {
    const first = write('dup-1.yaml', policyText('first'));
    const second = write('dup-2.yaml', policyText('second'));
    const cache = new PolicyFileCache();
    loadPolicyFiles([first, second], cache);

    write('dup-2.yaml', policyText('first'));
    expect(() => loadPolicyFiles([first, second], cache)).toThrow(/duplicate policy name "first"/);
  });

  it('forgets files that are no longer loaded', () => {
    const first = write('gone-1.yaml', policyText('kept'));
    const second = write('gone-2.yaml', policyText('dropped'));
    const cache = new PolicyFileCache();

    loadPolicyFiles([first, second], cache);
    expect(cache.size).toBe(2);
    loadPolicyFiles([first], cache);
    expect(cache.size).toBe(1);
  });
});
