/**
 * End-to-end throughput of the audit pipeline, from the kernel ring buffer
 * to a gRPC consumer and to the JSON event log, with every lost record
 * accounted for. Run as root after `make`:
 *
 *   npx vite-node bench/events-kernel.ts -- [--rates 100000,250000,400000,1000000]
 *     [--seconds 5] [--burst 100] [--profile DIR] [--agent-root DIR] [--agent-node-option FLAG]...
 *
 * Parts:
 * - the real agent (`bin/sigil run`) with its own bpffs directory, state
 *   directory and event log file, and a registration entry for the driver;
 * - bench/event-generator.bpf.c, attached to syscalls/sys_enter_getppid,
 *   which writes `burst` copies of a template connect record into the
 *   agent's pinned sigil_events ring buffer on each getppid() call of the
 *   driver, and counts what it wrote and what failed to reserve;
 * - bench/getppid_driver.c, which calls getppid() at rate / burst calls per
 *   second for the given seconds;
 * - bench/events-consumer.ts, a separate process reading WatchBatches.
 *
 * Per rate it prints the records generated, the events delivered to the
 * gRPC consumer and written to the JSON log, the losses counted (kernel
 * reserve failures, client-queue loss events, event-log drops) and whether
 * generated == delivered + counted losses is exactly true. The baseline, in the
 * same run after the agent has stopped, is this process's native
 * ring-buffer consumer alone draining the same records at the same rates;
 * the ratio column divides the agent's delivery rate by the baseline's.
 * The CPU columns divide the CPU time of the agent (and of this process for
 * the baseline) during a run by the records consumed. The consumer column
 * divides the gRPC consumer process's CPU time by the events it received.
 * Other load on the machine distorts these columns less than the rates.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmdirSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { encodeAddress, encodeU32 } from '../src/kernel/codec';
import {
  connectRecordLayout,
  DecisionReason,
  KernelAction,
  RecordType,
  recordHeaderLayout,
  settingsLayout,
} from '../src/kernel/layout';
import { ensureKernelFilesystems, findCgroup2Root } from '../src/kernel/mounts';
import {
  BpfObject,
  Link,
  mapLookup,
  mapUpdate,
  numPossibleCpus,
  RingBufferConsumer,
} from '../src/kernel/native';

const REPO = join(__dirname, '..');
const SIGIL = join(REPO, 'bin', 'sigil');
const OUTPUT = join(REPO, 'bpf', '.output');
/** Destination port of the generated records, which marks them in the stream and the log. */
const MARKER_PORT = 41999;
const SPIFFE_ID = 'spiffe://bench.sigil.test/event-generator';
/** Maps of the agent that the generator object reuses through their pins. */
const SHARED_MAPS = ['sigil_events', 'sigil_drops', 'sigil_settings', 'sigil_identities'];
/** Time a run may go without progress before its counts are taken as final. */
const QUIET_MS = 3000;
/** The agent reports event-log drops to its operational log every 10 s. */
const LOG_DROP_REPORT_MS = 11_000;

interface Options {
  rates: number[];
  seconds: number;
  burst: number;
  /** Directory for a V8 CPU profile of the agent during the runs, written when it stops. */
  profile?: string;
  /** Package root whose bin/sigil runs as the agent, to compare two builds in one session. */
  agentRoot: string;
  /** Node.js options for the agent process alone, such as V8 heap flags. */
  agentNodeOptions: string[];
}

