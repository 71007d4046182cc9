/**
 * A real single-node SPIRE deployment for tests: spire-server with a SQLite datastore and
 * spire-agent with join-token node attestation and the unix workload attestor, both in a temp
 * directory, on 127.0.0.1 and unix sockets only.
 *
 * The test process itself (uid 0 running the node binary) gets a registration entry whose
 * SPIFFE ID is the agent's only authorized delegate, so it can call the Delegated Identity API.
 * Every root process running the same node binary matches that entry too: a node program has
 * no selector narrower than its interpreter's path or hash.
 *
 * Binaries come from scripts/spire/build.sh. Run the tests as root: the agent reads other users'
 * /proc/<pid>/exe, and tests spawn workloads under other uids.
 */

import { ChildProcess, execFile, spawn } from 'node:child_process';
import { accessSync, closeSync, constants, mkdirSync, mkdtempSync, openSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { WorkloadApiClient } from '../../src/identity/spire/workload-api-client';

const execFileAsync = promisify(execFile);

export const SPIRE_VERSION = 'v1.13.3';

/** Directory that scripts/spire/build.sh installs the SPIRE binaries into. */
export function spireBinDirectory(): string {
  const cache = process.env.SIGIL_CACHE ?? join(homedir(), '.cache', 'sigil');
  return join(cache, `spire-${SPIRE_VERSION}`, 'bin');
}

/** Returns the paths of spire-server and spire-agent, or throws when they are not built. */
export function findSpireBinaries(): { server: string; agent: string } {
  const directory = spireBinDirectory();
  const server = join(directory, 'spire-server');
  const agent = join(directory, 'spire-agent');
  for (const binary of [server, agent]) {
    try {
      accessSync(binary, constants.X_OK);
    } catch {
      throw new Error(`SPIRE binary ${binary} is missing: run scripts/spire/build.sh to build SPIRE ${SPIRE_VERSION}`);
    }
  }
  return { server, agent };
}

export interface SpireHarnessOptions {
  /** Defaults to "sigil-test.example". */
  trustDomain?: string;
  /** How long to wait for each process to become healthy, in milliseconds. Defaults to 60 000. */
  startTimeoutMs?: number;
  /** X.509-SVID lifetime of the test process's own entry, in seconds; SPIRE's default when unset. */
  delegateX509SvidTtlSeconds?: number;
  /**
   * Sign the server CA with a root CA made by the openssl CLI (SPIRE's "disk" UpstreamAuthority),
   * so that X.509-SVIDs carry the server CA as an intermediate and the bundle contains the root.
   * Without it the server CA is self-signed and SVIDs have no intermediates.
   */
  upstreamCa?: boolean;
}

export interface CreateEntryOptions {
  spiffeId: string;
  /** Selectors in `type:value` form, such as "unix:uid:4242". */
  selectors: string[];
  /** Defaults to the node alias that every entry of this harness hangs under. */
  parentId?: string;
  /** X.509-SVID lifetime in seconds; SPIRE's default applies when unset. */
  x509SvidTtlSeconds?: number;
}

/** One spawned SPIRE process with its log file. */
class SpireProcess {
  exitCode: number | null = null;
  private readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly logPath: string,
  ) {
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal === null ? -1 : 128);
        resolve();
      }),
    );
  }

  get running(): boolean {
    return this.exitCode === null;
  }

  logTail(lines = 40): string {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Sends SIGTERM, then SIGKILL after `graceMs`, and waits for the exit. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) {
      return;
    }
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

const liveProcesses = new Set<SpireProcess>();
// If the test process exits without teardown, SPIRE must not outlive it.
process.once('exit', () => {
  for (const spireProcess of liveProcesses) {
    spireProcess.child.kill('SIGKILL');
  }
});

export class SpireHarness {
  readonly trustDomain: string;
  readonly directory: string;
  readonly serverSocketPath: string;
  readonly workloadSocketPath: string;
  readonly adminSocketPath: string;
  /** Alias of the agent's node, created with the join token; the default parent of entries. */
  readonly nodeId: string;
  /** SPIFFE ID of the test process, listed in the agent's authorized_delegates. */
  readonly delegateId: string;
  /** Registration entry id of the test process's own entry. */
  delegateEntryId = '';

