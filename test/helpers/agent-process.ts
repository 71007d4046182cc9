import { ChildProcess, spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ClientReadableStream } from '@grpc/grpc-js';
import { AuditEvent } from '../../src/events/audit-event';
import { watchEvents } from '../../src/events/grpc-client';

export const REPO = join(__dirname, '..', '..');
export const SIGIL = join(REPO, 'bin', 'sigil');

/** Polls until check returns a value other than undefined, or throws after timeoutMs. */
export async function waitFor<T>(what: string, check: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The real agent, started as `sigil run` in a child process, with its event stream collected. */
export class AgentProcess {
  readonly events: AuditEvent[] = [];
  stderr = '';
  exitCode: number | null = null;
  private stream: ClientReadableStream<AuditEvent> | null = null;
  private readonly exited: Promise<number | null>;

  private constructor(
    readonly child: ChildProcess,
    readonly socketPath: string,
    readonly pinDir: string,
    readonly stateDir: string,
    /** The arguments given to spawn(), to start an agent the same way again. */
    readonly args: string[],
  ) {
    child.stderr?.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) =>
      child.once('exit', (code) => {
        this.exitCode = code;
        resolve(code);
      }),
    );
  }

  /**
   * Spawns the agent; call ready() to wait for its socket and subscribe to
   * events. Each test agent pins under its own bpffs directory, named after
   * the socket's directory unless pinDir is given, so agents of different
   * test files never adopt each other's maps.
   */
  static spawn(args: string[], socketPath: string, pinDir?: string): AgentProcess {
    const pins = pinDir ?? `/sys/fs/bpf/sigil-test-${dirname(socketPath).split('/').pop()}`;
    const stateDir = join(dirname(socketPath), 'state');
    const argv = [SIGIL, 'run', '--socket', socketPath, '--events-log', '/dev/null', '--bpffs-dir', pins, '--state-dir', stateDir, ...args];
    const child = spawn(process.execPath, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    return new AgentProcess(child, socketPath, pins, stateDir, args);
  }

  /** Removes the agent's pinned programs and maps with `sigil uninstall`. */
  uninstall(): void {
    execFileSync(process.execPath, [SIGIL, 'uninstall', '--bpffs-dir', this.pinDir, '--state-dir', this.stateDir]);
  }

  async ready(): Promise<void> {
    await waitFor('the agent socket', () => {
      if (this.exitCode !== null) throw new Error(`agent exited with ${this.exitCode}:\n${this.stderr}`);
      return existsSync(this.socketPath) ? true : undefined;
    }, 30_000);
    this.stream = watchEvents({ socketPath: this.socketPath }, (event) => this.events.push(event));
    this.stream.on('error', () => undefined);
    // The server sends headers once it has subscribed the stream, so their arrival means no
    // later event can be missed.
    let streamLive = false;
    this.stream.once('metadata', () => (streamLive = true));
    await waitFor('the audit stream headers', () => (streamLive ? true : undefined), 30_000);
  }

  async waitForEvent(what: string, match: (event: AuditEvent) => boolean, timeoutMs = 10_000): Promise<AuditEvent> {
    return waitFor(what, () => this.events.find(match), timeoutMs);
  }

  /**
   * Waits until the agent reports that pid executed executable, and returns
   * the SPIFFE ID it attested (empty for none). Earlier execs of the same pid,
   * such as the shell that moved itself into a cgroup, are passed over.
   */
  async identityOf(pid: number, executable: string = process.execPath): Promise<string> {
    const event = await this.waitForEvent(
      `exec of ${executable} by pid ${pid}`,
      (e) => e.type === 'exec' && e.process?.pid === pid && e.process.executable === executable,
    );
    return event.subject?.spiffeId ?? '';
  }

  /** Stops collecting events, such as before a flood the test process need not decode. */
  stopCollecting(): void {
    this.stream?.cancel();
    this.stream = null;
  }

  waitForExit(): Promise<number | null> {
    return this.exited;
  }

  /** Stops the agent with SIGTERM and removes its pinned programs, so no test leaves enforcement behind. */
  async stop(): Promise<void> {
    this.stream?.cancel();
    if (this.exitCode === null) {
      this.child.kill('SIGTERM');
      await this.exited;
    }
    this.uninstall();
  }

  /** Kills the agent with SIGKILL and leaves its pinned programs in place. */
  async kill(): Promise<void> {
    this.stream?.cancel();
    if (this.exitCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}
