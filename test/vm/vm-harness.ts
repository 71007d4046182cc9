// Host-side helpers for the tests that boot the test VM through scripts/vm/.
import { spawn } from 'node:child_process';
import path from 'node:path';

export const PROJECT_ROOT = path.join(__dirname, '..', '..');
const VM_SCRIPTS = path.join(PROJECT_ROOT, 'scripts', 'vm');

/** Outcome of one script run, with its wall-clock duration. */
export interface ScriptResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** Kernel and initramfs that runInVm boots. */
export interface VmImage {
  kernel: string;
  initramfs: string;
}

export interface RunOptions {
  /** run.sh --timeout, in seconds. */
  timeoutSeconds?: number;
  /** run.sh --add arguments: HOST:GUEST. */
  add?: string[];
  /** run.sh --env arguments: NAME=VALUE. */
  env?: string[];
  /** run.sh --results directory. */
  results?: string;
}

/**
 * Runs scripts/vm/SCRIPT with bash and collects its output. A run still
 * going after timeoutMs gets SIGTERM, which makes run.sh stop qemu.
 */
export function runScript(
  script: string,
  args: string[],
  timeoutMs: number,
): Promise<ScriptResult> {
  const started = process.hrtime.bigint();
  const child = spawn('bash', [path.join(VM_SCRIPTS, script), ...args], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
  return new Promise((resolve, reject) => {
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (exitCode, signal) => {
      clearTimeout(timer);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      resolve({ exitCode, signal, stdout, stderr, seconds });
    });
  });
}

/** Runs a script that prints a path as its last stdout line, and returns that path. */
async function scriptOutputPath(
  script: string,
  args: string[],
  timeoutMs: number,
): Promise<string> {
  const result = await runScript(script, args, timeoutMs);
  if (result.exitCode !== 0) {
    throw new Error(
      `scripts/vm/${script} failed with exit code ${result.exitCode}:\n${result.stderr}`,
    );
  }
  const lines = result.stdout.trim().split('\n');
  return lines[lines.length - 1];
}

/**
 * Downloads the guest kernel when it is not cached and builds the initramfs
 * from the current tree, passing buildArgs (such as `--binary PATH`) to
 * build-initramfs.sh. Throws, with the script's stderr, when a piece is
 * missing (such as qemu, busybox-static or the output of `make`).
 */
export async function prepareVm(buildArgs: string[] = []): Promise<VmImage> {
  const kernel = await scriptOutputPath('fetch-kernel.sh', [], 300_000);
  const initramfs = await scriptOutputPath('build-initramfs.sh', buildArgs, 300_000);
  return { kernel, initramfs };
}

/** Builds the self-check's BPF LSM loader and returns the directory containing lsm-probe. */
export function buildLsmProbe(): Promise<string> {
  return scriptOutputPath('build-lsm-probe.sh', [], 120_000);
}

/** Boots image and runs command in the guest through scripts/vm/run.sh. */
export function runInVm(
  image: VmImage,
  command: string[],
  options: RunOptions = {},
): Promise<ScriptResult> {
  const timeoutSeconds = options.timeoutSeconds ?? 300;
  const args = ['--no-build', '--kernel', image.kernel, '--initramfs', image.initramfs];
  args.push('--timeout', String(timeoutSeconds));
  for (const addition of options.add ?? []) args.push('--add', addition);
  for (const assignment of options.env ?? []) args.push('--env', assignment);
  if (options.results) args.push('--results', options.results);
  // The host-side limit leaves run.sh time to stop qemu and report first.
  return runScript('run.sh', [...args, '--', ...command], (timeoutSeconds + 30) * 1000);
}

/** Parses the KEY=VALUE lines of a guest script's output; other lines are ignored. */
export function parseFacts(output: string): Map<string, string> {
  const facts = new Map<string, string>();
  for (const line of output.split('\n')) {
    const match = /^([a-z_]+)=(.*)$/.exec(line);
    if (match) facts.set(match[1], match[2]);
  }
  return facts;
}

/** Formats a run for assertion messages. */
export function describeRun(result: ScriptResult): string {
  return `exit code ${result.exitCode}, signal ${result.signal}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
}
