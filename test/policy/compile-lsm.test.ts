import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { KernelAction } from '../../src/kernel/layout';
import { resolveInode } from '../../src/kernel/lsm-maps';
import { KnownIdentity } from '../../src/policy/compile';
import { compileLsmPolicySet } from '../../src/policy/compile-lsm';
import { parsePolicySet } from '../../src/policy/loader';
import { PolicySet } from '../../src/policy/types';

const WEB = 'spiffe://a.org/ns/web';
const CANARY = 'spiffe://a.org/ns/web/canary';
const API = 'spiffe://a.org/api';
const OTHER_DOMAIN = 'spiffe://b.org/ns/web';
const IDENTITIES: KnownIdentity[] = [
  { id: 1, spiffeId: WEB },
  { id: 2, spiffeId: CANARY },
  { id: 4, spiffeId: API },
  { id: 5, spiffeId: OTHER_DOMAIN },
];

let root: string;
let files: { tool: string; secret: string; config: string; missing: string; directory: string };

beforeAll(() => {
  root = mkdtempSync(path.join(tmpdir(), 'sigil-compile-lsm-'));
  files = {
    tool: path.join(root, 'bin', 'tool'),
    secret: path.join(root, 'secret.txt'),
    config: path.join(root, 'config.txt'),
    missing: path.join(root, 'missing'),
    directory: path.join(root, 'data'),
  };
  mkdirSync(path.join(root, 'bin'));
  mkdirSync(files.directory);
  for (const file of [files.tool, files.secret, files.config]) writeFileSync(file, 'x');
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

interface PolicyDocument {
  name: string;
  subject: Record<string, unknown>;
  mode?: string;
  processPosture?: string;
  filePosture?: string;
  process?: Record<string, unknown>[];
  file?: Record<string, unknown>[];
}

function policies(documents: PolicyDocument[]): PolicySet {
  const text = documents
    .map(({ name, ...spec }) =>
      stringify({ apiVersion: 'sigil.dev/v1alpha1', kind: 'IdentityPolicy', metadata: { name }, spec }),
    )
    .join('---\n');
  return parsePolicySet(text, 'policies.yaml');
}

describe('compileLsmPolicySet', () => {
  it('resolves subjects like compilePolicySet', () => {
    const cases: { subject: Record<string, unknown>; ids: number[] }[] = [
      { subject: { spiffeId: WEB }, ids: [1] },
      { subject: { spiffeIdPrefix: WEB }, ids: [1, 2] },
      { subject: { trustDomain: 'a.org' }, ids: [1, 2, 4] },
      { subject: { unidentified: true }, ids: [0] },
      { subject: { spiffeId: 'spiffe://a.org/unknown' }, ids: [] },
    ];
    for (const { subject, ids } of cases) {
      const set = policies([
        { name: 'p', subject, process: [{ name: 'tool', action: 'Block', paths: [files.tool] }] },
      ]);
      const compiled = compileLsmPolicySet(set, IDENTITIES);
      const label = JSON.stringify(subject);
      expect(compiled.ruleSet.subjects.map((entry) => entry.id), label).toEqual(ids);
      expect(compiled.ruleSet.inodeRules.map((rule) => rule.subject), label).toEqual(ids);
    }
  });

  it('compiles exact paths to inode rules', () => {
    const set = policies([
      {
        name: 'web',
        subject: { spiffeId: WEB },
        process: [{ name: 'no-tool', action: 'Block', paths: [files.tool] }],
        file: [
          { name: 'no-secret', action: 'Block', paths: [files.secret] },
          { name: 'config', action: 'Allow', readOnly: true, paths: [files.config] },
        ],
      },
    ]);
    const compiled = compileLsmPolicySet(set, IDENTITIES);
    const cases = [
      { index: 0, kind: 'exec', file: files.tool, action: KernelAction.Block, readOnly: undefined },
      { index: 1, kind: 'file', file: files.secret, action: KernelAction.Block, readOnly: undefined },
      { index: 2, kind: 'file', file: files.config, action: KernelAction.Allow, readOnly: true },
    ];
    expect(compiled.ruleSet.inodeRules).toHaveLength(cases.length);
    for (const expected of cases) {
      const rule = compiled.ruleSet.inodeRules[expected.index];
      const { dev, ino } = resolveInode(expected.file);
      expect(rule.ruleIndex).toBe(expected.index);
      expect(rule.kind).toBe(expected.kind);
      expect(rule.action).toBe(expected.action);
      expect(rule.readOnly).toBe(expected.readOnly);
      expect(rule.dev).toBe(dev);
      expect(rule.ino).toBe(ino);
    }
    expect(compiled.ruleSet.directoryRules).toEqual([]);
    expect(compiled.warnings).toEqual([]);
  });

  it('builds the rule table in policy order', () => {
    const set = policies([
      {
        name: 'first',
        subject: { spiffeId: WEB },
        file: [
          {
            name: 'secret',
            action: 'Block',
            paths: [files.secret],
            severity: 'high',
            tags: ['credentials'],
            message: 'no secrets',
          },
        ],
        process: [{ name: 'tool', action: 'Audit', paths: [files.tool] }],
      },
      { name: 'second', subject: { spiffeId: API }, file: [{ name: 'data', action: 'Allow', directories: [files.directory] }] },
    ]);
    const { rules } = compileLsmPolicySet(set, IDENTITIES);
    const cases = [
      { policy: 'first', rule: 'tool', kind: 'process', action: 'Audit' },
      { policy: 'first', rule: 'secret', kind: 'file', action: 'Block' },
      { policy: 'second', rule: 'data', kind: 'file', action: 'Allow' },
    ];
    expect(rules).toHaveLength(cases.length);
    cases.forEach((expected, index) => {
      expect(rules[index]).toMatchObject(expected);
      expect(rules[index].file).toBe('policies.yaml');
    });
    expect(rules[1].severity).toBe('high');
    expect(rules[1].tags).toEqual(['credentials']);
    expect(rules[1].message).toBe('no secrets');
    expect(rules[0].severity).toBeUndefined();
  });

  it('compiles directories to directory rules', () => {
    const set = policies([
      {
        name: 'web',
        subject: { spiffeId: WEB },
        file: [
          { name: 'flat', action: 'Block', directories: [files.directory] },
          { name: 'deep', action: 'Audit', directories: [root], recursive: true },
        ],
      },
    ]);
    const { ruleSet } = compileLsmPolicySet(set, IDENTITIES);
    expect(ruleSet.directoryRules).toEqual([
      { subject: 1, kind: 'file', action: KernelAction.Block, ruleIndex: 0, path: files.directory, recursive: false },
      { subject: 1, kind: 'file', action: KernelAction.Audit, ruleIndex: 1, path: root, recursive: true },
    ]);
  });

  it('skips missing and glob paths with warnings', () => {
    const set = policies([
      {
        name: 'web',
        subject: { spiffeId: WEB },
        process: [
          { name: 'missing', action: 'Block', paths: [files.missing, files.tool] },
          { name: 'globbed', action: 'Block', glob: true, paths: [`${root}/*/tool`, files.tool] },
        ],
      },
    ]);
    const compiled = compileLsmPolicySet(set, IDENTITIES);
    expect(compiled.ruleSet.inodeRules.map((rule) => rule.ruleIndex)).toEqual([0, 1]);
    expect(compiled.warnings).toHaveLength(2);
    expect(compiled.warnings[0].message).toContain(`path ${files.missing} does not exist`);
    expect(compiled.warnings[0].message).toContain('process rule "missing" of policy "web"');
    expect(compiled.warnings[1].message).toContain(`glob path ${root}/*/tool cannot be enforced`);
    for (const issue of compiled.warnings) expect(issue.severity).toBe('warning');
  });

  // An allowlist whose only Allow path is missing must still apply its posture, as decideExec
  // and decideOpen do. Before this case, the kernel allowed every exec and open of the subject.
  it('keeps the posture of skipped Allow rules', () => {
    const set = policies([
      {
        name: 'web',
        subject: { spiffeId: WEB },
        processPosture: 'Block',
        filePosture: 'Block',
        process: [{ name: 'app', action: 'Allow', paths: [files.missing] }],
        file: [{ name: 'config', action: 'Allow', glob: true, paths: [`${root}/*.conf`] }],
      },
      {
        name: 'api',
        subject: { spiffeId: API },
        process: [{ name: 'no-tool', action: 'Block', paths: [files.tool] }],
      },
    ]);
    const compiled = compileLsmPolicySet(set, IDENTITIES);
    expect(compiled.ruleSet.inodeRules.map((rule) => rule.subject)).toEqual([4]);
    expect(compiled.ruleSet.subjects).toEqual([
      {
        id: 1,
        execPosture: KernelAction.Block,
        filePosture: KernelAction.Block,
        hasExecAllow: true,
        hasFileAllow: true,
      },
      {
        id: 4,
        execPosture: KernelAction.Block,
        filePosture: KernelAction.Block,
        hasExecAllow: false,
        hasFileAllow: false,
      },
    ]);
  });

  it('turns Block into Audit in Audit mode', () => {
    const cases = [
      { mode: 'Enforce', action: KernelAction.Block, posture: KernelAction.Block, wouldBlock: undefined },
      { mode: 'Audit', action: KernelAction.Audit, posture: KernelAction.Audit, wouldBlock: true },
    ];
    for (const expected of cases) {
      const set = policies([
        {
          name: 'web',
          subject: { spiffeId: WEB },
          mode: expected.mode,
          processPosture: 'Block',
          filePosture: 'Block',
          process: [{ name: 'tool', action: 'Block', paths: [files.tool] }],
        },
      ]);
      const compiled = compileLsmPolicySet(set, IDENTITIES);
      expect(compiled.ruleSet.inodeRules[0].action, expected.mode).toBe(expected.action);
      expect(compiled.ruleSet.subjects[0].execPosture, expected.mode).toBe(expected.posture);
      expect(compiled.ruleSet.subjects[0].filePosture, expected.mode).toBe(expected.posture);
      expect(compiled.rules[0].wouldBlock, expected.mode).toBe(expected.wouldBlock);
    }
  });

  it('combines postures over the policies of a subject', () => {
    const set = policies([
      { name: 'strict', subject: { spiffeId: WEB }, processPosture: 'Block', filePosture: 'Audit' },
      { name: 'loose', subject: { spiffeIdPrefix: WEB }, processPosture: 'Audit', filePosture: 'Audit' },
    ]);
    const compiled = compileLsmPolicySet(set, IDENTITIES);
    expect(compiled.ruleSet.subjects).toEqual([
      {
        id: 1,
        execPosture: KernelAction.Block,
        filePosture: KernelAction.Audit,
        hasExecAllow: false,
        hasFileAllow: false,
      },
      {
        id: 2,
        execPosture: KernelAction.Audit,
        filePosture: KernelAction.Audit,
        hasExecAllow: false,
        hasFileAllow: false,
      },
    ]);
    expect(compiled.policiesBySubject.get(1)).toEqual(['strict', 'loose']);
    expect(compiled.policiesBySubject.get(2)).toEqual(['loose']);
  });
});
