import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  resolveDirectoryRules,
  unidentifiedKillWarnings,
} from '../../src/enforce/tracepoint-enforcer';
import { KernelAction } from '../../src/kernel/layout';
import { compileLsmPolicySet } from '../../src/policy/compile-lsm';
import {
  describeEnforcement,
  KindEnforcers,
  ruleEnforcement,
} from '../../src/policy/enforcement-report';
import { parsePolicySet } from '../../src/policy/loader';

const TEXT = `apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata:
  name: web
spec:
  subject:
    spiffeId: spiffe://example.org/web
  egress:
    - name: db
      action: Allow
      to:
        cidrs: [10.0.0.0/8]
  process:
    - name: no-curl
      action: Block
      paths: [/usr/bin/curl]
  file:
    - name: watch-etc
      action: Audit
      directories: [/etc]
---
apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata:
  name: trial
spec:
  mode: Audit
  subject:
    spiffeId: spiffe://example.org/web
  ingress:
    - name: from-lb
      action: Allow
      from:
        cidrs: [10.1.0.0/16]
  file:
    - name: no-keys
      action: Block
      paths: [/etc/ssl/private/key.pem]
`;

const TRACEPOINT: KindEnforcers = {
  egress: 'cgroup-sock',
  ingress: null,
  process: 'tracepoint-kill',
  file: 'tracepoint-kill',
  capability: null,
};
const EGRESS_ONLY: KindEnforcers = {
  egress: 'cgroup-sock',
  ingress: null,
  process: null,
  file: null,
  capability: null,
};

describe('ruleEnforcement', () => {
  const set = parsePolicySet(TEXT, 'web.yaml');

  it.each([
    ['db', 'egress', 'cgroup-sock', 'enforce'],
    ['no-curl', 'process', 'tracepoint-kill', 'enforce'],
    ['watch-etc', 'file', 'tracepoint-kill', 'audit'],
    ['from-lb', 'ingress', null, 'none'],
    ['no-keys', 'file', 'tracepoint-kill', 'audit'],
  ])('reports rule %s of kind %s', (rule, kind, enforcer, state) => {
    const row = ruleEnforcement(set.policies, TRACEPOINT).find((entry) => entry.rule === rule);
    expect(row).toMatchObject({ kind, enforcer, state, file: 'web.yaml' });
  });

  it('reports nothing applied without a path enforcer', () => {
    const states = ruleEnforcement(set.policies, EGRESS_ONLY).map(
      (row) => `${row.rule}:${row.state}`,
    );
    expect(states).toEqual([
      'db:enforce',
      'no-curl:none',
      'watch-etc:none',
      'from-lb:none',
      'no-keys:none',
    ]);
  });

  it('describes each kind in one line', () => {
    const lines = describeEnforcement(TRACEPOINT, ruleEnforcement(set.policies, TRACEPOINT));
    expect(lines).toEqual([
      'egress rules: enforced by cgroup-sock; enforces 1: web/db',
      'ingress rules: no enforcer on this node; not applied 1: trial/from-lb',
      'process rules: enforced by tracepoint-kill; enforces 1: web/no-curl',
      'file rules: enforced by tracepoint-kill; audits only 2: web/watch-etc, trial/no-keys',
      'capability rules: no enforcer on this node; no rules',
    ]);
  });
});

describe('resolveDirectoryRules', () => {
  it('resolves directories to inodes and warns for the others', () => {
    const work = mkdtempSync(join(tmpdir(), 'sigil-tp-dirs-'));
    try {
      mkdirSync(join(work, 'data'));
      writeFileSync(join(work, 'file.txt'), '');
      const set = parsePolicySet(
        `apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata:
  name: p
spec:
  subject:
    spiffeId: spiffe://example.org/a
  file:
    - name: dirs
      action: Block
      recursive: true
      directories: [${join(work, 'data')}, ${join(work, 'file.txt')}, ${join(work, 'missing')}]
`,
        'p.yaml',
      );
      const compiled = compileLsmPolicySet(set, [{ id: 1, spiffeId: 'spiffe://example.org/a' }]);
      const result = resolveDirectoryRules([...compiled.ruleSet.directoryRules], compiled.rules);
      expect(result.rules).toHaveLength(1);
      expect(result.rules[0]).toMatchObject({
        subject: 1,
        kind: 'file',
        action: KernelAction.Block,
        recursive: true,
      });
      expect(result.warnings.map((warning) => warning.message)).toEqual([
        `file rule "dirs" of policy "p": directory ${join(work, 'file.txt')} is not a directory, so tracepoint-kill does not enforce it`,
        `file rule "dirs" of policy "p": directory ${join(work, 'missing')} does not exist, so tracepoint-kill does not enforce it`,
      ]);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('unidentifiedKillWarnings', () => {
  const policy = (mode: string, posture: string) =>
    parsePolicySet(
      `apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata:
  name: lockdown
spec:
  mode: ${mode}
  subject:
    unidentified: true
  filePosture: ${posture}
  file:
    - name: libs
      action: Allow
      directories: [/usr/lib]
      recursive: true
`,
      'lockdown.yaml',
    );

  it('warns for a Block file posture of unidentified processes', () => {
    const warnings = unidentifiedKillWarnings(policy('Enforce', 'Block'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0].fieldPath).toBe('spec.filePosture');
    expect(warnings[0].message).toContain(
      'kill every process without a SPIFFE ID that opens anything',
    );
  });

  it.each([
    ['Audit', 'Block'],
    ['Enforce', 'Audit'],
  ])('stays quiet in mode %s with posture %s', (mode, posture) => {
    expect(unidentifiedKillWarnings(policy(mode, posture))).toEqual([]);
  });
});
