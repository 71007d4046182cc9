// Boots the test VM (Linux 6.1 booted with AppArmor) with the host's
// apparmor_parser and /etc/apparmor.d in the image, and runs
// test/vm/guest/apparmor/agent-apparmor.js there: the real agent generates
// and loads AppArmor profiles, the kernel confines two executables with
// them (EACCES in enforce mode, allowed and logged in complain mode), and
// the agent replaces and removes only its own profiles as policies change,
// and a profile recorded with `sigil apparmor record` confines the recorded
// workload. Fails, and never skips, when a piece is missing.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT, ScriptResult, describeRun, prepareVm, runInVm } from './vm-harness';

const SETUP_TIMEOUT_MS = 900_000;
const GUEST_TIMEOUT_SECONDS = 600;
const PARSER = '/usr/sbin/apparmor_parser';
const BUILD_OUTPUTS = ['dist/cli/main.js', 'dist/enforce/apparmor-enforcer.js'];

interface CheckResult {
  pass: boolean;
  detail: unknown;
}

interface GuestResults {
  checks: Record<string, CheckResult>;
  timings: Record<string, number>;
}

const EXPECTED_CHECKS = [
  'the kernel lists apparmor among the active LSMs',
  'the test loads a foreign and a stale profile',
  'the agent starts',
  'the agent loads the web profile in enforce mode',
  'the agent loads the audit profile in complain mode',
  'the agent removes the stale Sigil profile',
  'the agent keeps the foreign profile',
  'the agent logs what AppArmor enforces per rule',
  'the agent logs what AppArmor cannot express',
  'the enforce profile lets web open the allowed file',
  'the deny rule fails the secret with EACCES',
  'the allow-list fails another file with EACCES',
  'the directory rule lets web open a file in it',
  'a Block rule inside an allowed directory fails with EACCES',
  'the kernel logs the denial of the secret',
  'exec of the audit executable moves to its profile',
  'the exec deny rule fails with EACCES',
  'the exec allow-list fails another program with EACCES',
  'the complain profile lets audit open another file',
  'the kernel logs the complain-mode access',
  'a deny rule only logs in complain mode',
  'the agent replaces the changed profile',
  'the replaced profile allows the other file',
  'the agent removes the profile of a deleted policy',
  'the foreign profile stays after removals',
  'the web profile stays loaded',
  'sigil apparmor record subscribes to the agent',
  'sigil apparmor record writes a profile',
  'the recorded profile allows the recorded program',
  'the recorded profile loads',
  'the recorded workload runs again under its profile',
  'the recorded profile denies a program it never ran',
  'the same program runs without the profile',
];

describe('agent with AppArmor in the test VM', () => {
  let resultsDir: string;
  let run: ScriptResult;
  let results: GuestResults;

  beforeAll(async () => {
    const missing = BUILD_OUTPUTS.filter((file) => !existsSync(path.join(PROJECT_ROOT, file)));
    if (missing.length > 0) throw new Error(`${missing.join(', ')} not found: run \`make\``);
    if (!existsSync(PARSER)) throw new Error(`${PARSER} not found: install the apparmor package`);

    const image = await prepareVm([
      '--binary',
      PARSER,
      '--output',
      path.join(PROJECT_ROOT, '.cache', 'vm', 'initramfs-apparmor.cpio'),
    ]);
    resultsDir = mkdtempSync(path.join(tmpdir(), 'sigil-vm-apparmor-'));
    run = await runInVm(image, ['node', 'test/vm/guest/apparmor/agent-apparmor.js'], {
      results: resultsDir,
      timeoutSeconds: GUEST_TIMEOUT_SECONDS,
      add: ['/etc/apparmor.d:/etc/apparmor.d'],
    });
    console.log(`guest AppArmor run (boot to power-off) took ${run.seconds.toFixed(1)} s`);
    try {
      const text = readFileSync(path.join(resultsDir, 'checks.json'), 'utf8');
      results = JSON.parse(text) as GuestResults;
    } catch (error) {
      throw new Error(`no checks.json from the guest (${String(error)})\n${describeRun(run)}`);
    }
    console.log(`guest timings: ${JSON.stringify(results.timings)}`);
  }, SETUP_TIMEOUT_MS);

  afterAll(() => {
    if (resultsDir) rmSync(resultsDir, { recursive: true, force: true });
  });

  /** Returns the agent log the guest copied back, for failure messages. */
  function agentLog(): string {
    const file = path.join(resultsDir, 'agent.log');
    return existsSync(file) ? readFileSync(file, 'utf8').slice(-4000) : '(no agent log)';
  }

  it('runs the guest script to the end', () => {
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect(results.checks['the guest script runs to the end'], agentLog()).toBeUndefined();
  });

  it.each(EXPECTED_CHECKS)('guest check: %s', (name) => {
    const result = results.checks[name];
    expect(result, `check "${name}" did not run\n${agentLog()}`).toBeDefined();
    expect(result.pass, `${name}: ${JSON.stringify(result.detail)}\n${agentLog()}`).toBe(true);
  });
});
