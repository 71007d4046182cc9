// Runs vitest inside the test VM on test/vm/guest/ and checks its report on
// the host, the way the in-VM LSM and AppArmor tests run. Also shows that a
// failing guest test fails the run. The durations go to the log because
// node is much slower under qemu's TCG than on the host.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ScriptResult, VmImage, describeRun, prepareVm, runInVm } from './vm-harness';

const SETUP_TIMEOUT_MS = 900_000;
const GUEST_RUN_TIMEOUT_MS = 600_000;

/** Builds the guest command that runs vitest on testFilter and writes a JSON report to the results directory. */
function guestVitest(testFilter: string): string[] {
  const script = [
    'node node_modules/vitest/vitest.mjs run --config test/vm/guest/vitest.config.ts',
    '--reporter=default --reporter=json --outputFile.json="$SIGIL_VM_RESULTS/vitest.json"',
    testFilter,
  ].join(' ');
  return ['sh', '-c', script];
}

interface VitestReport {
  numTotalTests: number;
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  testResults: { assertionResults: { fullName: string; status: string }[] }[];
}

describe('vitest in the test VM', () => {
  let image: VmImage;
  const tempDirs: string[] = [];

  function tempDir(): string {
    const dir = mkdtempSync(path.join(tmpdir(), 'sigil-vm-vitest-'));
    tempDirs.push(dir);
    return dir;
  }

  function readReport(resultsDir: string, run: ScriptResult): VitestReport {
    try {
      return JSON.parse(readFileSync(path.join(resultsDir, 'vitest.json'), 'utf8')) as VitestReport;
    } catch (error) {
      throw new Error(`no vitest report from the guest (${String(error)})\n${describeRun(run)}`);
    }
  }

  beforeAll(async () => {
    image = await prepareVm();
  }, SETUP_TIMEOUT_MS);

  afterAll(() => {
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  it(
    'runs the guest suite and reports to the host',
    async () => {
      const resultsDir = tempDir();
      // The LSM specs have their own host test; this one checks the harness with its own spec.
      const run = await runInVm(image, guestVitest('test/vm/guest/harness.spec.ts'), { results: resultsDir });
      console.log(`guest vitest run (boot to power-off) took ${run.seconds.toFixed(1)} s`);

      expect(run.exitCode, describeRun(run)).toBe(0);
      expect(run.stdout).toMatch(/Tests\s+\d+ passed/);
      const report = readReport(resultsDir, run);
      expect(report.numFailedTests).toBe(0);
      expect(report.numPendingTests).toBe(0);
      expect(report.numPassedTests).toBe(report.numTotalTests);
      const names = report.testResults.flatMap((file) =>
        file.assertionResults.map((test) => test.fullName),
      );
      expect(names).toContain('VM guest enables the bpf and apparmor LSMs');
      expect(names).toContain('VM guest loads the native addon with its libraries');
    },
    GUEST_RUN_TIMEOUT_MS,
  );

  it(
    'fails the run when a guest test fails',
    async () => {
      const fixtureDir = tempDir();
      const resultsDir = tempDir();
      const fixture = path.join(fixtureDir, 'failing.spec.ts');
      writeFileSync(
        fixture,
        [
          "import { expect, it } from 'vitest';",
          "it('fails on purpose', () => expect(1 + 1).toBe(3));",
          '',
        ].join('\n'),
      );
      // The fixture exists only in this guest's copy of the tree.
      const run = await runInVm(image, guestVitest('test/vm/guest/generated'), {
        add: [`${fixture}:test/vm/guest/generated/failing.spec.ts`],
        results: resultsDir,
      });

      expect(run.exitCode, describeRun(run)).toBe(1);
      const report = readReport(resultsDir, run);
      expect(report.numFailedTests).toBe(1);
      expect(report.numPassedTests).toBe(0);
    },
    GUEST_RUN_TIMEOUT_MS,
  );
});
