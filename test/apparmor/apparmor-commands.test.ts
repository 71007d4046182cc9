import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runAppArmorGenerate } from '../../src/cli/apparmor-commands';
import { buildProgram } from '../../src/cli/main';
import { CommandOutput } from '../../src/cli/policy-commands';
import { policyDocument, WEB } from './helpers';

const FIXTURES = path.join(__dirname, 'fixtures');
const POLICIES = path.join(FIXTURES, 'policies');
const REGISTRATION = path.join(FIXTURES, 'registration.yaml');

let dir: string;
let output: CommandOutput & { stdout: string; stderr: string };

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'sigil-apparmor-cli-'));
  output = {
    stdout: '',
    stderr: '',
    out(text) {
      this.stdout += text;
    },
    err(text) {
      this.stderr += text;
    },
  };
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('sigil apparmor generate', () => {
  it('commands are registered on the program', () => {
    const apparmor = buildProgram().commands.find((command) => command.name() === 'apparmor');
    expect(apparmor?.commands.map((command) => command.name())).toEqual(['generate', 'record']);
  });

  it('writes one file per profile', async () => {
    const out = path.join(dir, 'profiles');
    const code = await runAppArmorGenerate(
      { policy: [POLICIES], registration: REGISTRATION, out, check: true },
      output,
    );
    expect(code).toBe(0);
    expect(readdirSync(out).sort()).toEqual([
      'sigil.example.org.ns.api',
      'sigil.example.org.ns.web',
      'sigil.example.org.ns.worker',
    ]);
    const golden = readFileSync(path.join(FIXTURES, 'golden', 'sigil.example.org.ns.web'), 'utf8');
    expect(readFileSync(path.join(out, 'sigil.example.org.ns.web'), 'utf8')).toBe(golden);
    expect(output.stderr).toContain('attached by name (localhost/sigil.example.org.ns.api)');
    expect(output.stderr).toContain('cannot express ports 8443');
  });

  it('removes only stale Sigil files', async () => {
    writeFileSync(path.join(dir, 'sigil.example.org.old'), 'old');
    writeFileSync(path.join(dir, 'docker-default'), 'not ours');
    const code = await runAppArmorGenerate(
      { policy: [POLICIES], registration: REGISTRATION, out: dir },
      output,
    );
    expect(code).toBe(0);
    expect(existsSync(path.join(dir, 'sigil.example.org.old'))).toBe(false);
    expect(existsSync(path.join(dir, 'docker-default'))).toBe(true);
  });

  it('prints profiles without --out', async () => {
    const code = await runAppArmorGenerate({ policy: [POLICIES] }, output);
    expect(code).toBe(0);
    expect(output.stdout).toContain('profile sigil.example.org.ns.web {');
    expect(output.stdout).toContain('profile sigil.example.org.ns.worker {');
  });

  it('prints the rule report', async () => {
    await runAppArmorGenerate(
      { policy: [POLICIES], registration: REGISTRATION, report: true },
      output,
    );
    expect(output.stderr).toMatch(
      /^enforces +sigil\.example\.org\.ns\.web web\/secrets \(file\) .*web\.yaml:\d+: /m,
    );
    expect(output.stderr).toMatch(/^partial +sigil\.example\.org\.ns\.web web\/to-api \(egress\)/m);
  });

  it('rejects an unsafe path with its line', async () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(
      file,
      policyDocument('web', {
        subject: { spiffeId: WEB },
        file: [{ action: 'Allow', paths: ['/tmp/a,b'] }],
      }),
    );
    const code = await runAppArmorGenerate({ policy: [file], out: path.join(dir, 'o') }, output);
    expect(code).toBe(1);
    expect(output.stderr).toMatch(
      /bad\.yaml:\d+:\d+: error: spec\.file\[0\]\.paths: .*"\/tmp\/a,b"/,
    );
    expect(existsSync(path.join(dir, 'o'))).toBe(false);
  });

  it('reports an invalid policy file', async () => {
    const file = path.join(dir, 'broken.yaml');
    writeFileSync(file, 'apiVersion: sigil.dev/v1alpha1\nkind: IdentityPolicy\n');
    expect(await runAppArmorGenerate({ policy: [file] }, output)).toBe(1);
    expect(output.stderr).toContain('broken.yaml:');
  });
});
