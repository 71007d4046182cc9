import { describe, expect, it } from 'vitest';
import { parsePolicies } from '../../src/policy/loader';
import { ConfigError, formatIssue } from '../../src/util/config-error';

// The cidrs, paths, directories and capabilities fields share readStringList,
// so each case here runs through the loader for every one of them.
const HEADER = [
  'apiVersion: sigil.dev/v1alpha1',
  'kind: IdentityPolicy',
  'metadata: {name: p}',
  'spec:',
  '  subject: {spiffeId: spiffe://example.org/web}',
];

function issuesOf(...spec: string[]): string[] {
  try {
    parsePolicies(`${[...HEADER, ...spec].join('\n')}\n`, 'p.yaml');
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.issues.map(formatIssue);
  }
}

function policyOf(...spec: string[]) {
  return parsePolicies(`${[...HEADER, ...spec].join('\n')}\n`, 'p.yaml')[0];
}

describe('string list fields', () => {
  it.each([
    [
      'egress: [{action: Allow, to: {cidrs: []}}]',
      'spec.egress[0].to.cidrs: cidrs is empty (expected a list such as [10.0.0.0/8, "2001:db8::/32"], or ',
    ],
    [
      'process: [{action: Allow, paths: []}]',
      'spec.process[0].paths: paths is empty (expected a list such as [/usr/bin/curl], or remove it)',
    ],
    [
      'file: [{action: Allow, directories: []}]',
      'spec.file[0].directories: directories is empty (expected a list such as [/usr/local/bin], or remove it)',
    ],
    [
      'capability: [{action: Block, capabilities: []}]',
      'spec.capability[0].capabilities: capabilities is empty (expected a list of capability names such as [NET_RAW, SYS_ADMIN], or remove the rule)',
    ],
  ])('rejects an empty list: %s', (line, message) => {
    const issues = issuesOf(`  ${line}`);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toContain(message);
  });

  it.each([
    [
      'egress: [{action: Allow, to: {cidrs: [10.0.0.0/8, 7]}}]',
      'cidrs[1]: expected a CIDR string, found the number 7',
    ],
    [
      'process: [{action: Allow, paths: [/bin/sh, [x]]}]',
      'paths[1]: expected a path string, found a list',
    ],
    [
      'file: [{action: Allow, directories: [true]}]',
      'directories[0]: expected a path string, found the boolean true',
    ],
    [
      'capability: [{action: Block, capabilities: [7]}]',
      'capabilities[0]: expected a capability name, found the number 7',
    ],
  ])('rejects an entry that is not a string: %s', (line, message) => {
    const issues = issuesOf(`  ${line}`);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toContain(message);
  });

  it('reports every invalid entry of one list', () => {
    const issues = issuesOf(
      '  egress: [{action: Allow, to: {cidrs: [10.0.0.0/33, 1, 10.0.0.1/8]}}]',
    );
    expect(issues).toHaveLength(3);
    expect(issues[0]).toContain('cidrs[0]: invalid CIDR "10.0.0.0/33"');
    expect(issues[1]).toContain('cidrs[1]: expected a CIDR string');
    expect(issues[2]).toContain('cidrs[2]: invalid CIDR "10.0.0.1/8"');
  });

  it('keeps a path listed twice once', () => {
    const policy = policyOf('  process: [{action: Allow, paths: [/bin/sh, /bin//sh, /bin/ls]}]');
    expect(policy.process[0].paths).toEqual(['/bin/sh', '/bin/ls']);
  });

  it('keeps a capability listed twice once', () => {
    const policy = policyOf('  capability: [{action: Block, capabilities: [NET_RAW, NET_RAW]}]');
    expect(policy.capability[0].capabilities).toEqual(['NET_RAW']);
  });

  it('keeps a CIDR listed twice twice', () => {
    const policy = policyOf('  egress: [{action: Allow, to: {cidrs: [10.0.0.0/8, 10.0.0.0/8]}}]');
    const destination = policy.egress[0].to;
    expect(destination.kind).toBe('cidrs');
    if (destination.kind !== 'cidrs') return;
    expect(destination.cidrs).toHaveLength(2);
  });
});
