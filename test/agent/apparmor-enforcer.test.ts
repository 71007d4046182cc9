/**
 * The AppArmor enforcer's bookkeeping, with a stand-in for apparmor_parser that records its
 * calls and keeps a securityfs `profiles` file, because the host kernel has no AppArmor. The
 * VM test loads the same profiles with the real parser into a kernel with AppArmor.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AppArmorEnforcer,
  appArmorEnabled,
  loadedProfileNames,
} from '../../src/enforce/apparmor-enforcer';
import { parseRegistration } from '../../src/identity/registration';
import { parsePolicySet } from '../../src/policy/loader';

const WEB = 'spiffe://example.org/web';
const API = 'spiffe://example.org/api';

// Records each call as "<flag> <profile names>" and updates the profiles file like the kernel.
const FAKE_PARSER = `#!/bin/bash
set -e
dir="$(dirname "$0")"
flag="$1"; file="\${@: -1}"
[ -e "$dir/fail" ] && { echo "simulated parser failure" >&2; exit 1; }
names=$(grep -o '^profile [^ ]*' "$file" | cut -d' ' -f2 | tr '\\n' ' ')
echo "$flag $names" >> "$dir/calls"
for name in $names; do
  grep -vx "$name (enforce)" "$dir/securityfs/profiles" > "$dir/p.tmp" || true
  mv "$dir/p.tmp" "$dir/securityfs/profiles"
  [ "$flag" = -r ] && echo "$name (enforce)" >> "$dir/securityfs/profiles"
done
exit 0
`;

let dir: string;
let logLines: string[];

function enforcer(): AppArmorEnforcer {
  logLines = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => logLines.push(line) });
  return new AppArmorEnforcer({
    logger,
    parser: path.join(dir, 'apparmor_parser'),
    securityfsDir: path.join(dir, 'securityfs'),
  });
}

function policyText(name: string, spiffeId: string, blocked: string): string {
  return [
    'apiVersion: sigil.dev/v1alpha1',
    'kind: IdentityPolicy',
    `metadata: {name: ${name}}`,
    'spec:',
    `  subject: {spiffeId: "${spiffeId}"}`,
    `  file: [{action: Block, paths: ["${blocked}"]}]`,
    '',
  ].join('\n');
}

const registration = parseRegistration(
  `apiVersion: sigil.dev/v1alpha1\nkind: Registration\nentries:\n` +
    `  - {spiffeId: "${WEB}", selectors: ["unix:path:/usr/bin/web"]}\n`,
  'registration.yaml',
);

function calls(): string[] {
  try {
    return readFileSync(path.join(dir, 'calls'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => line.trimEnd());
  } catch {
    return [];
  }
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'sigil-apparmor-enforcer-'));
  writeFileSync(path.join(dir, 'apparmor_parser'), FAKE_PARSER);
  chmodSync(path.join(dir, 'apparmor_parser'), 0o755);
  mkdirSync(path.join(dir, 'securityfs'));
  writeFileSync(path.join(dir, 'securityfs', 'profiles'), 'docker-default (enforce)\n');
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('AppArmorEnforcer', () => {
  it('loads one profile per subject', async () => {
    const set = parsePolicySet(
      policyText('web', WEB, '/a') + '---\n' + policyText('api', API, '/b'),
      'p.yaml',
    );
    await enforcer().apply(set, registration);
    expect(calls()).toEqual(['-r sigil.example.org.api', '-r sigil.example.org.web']);
    expect(loadedProfileNames(path.join(dir, 'securityfs')).sort()).toEqual([
      'docker-default',
      'sigil.example.org.api',
      'sigil.example.org.web',
    ]);
  });

  it('replaces only changed profiles', async () => {
    const aa = enforcer();
    await aa.apply(parsePolicySet(policyText('web', WEB, '/a'), 'p.yaml'), registration);
    await aa.apply(parsePolicySet(policyText('web', WEB, '/a'), 'p.yaml'), registration);
    expect(calls()).toEqual(['-r sigil.example.org.web']);
    await aa.apply(parsePolicySet(policyText('web', WEB, '/c'), 'p.yaml'), registration);
    expect(calls()).toEqual(['-r sigil.example.org.web', '-r sigil.example.org.web']);
    expect(logLines.some((line) => line.includes('AppArmor profile replaced'))).toBe(true);
  });

  it('removes only stale Sigil profiles', async () => {
    writeFileSync(
      path.join(dir, 'securityfs', 'profiles'),
      'docker-default (enforce)\nsigil.example.org.old (enforce)\n' +
        'sigil.example.org.old//null-/bin/true (complain)\nsigilx (enforce)\n',
    );
    await enforcer().apply(parsePolicySet(policyText('web', WEB, '/a'), 'p.yaml'), registration);
    expect(calls()).toEqual(['-r sigil.example.org.web', '-R sigil.example.org.old']);
    const names = loadedProfileNames(path.join(dir, 'securityfs'));
    expect(names).toContain('docker-default');
    expect(names).toContain('sigilx');
    expect(names).not.toContain('sigil.example.org.old');
  });

  it('keeps profiles when policies are invalid', async () => {
    const aa = enforcer();
    await aa.apply(parsePolicySet(policyText('web', WEB, '/a'), 'p.yaml'), registration);
    await aa.apply(parsePolicySet(policyText('web', WEB, '/a,b'), 'p.yaml'), registration);
    expect(calls()).toEqual(['-r sigil.example.org.web']);
    expect(logLines.some((line) => line.includes('loaded profiles stay in force'))).toBe(true);
  });

  it('logs a parser failure and keeps going', async () => {
    writeFileSync(path.join(dir, 'fail'), '');
    await enforcer().apply(parsePolicySet(policyText('web', WEB, '/a'), 'p.yaml'), registration);
    expect(logLines.some((line) => line.includes('simulated parser failure'))).toBe(true);
  });

  it('logs the AppArmor status of each rule', async () => {
    await enforcer().apply(parsePolicySet(policyText('web', WEB, '/a'), 'p.yaml'), registration);
    const report = logLines
      .map((line) => JSON.parse(line))
      .find((entry) => entry.rule === 'file-0');
    expect(report.status).toBe('enforces');
    expect(report.msg).toMatch(/^AppArmor enforces: /);
  });
});

describe('appArmorEnabled', () => {
  it('reads the module parameter', () => {
    const parameter = path.join(dir, 'enabled');
    writeFileSync(parameter, 'Y\n');
    expect(appArmorEnabled(path.join(dir, 'missing'), parameter)).toBe(true);
    writeFileSync(parameter, 'N\n');
    expect(appArmorEnabled(path.join(dir, 'missing'), parameter)).toBe(false);
  });

  it('finds the securityfs directory', () => {
    expect(appArmorEnabled(path.join(dir, 'securityfs'), path.join(dir, 'missing'))).toBe(true);
  });

  it('is false on this host kernel', () => {
    // The host kernel has no AppArmor (its LSMs are lockdown, capability, landlock, bpf).
    expect(appArmorEnabled()).toBe(false);
  });
});
