/** Helpers for identity tests that start real processes from copied binaries. */

import { ChildProcess, spawn, SpawnOptions } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readlinkSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Resolved path of sleep, because /proc/<pid>/exe shows the target of /bin symlinks. */
export const SLEEP_PATH = realpathSync('/bin/sleep');

/** Creates a temporary directory that other uids can enter, for binaries run under them. */
export function makeSharedTempDir(prefix: string): string {
  const directory = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(directory, 0o755);
  return directory;
}

/** Copies sleep to `directory/name` as an executable and returns the copy's path. */
export function copySleep(directory: string, name: string): string {
  const path = join(directory, name);
  copyFileSync(SLEEP_PATH, path);
  chmodSync(path, 0o755);
  return path;
}

function delay(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

/**
 * Spawns a command and waits until the process runs `expectedExe`. Right after spawn() the
 * child may still run node, and a wrapper such as setpriv execs the target later.
 */
export async function spawnRunning(
  command: string,
  args: string[],
  expectedExe: string,
  options: SpawnOptions = {},
): Promise<ChildProcess & { pid: number }> {
  const child = spawn(command, args, { stdio: 'ignore', ...options });
  const pid = child.pid;
  if (pid === undefined) {
    throw new Error(`spawn ${command} failed: no pid`);
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    let target: string | undefined;
    try {
      target = readlinkSync(`/proc/${pid}/exe`);
    } catch {
      target = undefined;
    }
    if (target === expectedExe) {
      return child as ChildProcess & { pid: number };
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${command} exited before running ${expectedExe}`);
    }
    await delay(10);
  }
  child.kill('SIGKILL');
  throw new Error(`timed out waiting for pid ${pid} to run ${expectedExe}`);
}

/** Kills a child and waits until it has been reaped, so that its pid and cgroup are free. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}