  private readonly binaries: { server: string; agent: string };
  private readonly startTimeoutMs: number;
  private readonly upstreamCa: boolean;
  private serverPort = 0;
  private server: SpireProcess | null = null;
  private agent: SpireProcess | null = null;
  private joinToken = '';

  private constructor(options: SpireHarnessOptions) {
    this.binaries = findSpireBinaries();
    this.trustDomain = options.trustDomain ?? 'sigil-test.example';
    this.startTimeoutMs = options.startTimeoutMs ?? 60_000;
    this.upstreamCa = options.upstreamCa ?? false;
    // Socket paths must stay under the 108-byte sun_path limit, so the directory is short.
    this.directory = mkdtempSync(join(tmpdir(), 'sigil-spire-'));
    this.serverSocketPath = join(this.directory, 'server', 'api.sock');
    // spire-agent rejects an admin socket in the Workload API socket's directory or below it.
    this.workloadSocketPath = join(this.directory, 'agent-public', 'api.sock');
    this.adminSocketPath = join(this.directory, 'agent-admin', 'admin.sock');
    this.nodeId = `spiffe://${this.trustDomain}/sigil-test-node`;
    this.delegateId = `spiffe://${this.trustDomain}/sigil-agent`;
  }

  /**
   * Starts spire-server, registers the test process as a delegate, starts spire-agent with a
   * fresh join token, and waits until both report healthy. Stops everything when a step fails.
   */
  static async start(options: SpireHarnessOptions = {}): Promise<SpireHarness> {
    const harness = new SpireHarness(options);
    try {
      await harness.startServer();
      const nodeBinary = realpathSync(process.execPath);
      harness.delegateEntryId = await harness.createEntry({
        spiffeId: harness.delegateId,
        selectors: ['unix:uid:0', `unix:path:${nodeBinary}`],
        x509SvidTtlSeconds: options.delegateX509SvidTtlSeconds,
      });
      await harness.startAgent();
    } catch (error) {
      await harness.stop();
      throw error;
    }
    return harness;
  }

  /** Workload API address in the SPIFFE endpoint URI form. */
  get workloadApiAddress(): string {
    return `unix://${this.workloadSocketPath}`;
  }

  /** Creates a registration entry with the spire-server CLI and returns its id. */
  async createEntry(options: CreateEntryOptions): Promise<string> {
    const args = [
      'entry',
      'create',
      '-socketPath',
      this.serverSocketPath,
      '-parentID',
      options.parentId ?? this.nodeId,
      '-spiffeID',
      options.spiffeId,
      '-output',
      'json',
    ];
    for (const selector of options.selectors) {
      args.push('-selector', selector);
    }
    if (options.x509SvidTtlSeconds !== undefined) {
      args.push('-x509SVIDTTL', String(options.x509SvidTtlSeconds));
    }
    const output = await this.runCli(this.binaries.server, args);
    const parsed = JSON.parse(output) as { results?: Array<{ status?: { code?: number; message?: string }; entry?: { id?: string } }> };
    const result = parsed.results?.[0];
    const id = result?.entry?.id;
    if ((result?.status?.code ?? 0) !== 0 || id === undefined) {
      throw new Error(`spire-server entry create for ${options.spiffeId} failed: ${output}`);
    }
    return id;
  }

  /** Deletes a registration entry with the spire-server CLI. */
  async deleteEntry(id: string): Promise<void> {
    await this.runCli(this.binaries.server, ['entry', 'delete', '-socketPath', this.serverSocketPath, '-entryID', id]);
  }

  /** Stops spire-agent, keeping its data directory so that startAgent() resumes as the same node. */
  async stopAgent(): Promise<void> {
    const agent = this.agent;
    this.agent = null;
    if (agent !== null) {
      await agent.stop();
      liveProcesses.delete(agent);
    }
  }