function parseArgs(argv: string[]): Options {
  const options: Options = {
    rates: [100_000, 250_000, 400_000, 1_000_000],
    seconds: 5,
    burst: 100,
    agentRoot: REPO,
    agentNodeOptions: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--rates') options.rates = value.split(',').map(Number);
    else if (argv[i] === '--seconds') options.seconds = Number(value);
    else if (argv[i] === '--burst') options.burst = Number(value);
    else if (argv[i] === '--profile') options.profile = value;
    else if (argv[i] === '--agent-root') options.agentRoot = value;
    else if (argv[i] === '--agent-node-option') options.agentNodeOptions.push(value);
    else if (argv[i] === '--') continue;
    else
      throw new Error(
        `unknown argument ${argv[i]}: expected --rates N,N --seconds N --burst N --profile DIR --agent-root DIR --agent-node-option FLAG`,
      );
    i++;
  }
  for (const rate of options.rates) {
    if (!Number.isSafeInteger(rate) || rate < options.burst) {
      throw new Error(
        `invalid rate ${rate}: expected an integer of at least --burst (${options.burst})`,
      );
    }
  }
  if (!Number.isSafeInteger(options.seconds) || options.seconds < 1) {
    throw new Error(`invalid --seconds ${options.seconds}: expected a positive integer`);
  }
  if (!Number.isSafeInteger(options.burst) || options.burst < 1 || options.burst > 4096) {
    throw new Error(`invalid --burst ${options.burst}: expected an integer from 1 to 4096`);
  }
  return options;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Returns the CPU seconds (user and system, all threads) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const { user, system } = cpuTimes(pid);
  return user + system;
}

/** Reads the name and the user and system CPU seconds from a /proc stat file's text. */
function parseStat(stat: string): { name: string; user: number; system: number } {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the file, in clock ticks of 1/100 s.
  return {
    name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')),
    user: Number(fields[11]) / 100,
    system: Number(fields[12]) / 100,
  };
}

/** Returns the user and system CPU seconds a process has used (all threads), from /proc. */
function cpuTimes(pid: number): { user: number; system: number } {
  return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/**
 * Returns the CPU seconds (user and system) of a process's threads in three groups: the main
 * thread, the native ring-buffer readers (named sigil-ringbuf), and the rest (libuv's thread
 * pool and V8's worker threads, which run the garbage collector's concurrent work).
 */
function threadGroupCpu(pid: number): {
  main: number;
  ring: number;
  other: number;
  otherSystem: number;
} {
  const groups = { main: 0, ring: 0, other: 0, otherSystem: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // the thread exited
    }
    const { name, user, system } = parseStat(stat);
    if (Number(tid) === pid) groups.main += user + system;
    else if (name === 'sigil-ringbuf') groups.ring += user + system;
    else {
      groups.other += user + system;
      groups.otherSystem += system;
    }
  }
  return groups;
}

/** Compiles the generator object and the driver into bpf/.output/bench. */
function build(): { object: string; driver: string } {
  const dir = join(OUTPUT, 'bench');
  mkdirSync(dir, { recursive: true });
  if (!existsSync(join(OUTPUT, 'vmlinux.h')))
    throw new Error(`${OUTPUT}/vmlinux.h not found: run \`make\` first`);
  const object = join(dir, 'event-generator.bpf.o');
  execFileSync('clang', [
    '-g',
    '-O2',
    '-Wall',
    '-target',
    'bpf',
    '-D__TARGET_ARCH_x86',
    `-I${OUTPUT}`,
    `-I${join(REPO, 'bpf', 'include')}`,
    '-c',
    join(__dirname, 'event-generator.bpf.c'),
    '-o',
    object,
  ]);
  const driver = join(dir, 'getppid_driver');
  execFileSync('cc', ['-O2', '-Wall', '-o', driver, join(__dirname, 'getppid_driver.c')]);
  return { object, driver };
}

/** Writes the registration and policy files that give the driver an identity and a rule. */
function writeConfig(dir: string, driver: string): { registration: string; policy: string } {
  const registration = join(dir, 'registration.yaml');
  writeFileSync(
    registration,
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: Registration',
      'trustDomain: bench.sigil.test',
      'entries:',
      `  - spiffeId: ${SPIFFE_ID}`,
      '    selectors:',
      `      - unix:path:${driver}`,
      '',
    ].join('\n'),
  );
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: IdentityPolicy',
      'metadata:',
      '  name: bench-generator',
      'spec:',
      '  subject:',
      `    spiffeId: ${SPIFFE_ID}`,
      '  egress:',
      '    - name: generator-to-sink',
      '      action: Allow',
      '      to:',
      '        cidrs: [10.0.0.0/8]',
      `      ports: [${MARKER_PORT}]`,
      '      protocol: TCP',
      '',
    ].join('\n'),
  );
  return { registration, policy };
}

