// Checks that scripts/vm/run.sh passes the guest command's arguments,
// environment, output, exit status and result files between host and guest.
// It must fail with exit code 124 or 125 and a clear message when the guest
// times out, panics or stops without an exit status.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ScriptResult, VmImage, describeRun, prepareVm, runInVm } from './vm-harness';

const SETUP_TIMEOUT_MS = 900_000;
const BOOT_TEST_TIMEOUT_MS = 360_000;

describe('scripts/vm/run.sh', () => {
  let image: VmImage;
  let resultsDir: string;
  let run: ScriptResult;

  beforeAll(async () => {
    image = await prepareVm();
    resultsDir = mkdtempSync(path.join(tmpdir(), 'sigil-vm-results-'));
    const script = [
      'printf "%s|" "$@"',
      'echo',
      'pwd',
      'echo to-stderr >&2',
      'printf "%s" "$GREETING" >"$SIGIL_VM_RESULTS/greeting.txt"',
      'exit 42',
    ].join('\n');
    run = await runInVm(image, ['sh', '-c', script, 'sh', 'two words', "it's", '$HOME', ''], {
      env: ['GREETING=hello from the guest'],
      results: resultsDir,
    });
  }, SETUP_TIMEOUT_MS);

  afterAll(() => {
    if (resultsDir) rmSync(resultsDir, { recursive: true, force: true });
  });

  it('exits with the guest command status', () => {
    expect(run.exitCode, describeRun(run)).toBe(42);
  });

  it('passes arguments unchanged', () => {
    expect(run.stdout.split('\n')[0], describeRun(run)).toBe("two words|it's|$HOME||");
  });

  it('starts in the guest project root', () => {
    expect(run.stdout.split('\n')[1], describeRun(run)).toBe('/sigil');
  });

  it('copies guest stderr to host stderr', () => {
    expect(run.stderr, describeRun(run)).toContain('to-stderr\n');
    expect(run.stdout).not.toContain('to-stderr');
  });

  it('passes --env and returns --results files', () => {
    expect(readFileSync(path.join(resultsDir, 'greeting.txt'), 'utf8')).toBe(
      'hello from the guest',
    );
  });

  it(
    'fails with 124 on timeout',
    async () => {
      const result = await runInVm(image, ['sleep', '600'], { timeoutSeconds: 10 });
      expect(result.exitCode, describeRun(result)).toBe(124);
      expect(result.stderr).toContain('timed out after 10 s');
      expect(result.seconds).toBeLessThan(45);
    },
    BOOT_TEST_TIMEOUT_MS,
  );

  it(
    'fails with 125 on a kernel panic',
    async () => {
      const result = await runInVm(image, ['sh', '-c', 'echo c >/proc/sysrq-trigger']);
      expect(result.exitCode, describeRun(result)).toBe(125);
      expect(result.stderr).toContain('the guest kernel panicked');
    },
    BOOT_TEST_TIMEOUT_MS,
  );

  it(
    'fails with 125 without an exit status',
    async () => {
      const result = await runInVm(image, ['poweroff', '-f']);
      expect(result.exitCode, describeRun(result)).toBe(125);
      expect(result.stderr).toContain(
        "the guest stopped without sending the command's exit status",
      );
    },
    BOOT_TEST_TIMEOUT_MS,
  );
});
