import { ChildProcess, spawn, SpawnOptions } from 'node:child_process';
import { join } from 'node:path';
import { REPO, waitFor } from './agent-process';

const WORKLOAD = join(REPO, 'examples', 'workload.js');

/** A spawned process with its stdout collected line by line. */
export class Workload {
  readonly lines: string[] = [];
  private buffered = '';

  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (chunk: Buffer) => {
      this.buffered += chunk.toString();
      const parts = this.buffered.split('\n');
      this.buffered = parts.pop() ?? '';
      this.lines.push(...parts);
    });
  }

  get pid(): number {
    return this.child.pid as number;
  }

  async waitForLine(what: string, match: (line: string) => boolean, timeoutMs = 10_000): Promise<string> {
    return waitFor(what, () => this.lines.find(match), timeoutMs);
  }

  send(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }
}

/** Runs argv inside a cgroup: a shell moves itself into the cgroup, then execs argv. */
export function spawnInCgroup(cgroupPath: string, argv: string[], options: SpawnOptions = {}): Workload {
  const child = spawn('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroupPath, ...argv], {
    stdio: ['pipe', 'pipe', 'inherit'],
    ...options,
  });
  return new Workload(child);
}

/** Runs argv directly, for workloads identified by uid rather than by cgroup. */
export function spawnWorkload(argv: string[], options: SpawnOptions = {}): Workload {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'], ...options });
  return new Workload(child);
}

export function listenerArgv(port: number, host = '127.0.0.1'): string[] {
  return [process.execPath, WORKLOAD, 'listen', host, String(port)];
}

export function clientArgv(): string[] {
  return [process.execPath, WORKLOAD, 'client'];
}

/** Sends one connect request to a client workload and returns its result line. */
export async function connectFrom(client: Workload, host: string, port: number): Promise<string> {
  const before = client.lines.length;
  client.send(`${host} ${port}`);
  await waitFor(`connect result from pid ${client.pid}`, () => (client.lines.length > before ? true : undefined));
  return client.lines[before];
}
