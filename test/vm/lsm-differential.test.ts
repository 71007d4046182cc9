// Boots the test VM (Linux 6.1 with BPF LSM) and runs the differential test of
// test/vm/guest/lsm-differential/ there: random exec and file rules, and the
// kernel's verdicts on execve() and open() against decideExec and decideOpen.
// Fails, and never skips, when any piece is missing: qemu, busybox-static, the
// kernel package, or an object that `make` builds.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT, ScriptResult, describeRun, prepareVm, runInVm } from './vm-harness';

const SETUP_TIMEOUT_MS = 900_000;
const GUEST_TIMEOUT_SECONDS = 600;
const OBJECTS = ['bpf/.output/sigil.bpf.o', 'bpf/.output/sigil-lsm.bpf.o'];
const DESCRIBE = 'exec and file decisions of BPF LSM against decideExec and decideOpen';
const EXPECTED_TESTS = [
  `${DESCRIBE} keeps the process posture of a missing Allow path`,
  `${DESCRIBE} keeps the file posture of a missing Allow path`,
  ...[0x5191_1001, 0x5191_1002].map(
    (seed) => `${DESCRIBE} agrees on random policy sets, seed 0x${seed.toString(16)}`,
  ),
];

interface VitestReport {
  numTotalTests: number;
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  testResults: { assertionResults: { fullName: string; status: string }[] }[];
}

describe('BPF LSM differential test in the test VM', () => {
  let resultsDir: string;
  let run: ScriptResult;
  let report: VitestReport;

  beforeAll(async () => {
    const missing = OBJECTS.filter((object) => !existsSync(path.join(PROJECT_ROOT, object)));
    if (missing.length > 0) throw new Error(`${missing.join(', ')} not found: run make`);

    const image = await prepareVm();
    resultsDir = mkdtempSync(path.join(tmpdir(), 'sigil-vm-lsm-diff-'));
    const script = [
      'node node_modules/vitest/vitest.mjs run --config test/vm/guest/vitest.config.ts',
      '--reporter=default --reporter=json --outputFile.json="$SIGIL_VM_RESULTS/vitest.json"',
      'test/vm/guest/lsm-differential',
    ].join(' ');
    run = await runInVm(image, ['sh', '-c', script], {
      results: resultsDir,
      timeoutSeconds: GUEST_TIMEOUT_SECONDS,
    });
    console.log(`guest LSM differential run (boot to power-off) took ${run.seconds.toFixed(1)} s`);
    console.log(
      run.stdout
        .split('\n')
        .filter((line) => line.startsWith('seed '))
        .join('\n'),
    );
    try {
      report = JSON.parse(
        readFileSync(path.join(resultsDir, 'vitest.json'), 'utf8'),
      ) as VitestReport;
    } catch (error) {
      throw new Error(`no vitest report from the guest (${String(error)})\n${describeRun(run)}`);
    }
  }, SETUP_TIMEOUT_MS);

  afterAll(() => {
    if (resultsDir) rmSync(resultsDir, { recursive: true, force: true });
  });

  it('passes every guest test', () => {
    const failed = report.testResults
      .flatMap((file) => file.assertionResults)
      .filter((test) => test.status !== 'passed')
      .map((test) => `${test.status}: ${test.fullName}`);
    expect(failed, describeRun(run)).toEqual([]);
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect(report.numFailedTests).toBe(0);
    expect(report.numPendingTests).toBe(0);
    expect(report.numPassedTests).toBe(report.numTotalTests);
  });

  it('runs every seed and regression case', () => {
    const names = report.testResults.flatMap((file) =>
      file.assertionResults.map((test) => test.fullName),
    );
    for (const expected of EXPECTED_TESTS) expect(names).toContain(expected);
  });
});
