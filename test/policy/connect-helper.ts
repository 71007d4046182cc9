import { ChildProcessWithoutNullStreams, execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';

const SOURCE = join(__dirname, 'fixtures', 'connect_helper.c');
const REPLY_TIMEOUT_MS = 30_000;

/** One connect() for a helper to run. */
export interface ConnectRequest {
  protocol: 'TCP' | 'UDP';
  address: string;
  port: number;
}

/** Compiles fixtures/connect_helper.c into directory and returns the binary's path. */
export function buildConnectHelper(directory: string): string {
  const binary = join(directory, 'connect_helper');
  execFileSync('cc', ['-O2', '-Wall', '-Werror', '-o', binary, SOURCE]);
  return binary;
}

/**
 * A running connect_helper: a subject process in a cgroup and a network namespace that binds
 * listeners and runs batches of connects on request. It replies to requests in order.
 */
export class ConnectHelper {
  private readonly waiting: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  private buffered = '';
  private stderr = '';

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.on('data', (chunk: Buffer) => {
      this.buffered += chunk.toString();
      let newline: number;
      while ((newline = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, newline);
        this.buffered = this.buffered.slice(newline + 1);
        this.waiting.shift()?.resolve(line);
      }
    });
    child.stderr.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    child.once('exit', (code, signal) => {
      const error = new Error(
        `connect_helper ${child.pid} exited (code ${code}, signal ${signal}): ${this.stderr}`,
      );
      for (const waiter of this.waiting.splice(0)) waiter.reject(error);
    });
  }

  /** Starts the helper and waits until it has joined the cgroup and the network namespace. */
  static async start(binary: string, cgroup: string, netnsPath: string): Promise<ConnectHelper> {
    const child = spawn(binary, [cgroup, netnsPath], { stdio: ['pipe', 'pipe', 'pipe'] });
    const helper = new ConnectHelper(child);
    const ready = await helper.next('ready');
    if (ready !== `ready ${child.pid}`) {
      throw new Error(`connect_helper replied "${ready}" instead of "ready ${child.pid}"`);
    }
    return helper;
  }

  get pid(): number {
    return this.child.pid!;
  }

  private next(request: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`connect_helper ${this.child.pid}: no reply to ${request}`)),
        REPLY_TIMEOUT_MS,
      );
      this.waiting.push({
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
    });
  }

  /** Binds a TCP listener or a UDP socket on address:port, owned by this process. */
  async listen(protocol: 'TCP' | 'UDP', address: string, port: number): Promise<void> {
    const request = `listen ${protocol.toLowerCase()} ${address} ${port}`;
    const reply = this.next(request);
    this.child.stdin.write(`${request}\n`);
    const errno = Number(await reply);
    if (errno !== 0)
      throw new Error(`connect_helper ${this.pid}: ${request} failed, errno ${errno}`);
  }

  /** Runs the connects one after another and returns their errnos, 0 for success. */
  async connect(requests: readonly ConnectRequest[]): Promise<number[]> {
    if (requests.length === 0) return [];
    const lines = requests.map(
      (request) => `${request.protocol.toLowerCase()} ${request.address} ${request.port}`,
    );
    const reply = this.next(`a batch of ${requests.length} connects`);
    this.child.stdin.write(`batch ${requests.length}\n${lines.join('\n')}\n`);
    const errnos = (await reply).split(' ').map(Number);
    if (errnos.length !== requests.length) {
      throw new Error(`connect_helper ${this.pid}: ${errnos.length} results for ${lines.length}`);
    }
    return errnos;
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}