/** Lines of a child's stdout, parsed as JSON, to one handler. */
function onJsonLines(child: ChildProcess, handle: (value: Record<string, unknown>) => void): void {
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      handle(JSON.parse(line));
    } catch {
      process.stderr.write(`bench: ignored output line ${JSON.stringify(line)}\n`);
    }
  });
}

async function waitUntil(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** The agent under test, started as `sigil run`. */
class AgentUnderTest {
  readonly child: ChildProcess;
  logDrops = 0;
  stderr = '';

  constructor(
    readonly dir: string,
    readonly pinDir: string,
    config: { registration: string; policy: string },
    cgroup: string,
    readonly eventsLog: string,
    agentRoot: string,
    nodeOptions: string[],
    profileDir?: string,
  ) {
    const profile = profileDir ? ['--require', join(__dirname, 'cpu-profile-preload.js')] : [];
    const args = [
      ...nodeOptions,
      ...profile,
      join(agentRoot, 'bin', 'sigil'),
      'run',
      '--socket',
      join(dir, 'audit.sock'),
      '--events-log',
      eventsLog,
      '--bpffs-dir',
      pinDir,
      '--state-dir',
      join(dir, 'state'),
      '--registration',
      config.registration,
      '--policy',
      config.policy,
      '--cgroup',
      cgroup,
      '--no-watch',
      '--log-level',
      'warn',
    ];
    const env = profileDir ? { ...process.env, SIGIL_BENCH_PROFILE_DIR: profileDir } : process.env;
    this.child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    createInterface({ input: this.child.stderr! }).on('line', (line) => {
      if (this.stderr.length < 100_000) this.stderr += `${line}\n`;
      if (!line.includes('event log reader too slow')) return;
      // Only connect lines: the generator's records are the only connects in the bench. An
      // agent that reports no types (an older build, --agent-root) has all its drops counted.
      const report = JSON.parse(line);
      this.logDrops += Number(report.types ? (report.types.connect ?? 0) : (report.lines ?? 0));
    });
  }

  get socket(): string {
    return join(this.dir, 'audit.sock');
  }

  /** Returns the identity id the agent gave a SPIFFE ID, from its journal. */
  identityId(spiffeId: string): number {
    const journal = readFileSync(join(this.dir, 'state', 'identities.jsonl'), 'utf8');
    for (const line of journal.split('\n').filter(Boolean)) {
      const entry = JSON.parse(line) as { id: number; spiffeId: string };
      if (entry.spiffeId === spiffeId) return entry.id;
    }
    throw new Error(`the agent journal has no id for ${spiffeId}`);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.kill('SIGTERM');
    await once(this.child, 'exit');
  }
}

/** The generator object, its maps and its tracepoint link. */
class Generator {
  private readonly object: BpfObject;
  private link: Link | null = null;

  constructor(path: string, pinDir: string) {
    this.object = new BpfObject(path);
    for (const name of SHARED_MAPS) this.object.setMapPinPath(name, join(pinDir, 'maps', name));
    this.object.load();
  }

  attach(): void {
    this.link = this.object.attachTracepoint('generator_getppid', 'syscalls', 'sys_enter_getppid');
  }

  /** Sets the process whose getppid() calls generate records, and the records per call. */
  configure(tgid: number, burst: number): void {
    const config = Buffer.alloc(8);
    config.writeUInt32LE(tgid, 0);
    config.writeUInt32LE(burst, 4);
    mapUpdate(this.object.mapFd('generator_config'), encodeU32(0), config, 0);
  }

  setTemplate(record: Buffer): void {
    mapUpdate(this.object.mapFd('generator_template'), encodeU32(0), record, 0);
  }

  /** Sums the per-CPU counters. */
  stats(): { calls: number; written: number; failed: number } {
    const cpus = numPossibleCpus();
    const value = mapLookup(this.object.mapFd('generator_stats'), encodeU32(0), 24 * cpus);
    const totals = { calls: 0, written: 0, failed: 0 };
    for (let cpu = 0; value && cpu < cpus; cpu++) {
      totals.calls += Number(value.readBigUInt64LE(cpu * 24));
      totals.written += Number(value.readBigUInt64LE(cpu * 24 + 8));
      totals.failed += Number(value.readBigUInt64LE(cpu * 24 + 16));
    }
    return totals;
  }

  /** Returns the rule-set generation in force, from the agent's settings map. */
  generation(): number {
    const value = mapLookup(this.object.mapFd('sigil_settings'), encodeU32(0), settingsLayout.size);
    return value ? value.readUInt32LE(settingsLayout.offsetOf('generation')) : 0;
  }

  eventsFd(): number {
    return this.object.mapFd('sigil_events');
  }

  close(): void {
    this.link?.destroy();
    this.object.close();
  }
}

/** Builds the template: a connect allowed by the generator-to-sink rule, from the driver. */
function connectTemplate(tgid: number, subjectId: number, generation: number): Buffer {
  const l = connectRecordLayout;
  const record = Buffer.alloc(l.size);
  record.writeUInt32LE(RecordType.Connect, recordHeaderLayout.offsetOf('type'));
  record.writeUInt32LE(l.size, recordHeaderLayout.offsetOf('size'));
  record.writeUInt32LE(tgid, l.offsetOf('tgid'));
  record.writeUInt32LE(process.pid, l.offsetOf('ppid'));
  record.writeUInt32LE(subjectId, l.offsetOf('subject_id'));
  record.writeUInt32LE(generation, l.offsetOf('generation'));
  record.writeUInt32LE(0, l.offsetOf('rule_index'));
  record.writeBigUInt64LE(1n, l.offsetOf('cgroup_id'));
  record.writeUInt16LE(2, l.offsetOf('family'));
  record.writeUInt16LE(MARKER_PORT, l.offsetOf('port'));
  record.writeUInt8(6, l.offsetOf('protocol'));
  record.writeUInt8(KernelAction.Allow, l.offsetOf('action'));
  record.writeUInt8(DecisionReason.Rule, l.offsetOf('reason'));
  encodeAddress('10.20.30.40').copy(record, l.offsetOf('addr'));
  record.write('getppid_driver', l.offsetOf('comm'));
  return record;
}

/** Runs the driver at rate records/s; returns its start (performance.now()) and duration in s. */
async function drive(
  driverPath: string,
  generator: Generator,
  rate: number,
  options: Options,
  template: (tgid: number) => Buffer,
): Promise<{ startedAt: number; seconds: number }> {
  const calls = Math.round(rate / options.burst);
  const driver = spawn(driverPath, [String(calls), String(options.seconds)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let result: { calls: number; ns: number } | null = null;
  onJsonLines(driver, (value) => (result = value as { calls: number; ns: number }));
  // The driver has exec'd once it runs; the agent attests it from that exec.
  await sleep(300);
  generator.setTemplate(template(driver.pid as number));
  generator.configure(driver.pid as number, options.burst);
  const startedAt = performance.now();
  driver.stdin!.write('go\n');
  const [code] = await once(driver, 'exit');
  await sleep(50);
  if (code !== 0 || !result) throw new Error(`getppid_driver exited with ${code}`);
  generator.configure(0, options.burst);
  return { startedAt, seconds: (result as { ns: number }).ns / 1e9 };
}

/** Counts a marker in a growing file, reading only the bytes added since the last call. */
class FileCounter {
  private offset = 0;
  private carry = Buffer.alloc(0);
  private found = 0;
  private readonly chunk = Buffer.alloc(8 << 20);

  constructor(
    private readonly path: string,
    private readonly needle: Buffer,
  ) {}

  count(): number {
    const fd = openSync(this.path, 'r');
    try {
      for (;;) {
        const read = readSync(fd, this.chunk, 0, this.chunk.length, this.offset);
        if (read === 0) break;
        this.offset += read;
        const text = Buffer.concat([this.carry, this.chunk.subarray(0, read)]);
        for (
          let at = text.indexOf(this.needle);
          at !== -1;
          at = text.indexOf(this.needle, at + this.needle.length)
        ) {
          this.found++;
        }
        this.carry = Buffer.from(text.subarray(Math.max(0, text.length - this.needle.length + 1)));
      }
    } finally {
      closeSync(fd);
    }
    return this.found;
  }
}

/**
 * Waits until value() reaches target or stops changing for QUIET_MS. Returns the last value
 * and when it last grew.
 */
async function settle(
  value: () => number,
  target: number,
  timeoutMs = 120_000,
  pollMs = 20,
): Promise<{ value: number; at: number }> {
  const deadline = Date.now() + timeoutMs;
  let last = value();
  let changedAt = performance.now();
  while (last < target && Date.now() < deadline && performance.now() - changedAt < QUIET_MS) {
    await sleep(pollMs);
    const next = value();
    if (next !== last) {
      last = next;
      changedAt = performance.now();
    }
  }
  return { value: last, at: changedAt };
}

interface ConsumerTotals {
  marked: number;
  events: number;
  kernelLoss: number;
  clientLoss: number;
  otherLoss: number;
}

interface AgentRow {
  rate: number;
  seconds: number;
  generated: number;
  reserveFailed: number;
  delivered: number;
  deliveredPerSecond: number;
  streamKernelLoss: number;
  clientLoss: number;
  logLines: number;
  logDrops: number;
  grpcExact: boolean;
  logExact: boolean;
  /** CPU the agent used per record it consumed from the ring buffer, in microseconds. */
  agentCpuUsPerEvent: number;
  /** The system (kernel) part of agentCpuUsPerEvent. */
  agentSystemUsPerEvent: number;
  /**
   * The part of agentCpuUsPerEvent used by the agent's main thread, which runs all its
   * JavaScript: above about 4 us it cannot keep up with 250,000 events/s on its own.
   */
  agentMainThreadUsPerEvent: number;
  /** The part used by the native ring-buffer reader threads. */
  agentRingThreadUsPerEvent: number;
  /** The part used by the other threads: libuv's pool (file writes) and V8's workers (GC). */
  agentOtherThreadsUsPerEvent: number;
  /** The system (kernel) part of agentOtherThreadsUsPerEvent: mostly the file writes. */
  agentOtherThreadsSystemUsPerEvent: number;
  /** CPU the gRPC consumer process used per event it received, in microseconds. */
  consumerCpuUsPerEvent: number;
}

interface BaselineRow {
  rate: number;
  generated: number;
  reserveFailed: number;
  delivered: number;
  deliveredPerSecond: number;
  /** CPU this process used per record its consumer drained, in microseconds. */
  cpuUsPerEvent: number;
}

function subtract(a: ConsumerTotals, b: ConsumerTotals): ConsumerTotals {
  return {
    marked: a.marked - b.marked,
    events: a.events - b.events,
    kernelLoss: a.kernelLoss - b.kernelLoss,
    clientLoss: a.clientLoss - b.clientLoss,
    otherLoss: a.otherLoss - b.otherLoss,
  };
}

async function agentRun(
  rate: number,
  options: Options,
  parts: {
    agent: AgentUnderTest;
    generator: Generator;
    driver: string;
    totals: () => ConsumerTotals;
    consumerPid: number;
    /** When the consumer's count of generated events last grew (performance.now()). */
    markedAt: () => number;
    template: (tgid: number) => Buffer;
  },
): Promise<AgentRow> {
  const { agent, generator } = parts;
  const marker = Buffer.from(`"port":${MARKER_PORT},`);
  truncateSync(agent.eventsLog, 0);
  const agentPid = agent.child.pid as number;
  const before = {
    stats: generator.stats(),
    totals: parts.totals(),
    logDrops: agent.logDrops,
    cpu: cpuTimes(agentPid),
    threads: threadGroupCpu(agentPid),
    consumerCpu: cpuSeconds(parts.consumerPid),
  };
  const { startedAt, seconds } = await drive(
    parts.driver,
    generator,
    rate,
    options,
    parts.template,
  );
  const stats = generator.stats();
  const generated = stats.written + stats.failed - before.stats.written - before.stats.failed;
  const written = stats.written - before.stats.written;
  const reserveFailed = stats.failed - before.stats.failed;

  // Delivered events, and the kernel loss events that the agent publishes once a second.
  await settle(() => {
    const t = subtract(parts.totals(), before.totals);
    return t.marked + t.clientLoss + Math.min(t.kernelLoss, reserveFailed);
  }, generated);
  const totals = subtract(parts.totals(), before.totals);
  const log = new FileCounter(agent.eventsLog, marker);
  let logLines = (await settle(() => log.count(), written, 120_000, 500)).value;
  // Drops reach the agent's operational log up to LOG_DROP_REPORT_MS later.
  const reportDeadline = Date.now() + LOG_DROP_REPORT_MS;
  while (logLines + agent.logDrops - before.logDrops < written && Date.now() < reportDeadline) {
    await sleep(500);
    logLines = log.count();
  }
  const logDrops = agent.logDrops - before.logDrops;
  const after = cpuTimes(agentPid);
  const threadsAfter = threadGroupCpu(agentPid);
  const consumerCpu = cpuSeconds(parts.consumerPid) - before.consumerCpu;
  const agentCpu = after.user + after.system - before.cpu.user - before.cpu.system;
  return {
    rate,
    seconds,
    generated,
    reserveFailed,
    delivered: totals.marked,
    deliveredPerSecond: totals.marked / ((parts.markedAt() - startedAt) / 1000),
    streamKernelLoss: totals.kernelLoss,
    clientLoss: totals.clientLoss,
    logLines,
    logDrops,
    grpcExact: generated === totals.marked + reserveFailed + totals.clientLoss,
    logExact: written === logLines + logDrops,
    agentCpuUsPerEvent: (agentCpu * 1e6) / written,
    agentSystemUsPerEvent: ((after.system - before.cpu.system) * 1e6) / written,
    agentMainThreadUsPerEvent: ((threadsAfter.main - before.threads.main) * 1e6) / written,
    agentRingThreadUsPerEvent: ((threadsAfter.ring - before.threads.ring) * 1e6) / written,
    agentOtherThreadsUsPerEvent: ((threadsAfter.other - before.threads.other) * 1e6) / written,
    agentOtherThreadsSystemUsPerEvent:
      ((threadsAfter.otherSystem - before.threads.otherSystem) * 1e6) / written,
    consumerCpuUsPerEvent: (consumerCpu * 1e6) / Math.max(1, totals.events),
  };
}

/** Drains the same records with the native consumer alone, counting the generated ones. */
async function baselineRun(
  rate: number,
  options: Options,
  generator: Generator,
  driver: string,
  template: (tgid: number) => Buffer,
): Promise<BaselineRow> {
  const portAt = 8 + connectRecordLayout.offsetOf('port');
  let delivered = 0;
  let lastAt = 0;
  const consumer = new RingBufferConsumer(generator.eventsFd(), (batch) => {
    for (let at = 0; at + 8 <= batch.length;) {
      const length = batch.readUInt32LE(at);
      if (
        batch.readUInt32LE(at + 8) === RecordType.Connect &&
        batch.readUInt16LE(at + portAt) === MARKER_PORT
      )
        delivered++;
      at += 8 + Math.ceil(length / 8) * 8;
    }
    lastAt = performance.now();
  });
  const before = generator.stats();
  const cpuBefore = cpuSeconds(process.pid);
  consumer.start();
  const { startedAt } = await drive(driver, generator, rate, options, template);
  const stats = generator.stats();
  const generated = stats.written + stats.failed - before.written - before.failed;
  const reserveFailed = stats.failed - before.failed;
  await settle(() => delivered, generated - reserveFailed);
  consumer.stop();
  const cpuUsPerEvent = ((cpuSeconds(process.pid) - cpuBefore) * 1e6) / delivered;
  const deliveredPerSecond = delivered / ((lastAt - startedAt) / 1000);
  return { rate, generated, reserveFailed, delivered, deliveredPerSecond, cpuUsPerEvent };
}

const format = (n: number) => Math.round(n).toLocaleString('en-US');

function printResults(agentRows: AgentRow[], baselineRows: BaselineRow[], options: Options): void {
  const out = process.stdout;
  out.write(
    `\nnode ${process.version}, Linux ${release()}, ${cpus().length} CPUs (${cpus()[0]?.model}); `,
  );
  out.write(`${options.seconds} s per rate, ${options.burst} records per getppid() call; `);
  const load = loadavg().map((value) => value.toFixed(2));
  out.write(`load average at the end ${load.join(', ')} (1, 5, 15 min)\n\n`);
  out.write(
    '| offered rate | generated | reserve failed | delivered to gRPC | client-queue loss | JSON log lines | log drops | exact (gRPC, log) | delivered/s | baseline delivered/s | ratio | agent CPU µs/event (system part) | agent main thread µs/event | consumer CPU µs/event | baseline CPU µs/event |\n',
  );
  out.write(
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n',
  );
  agentRows.forEach((row, i) => {
    const base = baselineRows[i];
    const cells = [
      format(row.rate),
      format(row.generated),
      format(row.reserveFailed),
      format(row.delivered),
      format(row.clientLoss),
      format(row.logLines),
      format(row.logDrops),
      `${row.grpcExact ? 'yes' : 'NO'}, ${row.logExact ? 'yes' : 'NO'}`,
      format(row.deliveredPerSecond),
      base ? format(base.deliveredPerSecond) : '-',
      base ? (row.deliveredPerSecond / base.deliveredPerSecond).toFixed(3) : '-',
      `${row.agentCpuUsPerEvent.toFixed(1)} (system ${row.agentSystemUsPerEvent.toFixed(1)})`,
      row.agentMainThreadUsPerEvent.toFixed(1),
      row.consumerCpuUsPerEvent.toFixed(1),
      base ? base.cpuUsPerEvent.toFixed(2) : '-',
    ];
    out.write(`| ${cells.join(' | ')} |\n`);
  });
  out.write(
    '\nagent CPU µs/event by thread (main, ring-buffer reader, libuv pool and V8 workers with their system part): ',
  );
  out.write(
    `${agentRows
      .map(
        (row) =>
          `${row.agentMainThreadUsPerEvent.toFixed(1)}, ${row.agentRingThreadUsPerEvent.toFixed(1)}, ${row.agentOtherThreadsUsPerEvent.toFixed(1)} (${row.agentOtherThreadsSystemUsPerEvent.toFixed(1)})`,
      )
      .join('; ')}\n`,
  );
  out.write(
    'kernel-ringbuf loss reported in the stream per run (includes records of other programs): ',
  );
  out.write(`${agentRows.map((row) => format(row.streamKernelLoss)).join(', ')}\n`);
  out.write('baseline (native consumer alone) per run, generated / reserve failed / delivered: ');
  out.write(
    `${baselineRows.map((row) => `${format(row.generated)} / ${format(row.reserveFailed)} / ${format(row.delivered)}`).join(', ')}\n`,
  );
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0)
    throw new Error('run as root: the bench loads BPF programs and starts the agent');
  ensureKernelFilesystems();
  // The preloaded profiler writes its file at the agent's exit and cannot report a missing directory.
  if (options.profile) mkdirSync(options.profile, { recursive: true });
  const { object, driver } = build();
  const dir = mkdtempSync(join(tmpdir(), 'sigil-bench-events-'));
  const pinDir = `/sys/fs/bpf/sigil-bench-${process.pid}`;
  // The socket programs attach to an empty cgroup, so other connects on the machine add no records.
  const cgroup = join(findCgroup2Root(), `sigil-bench-${process.pid}`);
  mkdirSync(cgroup, { recursive: true });
  const config = writeConfig(dir, driver);
  const eventsLog = join(dir, 'events.jsonl');
  writeFileSync(eventsLog, '');

  const agent = new AgentUnderTest(
    dir,
    pinDir,
    config,
    cgroup,
    eventsLog,
    options.agentRoot,
    options.agentNodeOptions,
    options.profile,
  );
  let generator: Generator | null = null;
  let consumer: ChildProcess | null = null;
  const agentRows: AgentRow[] = [];
  const baselineRows: BaselineRow[] = [];
  try {
    await waitUntil(
      'the agent socket',
      () => {
        if (agent.child.exitCode !== null)
          throw new Error(`the agent exited:\n${agent.stderr.slice(-2000)}`);
        return existsSync(agent.socket);
      },
      60_000,
    );
    generator = new Generator(object, pinDir);
    generator.attach();
    const subjectId = agent.identityId(SPIFFE_ID);
    const generation = generator.generation();
    const template = (tgid: number) => connectTemplate(tgid, subjectId, generation);

    let totals: ConsumerTotals = {
      marked: 0,
      events: 0,
      kernelLoss: 0,
      clientLoss: 0,
      otherLoss: 0,
    };
    let ready = false;
    let markedAt = 0;
    consumer = spawn(
      process.execPath,
      [
        join(REPO, 'node_modules', '.bin', 'vite-node'),
        join(__dirname, 'events-consumer.ts'),
        '--',
        '--socket',
        agent.socket,
        '--port',
        String(MARKER_PORT),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    onJsonLines(consumer, (value) => {
      if (value.ready) ready = true;
      else {
        if (value.marked !== totals.marked) markedAt = performance.now();
        totals = value as unknown as ConsumerTotals;
      }
    });
    await waitUntil('the gRPC consumer', () => ready, 60_000);
    if (options.profile) agent.child.kill('SIGUSR2');

    for (const rate of options.rates) {
      const row = await agentRun(rate, options, {
        agent,
        generator,
        driver,
        totals: () => totals,
        consumerPid: consumer.pid as number,
        markedAt: () => markedAt,
        template,
      });
      process.stderr.write(`agent run at ${format(rate)}/s: ${JSON.stringify(row)}\n`);
      agentRows.push(row);
    }
    consumer.kill('SIGTERM');
    await agent.stop();

    for (const rate of options.rates) {
      const row = await baselineRun(rate, options, generator, driver, template);
      process.stderr.write(`baseline run at ${format(rate)}/s: ${JSON.stringify(row)}\n`);
      baselineRows.push(row);
    }
    printResults(agentRows, baselineRows, options);
  } finally {
    if (consumer && consumer.exitCode === null) consumer.kill('SIGTERM');
    generator?.close();
    await agent.stop();
    execFileSync(process.execPath, [
      SIGIL,
      'uninstall',
      '--bpffs-dir',
      pinDir,
      '--state-dir',
      join(dir, 'state'),
    ]);
    rmSync(dir, { recursive: true, force: true });
    rmdirSync(cgroup);
  }
}

main().catch((error: Error) => {
  process.stderr.write(`events-kernel: ${error.stack ?? error.message}\n`);
  process.exitCode = 1;
});