  /**
   * Starts spire-agent and waits until it is healthy and has issued the test process its SVID.
   * The first start attests with a fresh join token. Later starts reuse the agent SVID stored in
   * the data directory, because a join token works only once.
   */
  async startAgent(): Promise<void> {
    if (this.agent !== null) {
      throw new Error('spire-agent is already running');
    }
    const agentDirectory = join(this.directory, 'agent');
    const dataDirectory = join(agentDirectory, 'data');
    mkdirSync(dataDirectory, { recursive: true });
    if (this.joinToken === '') {
      this.joinToken = await this.generateJoinToken();
    }
    const bundle = await this.runCli(this.binaries.server, ['bundle', 'show', '-socketPath', this.serverSocketPath]);
    const bundlePath = join(agentDirectory, 'bootstrap.pem');
    writeFileSync(bundlePath, bundle);

    const configPath = join(agentDirectory, 'agent.conf');
    writeFileSync(
      configPath,
      `agent {
  data_dir = ${hclString(dataDirectory)}
  log_level = "DEBUG"
  server_address = "127.0.0.1"
  server_port = "${this.serverPort}"
  socket_path = ${hclString(this.workloadSocketPath)}
  admin_socket_path = ${hclString(this.adminSocketPath)}
  trust_domain = ${hclString(this.trustDomain)}
  trust_bundle_path = ${hclString(bundlePath)}
  authorized_delegates = [${hclString(this.delegateId)}]
  experimental {
    # New and deleted entries reach the agent on its sync; the default is every 5 s.
    sync_interval = "1s"
  }
}

plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "disk" {
    plugin_data {
      directory = ${hclString(dataDirectory)}
    }
  }
  WorkloadAttestor "unix" {
    plugin_data {
      discover_workload_path = true
    }
  }
}
`,
    );
    this.agent = this.spawnProcess('spire-agent', this.binaries.agent, [
      'run',
      '-config',
      configPath,
      '-joinToken',
      this.joinToken,
    ]);
    await this.waitHealthy(this.agent, this.binaries.agent, ['healthcheck', '-socketPath', this.workloadSocketPath]);
    await this.waitForOwnSvid();
  }

  /**
   * Waits until the agent issues the test process its SVID. Until the agent has synced the
   * delegate entry, the admin socket rejects this process with "no identity issued".
   */
  private async waitForOwnSvid(): Promise<void> {
    const client = new WorkloadApiClient({
      address: this.workloadApiAddress,
      backoff: { initialDelayMs: 100, maxDelayMs: 500 },
    });
    try {
      const update = await client.fetchX509Svids(this.startTimeoutMs);
      if (update.svids[0]?.spiffeId !== this.delegateId) {
        throw new Error(`the test process got SVID ${update.svids[0]?.spiffeId}, expected ${this.delegateId}`);
      }
    } catch (error) {
      throw new Error(`spire-agent issued no SVID to the test process: ${(error as Error).message}\n${this.agent?.logTail() ?? ''}`, {
        cause: error,
      });
    } finally {
      client.close();
    }
  }

  /** Stops both processes and removes the temp directory. Safe to call more than once. */
  async stop(): Promise<void> {
    await this.stopAgent();
    const server = this.server;
    this.server = null;
    if (server !== null) {
      await server.stop();
      liveProcesses.delete(server);
    }
    rmSync(this.directory, { recursive: true, force: true });
  }

  private async startServer(): Promise<void> {
    const serverDirectory = join(this.directory, 'server');
    const dataDirectory = join(serverDirectory, 'data');
    mkdirSync(dataDirectory, { recursive: true });
    this.serverPort = await findFreePort();
    const upstream = this.upstreamCa ? await this.writeUpstreamCa(serverDirectory) : '';
    const configPath = join(serverDirectory, 'server.conf');
    writeFileSync(
      configPath,
      `server {
  bind_address = "127.0.0.1"
  bind_port = "${this.serverPort}"
  socket_path = ${hclString(this.serverSocketPath)}
  trust_domain = ${hclString(this.trustDomain)}
  data_dir = ${hclString(dataDirectory)}
  log_level = "DEBUG"
  experimental {
    # How often the server reloads the entries that it hands to agents; the default is 5 s.
    cache_reload_interval = "1s"
  }
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = ${hclString(join(dataDirectory, 'datastore.sqlite3'))}
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
${upstream}}
`,
    );
    this.server = this.spawnProcess('spire-server', this.binaries.server, ['run', '-config', configPath]);
    await this.waitHealthy(this.server, this.binaries.server, ['healthcheck', '-socketPath', this.serverSocketPath]);
  }

