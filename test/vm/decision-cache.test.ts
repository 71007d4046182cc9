// Boots the test VM (Linux 6.1 with BPF LSM) and runs
// test/vm/guest/agent/decision-cache.js there: the real agent enforces file
// rules through the BPF LSM object, whose lsm/file_open caches allowed opens.
// A cached verdict must not survive a rename of a parent directory, a bind
// mount, a moved mount, a chroot, a rule reload or an identity change, and
// must not hide an exact-file rule or a Block record. Fails,
// and never skips, when a piece is missing.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT, ScriptResult, describeRun, prepareVm, runInVm } from './vm-harness';

const SETUP_TIMEOUT_MS = 900_000;
const GUEST_TIMEOUT_SECONDS = 600;
const BUILD_OUTPUTS = [
  'dist/cli/main.js',
  'bpf/.output/sigil.bpf.o',
  'bpf/.output/sigil-lsm.bpf.o',
];

interface CheckResult {
  pass: boolean;
  detail: unknown;
}

const CHANGES = [
  'a rename of the parent directory into the blocked directory',
  'a bind mount of the parent directory into the blocked directory',
  'a move of the mount into the blocked directory',
  'a rule reload that blocks the directory',
  'an identity change to identity B',
];
const EXPECTED_CHECKS = [
  'the agent starts',
  'the agent attaches the BPF LSM programs',
  'the agent attests the subject as identity A',
  'a control open in the blocked directory fails with EPERM',
  'repeated opens in the blocked directory fail with EPERM',
  'each repeated blocked open writes a record',
  'opens succeed next to a file with an exact-file rule',
  'open of the exact-file Block rule fails with EPERM',
  'opens succeed before a hard link is made',
  'open of a new hard link to that file fails with EPERM',
  'a tmpfs mounts in the allowed directory',
  ...CHANGES.flatMap((change) => [
    `opens succeed before ${change}`,
    `${change} succeeds`,
    `open fails with EPERM right after ${change}`,
  ]),
  'opens succeed before a chroot',
  'open fails with EPERM right after a chroot',
];

describe('LSM decision cache in the test VM', () => {
  let resultsDir: string;
  let run: ScriptResult;
  let checks: Record<string, CheckResult>;

  beforeAll(async () => {
    const missing = BUILD_OUTPUTS.filter((file) => !existsSync(path.join(PROJECT_ROOT, file)));
    if (missing.length > 0) {
      throw new Error(`${missing.join(', ')} not found: run \`make\``);
    }
    const image = await prepareVm();
    resultsDir = mkdtempSync(path.join(tmpdir(), 'sigil-vm-decision-cache-'));
    run = await runInVm(image, ['node', 'test/vm/guest/agent/decision-cache.js'], {
      results: resultsDir,
      timeoutSeconds: GUEST_TIMEOUT_SECONDS,
    });
    console.log(`guest decision cache run (boot to power-off) took ${run.seconds.toFixed(1)} s`);
    try {
      checks = (
        JSON.parse(readFileSync(path.join(resultsDir, 'checks.json'), 'utf8')) as {
          checks: Record<string, CheckResult>;
        }
      ).checks;
    } catch (error) {
      throw new Error(`no checks.json from the guest (${String(error)})\n${describeRun(run)}`);
    }
  }, SETUP_TIMEOUT_MS);

  afterAll(() => {
    if (resultsDir) rmSync(resultsDir, { recursive: true, force: true });
  });

  /** Returns the end of the agent log that the guest copied back, for failure messages. */
  function agentLog(): string {
    const file = path.join(resultsDir, 'cache-agent.log');
    return existsSync(file) ? readFileSync(file, 'utf8').slice(-4000) : '(no agent log)';
  }

  it('runs the guest script to the end', () => {
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect(checks['the guest script runs to the end'], agentLog()).toBeUndefined();
  });

  it.each(EXPECTED_CHECKS)('guest check: %s', (name) => {
    const result = checks[name];
    expect(result, `check "${name}" did not run\n${agentLog()}`).toBeDefined();
    expect(result.pass, `${name}: ${JSON.stringify(result.detail)}\n${agentLog()}`).toBe(true);
  });
});
