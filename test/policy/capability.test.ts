import { describe, expect, it } from 'vitest';
import { decideCapability, explainCapability } from '../../src/policy/decide-paths';
import { diffPolicySets } from '../../src/policy/diff';
import { parsePolicies, parsePolicySet } from '../../src/policy/loader';
import { CAPABILITY_NAMES } from '../../src/policy/schema';
import { ConfigError, formatIssue } from '../../src/util/config-error';

const lines = (...text: string[]) => `${text.join('\n')}\n`;
const WEB = 'spiffe://example.org/web';

function policy(name: string, ...spec: string[]): string {
  return lines(
    'apiVersion: sigil.dev/v1alpha1',
    'kind: IdentityPolicy',
    `metadata: {name: ${name}}`,
    'spec:',
    `  subject: {spiffeId: ${WEB}}`,
    ...spec.map((line) => `  ${line}`),
  );
}

function issuesOf(text: string): string[] {
  try {
    parsePolicies(text, 'p.yaml');
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.issues.map(formatIssue);
  }
}

describe('capability rules', () => {
  it('reads names, keeps a repeated name once, and takes the posture', () => {
    const [read] = parsePolicies(
      policy(
        'p',
        'capabilityPosture: Audit',
        'capability:',
        '  - {name: admin, action: Block, capabilities: [SYS_ADMIN, NET_RAW, SYS_ADMIN]}',
      ),
      'p.yaml',
    );
    expect(read.capabilityPosture).toBe('Audit');
    expect(read.capability).toMatchObject([
      { name: 'admin', action: 'Block', capabilities: ['SYS_ADMIN', 'NET_RAW'] },
    ]);
  });

  it('numbers the capabilities as the kernel does', () => {
    expect(CAPABILITY_NAMES.length).toBe(41);
    expect(CAPABILITY_NAMES.indexOf('NET_RAW')).toBe(13);
    expect(CAPABILITY_NAMES.indexOf('SYS_ADMIN')).toBe(21);
    expect(CAPABILITY_NAMES.indexOf('BPF')).toBe(39);
  });

  it.each([
    ['CAP_NET_RAW', 'write NET_RAW: capability names are upper case and have no CAP_ prefix'],
    ['net_raw', 'write NET_RAW: capability names are upper case and have no CAP_ prefix'],
    ['NET_RAWX', 'valid names are those of capabilities(7) without CAP_: CHOWN, DAC_OVERRIDE'],
  ])('rejects %s with the file, line and the right spelling', (name, hint) => {
    const text = policy('p', 'capability:', `  - {action: Block, capabilities: [${name}]}`);
    const [issue] = issuesOf(text);
    expect(issue).toContain(
      `p.yaml:7:38: error: spec.capability[0].capabilities[0]: invalid capability "${name}"`,
    );
    expect(issue).toContain(hint);
  });

  it('reports every problem of a rule list at once', () => {
    const text = policy(
      'p',
      'capability:',
      '  - {action: Allow}',
      '  - {action: Block, capabilities: []}',
      '  - {action: Block, capabilities: [7]}',
    );
    expect(issuesOf(text)).toEqual([
      expect.stringContaining(
        'p.yaml:7:7: error: spec.capability[0].capabilities: missing required field "capabilities"',
      ),
      expect.stringContaining(
        'p.yaml:8:37: error: spec.capability[1].capabilities: capabilities is empty',
      ),
      expect.stringContaining(
        'p.yaml:9:38: error: spec.capability[2].capabilities[0]: expected a capability name, found the number 7',
      ),
    ]);
  });

  it('reports an Allow and a Block of the same capability in one policy', () => {
    const text = policy(
      'p',
      'capability:',
      '  - {name: raw-ok, action: Allow, capabilities: [NET_RAW]}',
      '  - {name: raw-no, action: Block, capabilities: [NET_ADMIN, NET_RAW]}',
    );
    expect(issuesOf(text)).toEqual([
      expect.stringContaining(
        'rule "raw-no" (Block) contradicts rule "raw-ok" (Allow) at p.yaml:7:7: both match the capability NET_RAW',
      ),
    ]);
  });

  it('decides by rule, by posture, and without rules, and combines policies', () => {
    const set = parsePolicySet(
      policy(
        'a',
        'capability:',
        '  - {name: bind, action: Allow, capabilities: [NET_BIND_SERVICE]}',
      ) +
        '---\n' +
        policy(
          'b',
          'mode: Audit',
          'capability:',
          '  - {name: ptrace, action: Block, capabilities: [SYS_PTRACE]}',
        ),
      'p.yaml',
    );
    expect(decideCapability(set, { subject: WEB, capability: 'NET_BIND_SERVICE' })).toEqual({
      action: 'Allow',
      reason: 'rule',
      denied: false,
      policy: 'a',
      rule: 'bind',
    });
    expect(decideCapability(set, { subject: WEB, capability: 'SYS_PTRACE' })).toMatchObject({
      action: 'Audit',
      reason: 'rule',
      wouldBlock: true,
    });
    expect(decideCapability(set, { subject: WEB, capability: 'NET_RAW' })).toEqual({
      action: 'Block',
      reason: 'posture',
      denied: true,
    });
    expect(
      decideCapability(set, { subject: 'spiffe://example.org/db', capability: 'NET_RAW' }),
    ).toEqual({
      action: 'None',
      reason: 'no-policy',
      denied: false,
    });
    expect(explainCapability(set, { subject: WEB, capability: 'NET_RAW' }).policies).toEqual([
      'a',
      'b',
    ]);
  });

  it('rejects a query with an invalid capability name', () => {
    const set = parsePolicySet(policy('a'), 'p.yaml');
    expect(() => decideCapability(set, { subject: WEB, capability: 'CAP_SYS_ADMIN' })).toThrow(
      'invalid capability query: capability "CAP_SYS_ADMIN": write SYS_ADMIN',
    );
  });

  it('shows a changed capability verdict in the diff', () => {
    const before = parsePolicySet(
      policy('a', 'capability:', '  - {name: raw, action: Allow, capabilities: [NET_RAW]}'),
      'old.yaml',
    );
    const after = parsePolicySet(
      policy('a', 'capability:', '  - {name: raw, action: Block, capabilities: [NET_RAW]}'),
      'new.yaml',
    );
    const diff = diffPolicySets(before, after);
    expect(diff.rules).toMatchObject([{ kind: 'capability', rule: 'raw', change: 'changed' }]);
    expect(
      diff.verdicts.map((change) => [
        change.operation,
        change.before.decision.action,
        change.after.decision.action,
      ]),
    ).toContainEqual([{ kind: 'capability', capability: 'NET_RAW' }, 'Allow', 'Block']);
  });
});