  /** Writes a root CA key and certificate, and returns the UpstreamAuthority block that uses them. */
  private async writeUpstreamCa(serverDirectory: string): Promise<string> {
    const keyPath = join(serverDirectory, 'upstream-ca.key');
    const certPath = join(serverDirectory, 'upstream-ca.pem');
    await this.runCli('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', `/CN=${this.trustDomain} upstream CA`,
      '-addext', 'basicConstraints=critical,CA:true',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-addext', `subjectAltName=URI:spiffe://${this.trustDomain}`,
    ]);
    return `  UpstreamAuthority "disk" {
    plugin_data {
      key_file_path = ${hclString(keyPath)}
      cert_file_path = ${hclString(certPath)}
    }
  }
`;
  }

  private async generateJoinToken(): Promise<string> {
    const output = await this.runCli(this.binaries.server, [
      'token',
      'generate',
      '-socketPath',
      this.serverSocketPath,
      '-spiffeID',
      this.nodeId,
      '-ttl',
      '600',
    ]);
    const match = /Token:\s*(\S+)/.exec(output);
    if (match === null) {
      throw new Error(`spire-server token generate printed no token: ${output}`);
    }
    return match[1];
  }

  private spawnProcess(name: string, binary: string, args: string[]): SpireProcess {
    const logPath = join(this.directory, `${name}.log`);
    const logFd = openSync(logPath, 'a');
    const child = spawn(binary, args, { stdio: ['ignore', logFd, logFd] });
    closeSync(logFd);
    const spireProcess = new SpireProcess(name, child, logPath);
    liveProcesses.add(spireProcess);
    return spireProcess;
  }

  /** Runs `binary args` (a healthcheck) until it succeeds, the process exits, or time runs out. */
  private async waitHealthy(spireProcess: SpireProcess, binary: string, args: string[]): Promise<void> {
    const deadline = Date.now() + this.startTimeoutMs;
    let lastOutput = '';
    while (Date.now() < deadline) {
      if (!spireProcess.running) {
        throw new Error(`${spireProcess.name} exited with ${spireProcess.exitCode} while starting:\n${spireProcess.logTail()}`);
      }
      try {
        await execFileAsync(binary, args, { timeout: 10_000 });
        return;
      } catch (error) {
        const failure = error as { stdout?: string; stderr?: string; message: string };
        lastOutput = `${failure.stdout ?? ''}${failure.stderr ?? ''}`.trim() || failure.message;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new Error(
      `${spireProcess.name} was not healthy after ${this.startTimeoutMs} ms; last healthcheck output: ${lastOutput}\n` +
        spireProcess.logTail(),
    );
  }

  private async runCli(binary: string, args: string[]): Promise<string> {
    try {
      const { stdout } = await execFileAsync(binary, args, { timeout: 30_000 });
      return stdout;
    } catch (error) {
      const failure = error as { stdout?: string; stderr?: string; message: string };
      throw new Error(`${binary} ${args.join(' ')} failed: ${failure.message}\n${failure.stdout ?? ''}${failure.stderr ?? ''}`);
    }
  }
}

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
export async function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Quotes a value as an HCL string. */
function hclString(value: string): string {
  return JSON.stringify(value);
}

/**
 * Polls `check` every 50 ms until it returns a value other than undefined, and returns that
 * value. Throws after `timeoutMs` naming `what`. Entries reach spire-agent on its sync, so
 * tests wait with this for what SPIRE propagates.
 */
export async function waitUntil<T>(what: string, check: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
