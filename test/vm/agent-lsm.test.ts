// Boots the test VM (Linux 6.1 with BPF LSM) and runs
// test/vm/guest/agent/agent-lsm.js there: the real agent (`node bin/sigil run`)
// enforces process and file rules for a uid with a SPIFFE ID through the BPF
// LSM object, reports the decisions in its events log, the denials stay
// after the agent is killed with SIGKILL, and a restarted agent replaces the
// pinned LSM links with its own. Fails, and never skips, when a piece
// is missing: qemu, busybox-static, the kernel package, dist/ or an object that
// `make` builds.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT, ScriptResult, describeRun, prepareVm, runInVm } from './vm-harness';

const SETUP_TIMEOUT_MS = 900_000;
const GUEST_TIMEOUT_SECONDS = 600;
const BUILD_OUTPUTS = [
  'dist/cli/main.js',
  'dist/enforce/lsm-enforcer.js',
  'bpf/.output/sigil.bpf.o',
  'bpf/.output/sigil-lsm.bpf.o',
];

interface CheckResult {
  pass: boolean;
  detail: unknown;
}

interface GuestResults {
  checks: Record<string, CheckResult>;
  timings: Record<string, number>;
}

const PHASES = ['with the agent running', 'after the agent was killed', 'after an agent restart'];
const CHECKS_PER_PHASE = [
  'exec of the blocked binary fails with EPERM',
  'exec of a hard link fails with EPERM',
  'exec of a symlink fails with EPERM',
  'exec of a copy in another file runs',
  'open of the blocked file fails with EPERM',
  'read of the readOnly file succeeds',
  'write open of the readOnly file fails with EPERM',
  'connect to the blocked port fails with EPERM',
  'connect to another port succeeds',
  'another uid runs the blocked binary',
];
const EXPECTED_CHECKS = [
  'the kernel lists bpf among the active LSMs',
  'the agent starts',
  'the agent attaches the BPF LSM programs',
  'the agent does not warn about process and file rules',
  'subject.js starts as the subject uid',
  'the agent attests the subject',
  ...CHECKS_PER_PHASE.map((name) => `${name} ${PHASES[0]}`),
  'the events log has a denied exec event by bpf-lsm',
  'the exec event names the subject, rule and program',
  'the events log has a denied file event by bpf-lsm',
  'the file event names the subject, rule and path',
  'the readOnly write denial names its rule',
  'the events log has a denied connect event by the bpf-lsm socket_connect hook',
  'no connect is decided by the cgroup programs',
  'the events log has an accept event naming the subject as the client',
  'the agent dies from SIGKILL',
  ...CHECKS_PER_PHASE.map((name) => `${name} ${PHASES[1]}`),
  'a restarted agent starts',
  'a restarted agent replaces the LSM link pins',
  ...CHECKS_PER_PHASE.map((name) => `${name} ${PHASES[2]}`),
];

describe('agent with BPF LSM in the test VM', () => {
  let resultsDir: string;
  let run: ScriptResult;
  let results: GuestResults;

  beforeAll(async () => {
    const missing = BUILD_OUTPUTS.filter((file) => !existsSync(path.join(PROJECT_ROOT, file)));
    if (missing.length > 0) {
      throw new Error(`${missing.join(', ')} not found: run \`npx tsc -p tsconfig.json\` and \`make bpf\``);
    }

    const image = await prepareVm();
    resultsDir = mkdtempSync(path.join(tmpdir(), 'sigil-vm-agent-lsm-'));
    run = await runInVm(image, ['node', 'test/vm/guest/agent/agent-lsm.js'], {
      results: resultsDir,
      timeoutSeconds: GUEST_TIMEOUT_SECONDS,
    });
    console.log(`guest agent LSM run (boot to power-off) took ${run.seconds.toFixed(1)} s`);
    try {
      results = JSON.parse(readFileSync(path.join(resultsDir, 'checks.json'), 'utf8')) as GuestResults;
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
