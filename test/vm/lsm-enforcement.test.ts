// Boots the test VM (Linux 6.1 with BPF LSM) and runs the BPF LSM enforcement
// specs of test/vm/guest/lsm/ there: exec, file-open and connect decisions of
// bpf/.output/sigil-lsm.bpf.o on the main object's pinned maps, and their
// ring-buffer records. Fails, and never skips, when any piece is missing:
// qemu, busybox-static, the kernel package, or an object that `make` builds.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT, ScriptResult, describeRun, prepareVm, runInVm } from './vm-harness';

const SETUP_TIMEOUT_MS = 900_000;
const GUEST_TIMEOUT_SECONDS = 600;
const OBJECTS = ['bpf/.output/sigil.bpf.o', 'bpf/.output/sigil-lsm.bpf.o'];

interface VitestReport {
  numTotalTests: number;
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  testResults: { assertionResults: { fullName: string; status: string }[] }[];
}

describe('BPF LSM enforcement in the test VM', () => {
  let resultsDir: string;
  let run: ScriptResult;
  let report: VitestReport;

  beforeAll(async () => {
    const missing = OBJECTS.filter((object) => !existsSync(path.join(PROJECT_ROOT, object)));
    if (missing.length > 0) throw new Error(`${missing.join(', ')} not found: run make`);

    const image = await prepareVm();
    resultsDir = mkdtempSync(path.join(tmpdir(), 'sigil-vm-lsm-'));
    const script = [
      'node node_modules/vitest/vitest.mjs run --config test/vm/guest/vitest.config.ts',
      '--reporter=default --reporter=json --outputFile.json="$SIGIL_VM_RESULTS/vitest.json"',
      'test/vm/guest/lsm',
    ].join(' ');
    run = await runInVm(image, ['sh', '-c', script], {
      results: resultsDir,
      timeoutSeconds: GUEST_TIMEOUT_SECONDS,
    });
    console.log(`guest LSM enforcement run (boot to power-off) took ${run.seconds.toFixed(1)} s`);
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

  it('runs the exec, file, connect and record checks', () => {
    const names = report.testResults.flatMap((file) =>
      file.assertionResults.map((test) => test.fullName),
    );
    for (const expected of [
      'BPF LSM enforcement exec denies a blocked binary to its subject',
      'BPF LSM enforcement exec runs the blocked binary for another identity',
      'BPF LSM enforcement exec denies a hard link to the blocked binary',
      'BPF LSM enforcement exec denies a symlink to the blocked binary',
      'BPF LSM enforcement file open denies a blocked file',
      'BPF LSM enforcement file open allows reads and denies writes under a readOnly rule',
      'BPF LSM enforcement file open limits a non-recursive directory rule to direct entries',
      'BPF LSM enforcement file open extends a recursive directory rule to the subtree',
      'BPF LSM enforcement connect denies a blocked destination without cgroup programs',
      'BPF LSM enforcement records carry the process fields',
    ]) {
      expect(names).toContain(expected);
    }
  });
});
