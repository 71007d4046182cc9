import { describe, expect, it } from 'vitest';
import { diffPolicySets, hasChanges } from '../../src/policy/diff';
import { parsePolicySet } from '../../src/policy/loader';
import { describeOperation } from '../../src/policy/operations';

const policy = (name: string, spec: string) =>
  `apiVersion: sigil.dev/v1alpha1\nkind: IdentityPolicy\nmetadata: {name: ${name}}\nspec:\n${spec}`;
const set = (...documents: string[]) => parsePolicySet(documents.join('---\n'), 'set.yaml');

describe('diffPolicySets', () => {
  it('finds nothing between equal sets', () => {
    const text = policy(
      'web',
      '  subject: {trustDomain: example.org}\n  file: [{action: Allow, readOnly: true, paths: [/etc/hosts]}]\n',
    );
    const diff = diffPolicySets(set(text), set(text));
    expect(hasChanges(diff)).toBe(false);
    expect(diff.sampledOperations).toBeGreaterThan(0);
  });

  it('reports a policy that moves to another subject as removed and added rules', () => {
    const before = set(
      policy(
        'p',
        '  subject: {spiffeId: spiffe://example.org/a}\n  egress: [{name: r, action: Block, ports: [25]}]\n',
      ),
    );
    const after = set(
      policy(
        'p',
        '  subject: {unidentified: true}\n  egress: [{name: r, action: Block, ports: [25]}]\n',
      ),
    );
    const diff = diffPolicySets(before, after);
    expect(diff.rules.map((change) => `${change.change} ${change.subject}`)).toEqual([
      'removed spiffe://example.org/a',
      'added unidentified (processes without a SPIFFE ID)',
    ]);
    const subjects = diff.verdicts.map(
      (change) => `${change.subject} ${describeOperation(change.operation)}`,
    );
    expect(subjects).toContain('spiffe://example.org/a connect 192.0.2.1:25/tcp');
    expect(subjects).toContain('null connect 192.0.2.1:25/tcp');
  });

  it('reports posture changes with the operations they change', () => {
    const rules =
      '  ingress: [{name: api, action: Allow, from: {spiffeId: spiffe://example.org/api}}]\n';
    const before = set(
      policy('db', `  subject: {spiffeIdPrefix: spiffe://example.org/db}\n${rules}`),
    );
    const after = set(
      policy(
        'db',
        `  subject: {spiffeIdPrefix: spiffe://example.org/db}\n  ingressPosture: Audit\n${rules}`,
      ),
    );
    const diff = diffPolicySets(before, after);
    expect(diff.settings).toEqual([
      {
        policy: 'db',
        subject: 'spiffeIdPrefix spiffe://example.org/db',
        setting: 'ingressPosture',
        before: 'Block',
        after: 'Audit',
      },
    ]);
    expect(diff.rules).toEqual([]);
    // The one ingress operation that no rule matches shows the posture change.
    expect(diff.verdicts.map((change) => describeOperation(change.operation))).toEqual([
      'accept tcp port 65001 from 203.0.113.77',
    ]);
    expect(diff.verdicts[0].subject).toBe('spiffe://example.org/db');
    expect(diff.verdicts[0].after.decision).toEqual({
      action: 'Audit',
      reason: 'posture',
      denied: false,
    });
  });

  it('samples reads and writes of file rules', () => {
    const before = set(
      policy(
        'web',
        '  subject: {spiffeId: spiffe://example.org/web}\n  file: [{name: etc, action: Allow, directories: [/etc]}]\n',
      ),
    );
    const after = set(
      policy(
        'web',
        '  subject: {spiffeId: spiffe://example.org/web}\n  file: [{name: etc, action: Allow, readOnly: true, directories: [/etc]}]\n',
      ),
    );
    const diff = diffPolicySets(before, after);
    expect(diff.rules.map((change) => change.after)).toEqual([
      'Allow open of directories /etc (readOnly: writes Blocked)',
    ]);
    expect(diff.verdicts.map((change) => describeOperation(change.operation))).toEqual([
      'open /etc/sample for writing',
    ]);
  });

  it('samples glob patterns with concrete paths', () => {
    const before = set(policy('web', '  subject: {spiffeId: spiffe://example.org/web}\n'));
    const after = set(
      policy(
        'web',
        '  subject: {spiffeId: spiffe://example.org/web}\n  process: [{name: home, action: Block, glob: true, paths: ["/home/*/bin/**"]}]\n',
      ),
    );
    const diff = diffPolicySets(before, after);
    expect(diff.verdicts.map((change) => describeOperation(change.operation))).toEqual([
      'exec /home/sample/bin/sample',
    ]);
  });
});
