import { Command, InvalidArgumentError, Option } from 'commander';
import { readFileSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_PIN_DIR, removePinnedState } from '../kernel/datapath';
import { readPinnedStatus } from '../kernel/pinned-status';
import { readEnforcementReport, removeEnforcementReport } from '../enforce/enforcement-status';
import { EnforcementReport } from '../policy/enforcement-report';
import { RULE_KINDS } from '../policy/types';
import { probeEnforcers } from '../kernel/probe';
import { Agent } from '../enforce/agent';
import { DEFAULT_REPLAY_CAPACITY, EventHub } from '../events/event-hub';
import { createEventLog, EventLog, EventLogFormat } from '../events/event-log';
import { createMetrics } from '../events/metrics';
import { loadRegistrationFile } from '../identity/registration';
import { ConfigError, formatIssue } from '../util/config-error';
import {
  chooseDefault,
  DEFAULT_SOCKET,
  DEFAULT_STATE_DIR,
  EXAMPLE_POLICIES,
  EXAMPLE_REGISTRATION,
  NODE_POLICIES,
  NODE_REGISTRATION,
} from './defaults';
import { registerAppArmorCommands } from './apparmor-commands';
import { registerEventsCommand } from './events-command';
import { addGrpcListenOptions, GrpcListenFlags, grpcListenSettings } from './mtls-options';
import { registerPolicyCommands } from './policy-commands';
import { createLogger } from './logger';

interface RunOptions extends GrpcListenFlags {
  registration?: string;
  policy?: string[];
  socket: string;
  eventsLog: string;
  watch: boolean;
  node: string;
  logLevel: string;
  cgroup?: string;
  spireAdminSocket?: string;
  spireWorkloadApi?: string;
  pin: boolean;
  bpffsDir: string;
  stateDir: string;
  auditUnidentifiedExec: boolean;
  reportAllowedAccess: boolean;
  eventsFormat: EventLogFormat;
  replayBuffer: number;
  metricsAddress?: string;
}

async function runAgent(options: RunOptions): Promise<void> {
  const log = createLogger(options.logLevel);
  if (process.getuid?.() !== 0) {
    log.fatal(
      'sigil run must run as root: it loads and attaches BPF programs (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)',
    );
    process.exitCode = 1;
    return;
  }
  let grpcListen;
  try {
    grpcListen = grpcListenSettings(options);
  } catch (error) {
    log.fatal((error as Error).message);
    process.exitCode = 1;
    return;
  }
  // The event log subscribes before the agent starts, so it gets every event from the first.
  const hub = new EventHub(options.node, { replayCapacity: options.replayBuffer });
  let droppedLines = 0;
  let lostLines = 0;
  let writeErrors = 0;
  let lastWriteErrorReport = 0;
  let droppedByType = new Map<string, number>();
  let eventLog: EventLog;
  try {
    eventLog = createEventLog(options.eventsLog, {
      format: options.eventsFormat,
      onDrop: (lines, type, reason) => {
        if (reason === 'write-failed') {
          lostLines += lines;
          return;
        }
        droppedLines += lines;
        const key = type ?? 'unknown';
        droppedByType.set(key, (droppedByType.get(key) ?? 0) + lines);
      },
      onPageCacheError: (error) =>
        log.warn({ err: error }, `event log page cache left to the kernel: ${error.message}`),
      onError: (error) => {
        // The log opens the file again every second while writes fail; one warning per 10 s.
        writeErrors++;
        if (Date.now() - lastWriteErrorReport < 10_000) return;
        lastWriteErrorReport = Date.now();
        log.warn(
          { err: error, failures: writeErrors },
          `${error.message}: the lines not written are counted as dropped, and the file is opened again`,
        );
        writeErrors = 0;
      },
    });
  } catch (error) {
    log.fatal(`${(error as Error).message}; check --events-log`);
    process.exitCode = 1;
    return;
  }
  // Lines the event log dropped (a slow reader, failed writes), reported at most every 10 s and
  // once more when the agent stops, as closing a log that cannot be written drops what waits.
  const reportDroppedLines = () => {
    if (lostLines > 0) {
      log.warn({ lines: lostLines }, 'event log write failed: lines lost');
      lostLines = 0;
    }
    if (droppedLines === 0) return;
    const types = Object.fromEntries(droppedByType);
    log.warn({ lines: droppedLines, types }, 'event log reader too slow: lines dropped');
    droppedLines = 0;
    droppedByType = new Map();
  };
  setInterval(reportDroppedLines, 10_000).unref();
  hub.subscribe({ filter: {}, deliver: (event) => eventLog.write(event) });
  const metrics = createMetrics();
  metrics.attachHub(hub);
  if (options.metricsAddress) {
    try {
      const bound = await metrics.listen(options.metricsAddress);
      log.info({ address: `${bound.address}:${bound.port}` }, 'metrics listening on /metrics');
    } catch (error) {
      log.fatal({ err: error }, (error as Error).message);
      process.exitCode = 1;
      return;
    }
  }
  const registration = options.registration
    ? { path: options.registration, example: false }
    : chooseDefault(NODE_REGISTRATION, EXAMPLE_REGISTRATION);
  const policies = options.policy?.length
    ? options.policy.map((path) => ({ path, example: false }))
    : [chooseDefault(NODE_POLICIES, EXAMPLE_POLICIES)];
  if (registration.example && !options.spireAdminSocket)
    log.warn(`${NODE_REGISTRATION} not found; using the bundled example ${registration.path}`);
  if (policies.some((p) => p.example))
    log.warn(`${NODE_POLICIES} not found; using the bundled examples`);

  let agent: Agent;
  try {
    agent = await Agent.start({
      registrationFile: registration.path,
      policyFiles: policies.map((p) => p.path),
      socketPath: options.socket,
      watch: options.watch,
      node: options.node,
      cgroupPath: options.cgroup,
      spireAdminSocket: options.spireAdminSocket,
      spireWorkloadApi: options.spireWorkloadApi,
      grpcListen,
      pinDir: options.pin ? options.bpffsDir : null,
      stateDir: options.stateDir,
      auditUnidentifiedExec: options.auditUnidentifiedExec,
      reportAllowedAccess: options.reportAllowedAccess,
      hub,
      metrics,
      logger: log,
    });
  } catch (error) {
    if (error instanceof ConfigError) {
      for (const issue of error.issues) log.error(formatIssue(issue));
      log.fatal('invalid configuration; the agent did not start');
    } else {
      log.fatal({ err: error }, `agent failed to start: ${(error as Error).message}`);
    }
    process.exitCode = 1;
    return;
  }

  const shutdown = (signal: string) => {
    log.info(
      { signal },
      options.pin
        ? `stopping; the pinned programs in ${options.bpffsDir} keep enforcing until \`sigil uninstall\``
        : 'stopping; enforcement ends with the agent',
    );
    agent
      .stop()
      .then(() => Promise.all([metrics.close(), eventLog.close()]))
      .then(
        () => {
          reportDroppedLines();
          process.exit(0);
        },
        (error) => {
          reportDroppedLines();
          log.error({ err: error }, 'stop failed');
          process.exit(1);
        },
      );
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
  // logrotate and similar tools rename the event log, then send SIGHUP (Node would exit on it).
  process.on('SIGHUP', () => {
    log.info({ eventsLog: options.eventsLog }, 'SIGHUP: opening the event log again');
    eventLog.reopen();
  });
}

/** Prints the pinned enforcement state and the kernel's enforcers; exits 1 when nothing is pinned. */
function printStatus(pinDir: string, stateDir: string, json: boolean): void {
  const pinned = readPinnedStatus(pinDir);
  const enforcers = probeEnforcers();
  // The agent's report describes the rules it loaded; without pins, nothing enforces them any more.
  const enforcement = pinned ? readEnforcementReport(stateDir) : null;
  if (json) {
    process.stdout.write(`${JSON.stringify({ pinned, enforcers, enforcement }, null, 2)}\n`);
  } else if (!pinned) {
    process.stdout.write(`nothing pinned in ${pinDir}: Sigil does not enforce on this node\n`);
  } else {
    const agents = [...new Set(pinned.links.map((link) => link.agentPid))];
    process.stdout.write(`pinned state: ${pinDir}\n`);
    process.stdout.write(
      `  programs: ${
        pinned.links
          .map((link) => link.program)
          .sort()
          .join(', ') || 'none'
      }\n`,
    );
    process.stdout.write(`  attached by agent pid: ${agents.join(', ') || '-'}\n`);
    process.stdout.write(`  rule-set generation: ${pinned.generation ?? '-'}\n`);
    process.stdout.write(`  processes with an identity: ${pinned.identifiedProcesses ?? '-'}\n`);
    printEnforcement(enforcement, stateDir);
  }
  if (!json) {
    for (const report of enforcers) {
      const state = report.available
        ? 'the kernel allows it'
        : `unavailable: ${report.missing.join('; ')}`;
      process.stdout.write(`enforcer ${report.enforcer} (${report.purpose}): ${state}\n`);
    }
  }
  if (!pinned) process.exitCode = 1;
}

/** Prints the agent's report of which rules this node enforces, per kind and per rule. */
function printEnforcement(report: EnforcementReport | null, stateDir: string): void {
  if (!report) {
    process.stdout.write(`  rules: no enforcement report in ${stateDir} (give the agent's --state-dir)\n`);
    return;
  }
  process.stdout.write(`rules of generation ${report.generation} (${report.time}):\n`);
  for (const kind of RULE_KINDS) {
    const enforcer = report.kinds[kind];
    process.stdout.write(`  ${kind}: ${enforcer ? `enforced by ${enforcer}` : 'no enforcer on this node'}\n`);
    for (const rule of report.rules.filter((row) => row.kind === kind)) {
      const state = { enforce: 'enforce', audit: 'audit only', none: 'not applied' }[rule.state];
      process.stdout.write(`    ${rule.policy}/${rule.rule}: ${state} (${rule.file}:${rule.line})\n`);
    }
  }
}

/** Validates registration files, reporting the errors of every file. */
function checkRegistrationFiles(files: string[]): void {
  for (const file of files) {
    try {
      const registration = loadRegistrationFile(file);
      for (const warning of registration.warnings)
        process.stderr.write(`${formatIssue(warning)}\n`);
      const count = registration.entries.length;
      process.stdout.write(`${file}: ${count} ${count === 1 ? 'entry' : 'entries'}: valid\n`);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      for (const issue of error.issues) process.stderr.write(`${formatIssue(issue)}\n`);
      process.exitCode = 1;
    }
  }
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function parseCount(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError('expected a whole number of 0 or more');
  }
  return Number(value);
}

function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8'));
  return String(manifest.version);
}

export function buildProgram(): Command {
  const program = new Command('sigil')
    .description('Runtime enforcement by SPIFFE workload identity, with eBPF')
    .version(packageVersion(), '-V, --version', 'print the Sigil version');

  const run = program
    .command('run')
    .description(
      'run the node agent (as root): attest processes, enforce policies, stream audit events',
    )
    .option(
      '-r, --registration <file>',
      `registration file (default ${NODE_REGISTRATION}, else the bundled example)`,
    )
    .option(
      '-p, --policy <path>',
      `policy file or directory, repeatable (default ${NODE_POLICIES}, else the bundled examples)`,
      collect,
    )
    .option('-s, --socket <path>', 'unix socket of the audit gRPC service', DEFAULT_SOCKET)
    .option('-e, --events-log <path>', "where JSON lines of audit events go ('-' is stdout)", '-')
    .option('--no-watch', 'do not reload the registration and policy files when they change')
    .option('--node <name>', 'node name in events', hostname())
    .option(
      '--spire-admin-socket <path>',
      'get identities from SPIRE through this spire-agent admin socket instead of the registration file',
    )
    .option(
      '--spire-workload-api <address>',
      'SPIFFE Workload API address (unix:///path) where the agent fetches its own X.509-SVID',
    )
    .option(
      '--bpffs-dir <path>',
      'bpffs directory of the pinned programs and maps',
      DEFAULT_PIN_DIR,
    )
    .option('--no-pin', 'pin nothing: enforcement ends when the agent exits')
    .option('--state-dir <path>', 'directory of the agent state files', DEFAULT_STATE_DIR)
    .option(
      '--audit-unidentified-exec',
      'also report execs and exits of processes without a SPIFFE ID (every exec and exit on the node)',
      false,
    )
    .option(
      '--report-allowed-access',
      'with BPF LSM, also report the execs and file opens that rules allow (to record what a workload does)',
      false,
    )
    .addOption(
      new Option(
        '--events-format <format>',
        'format of the event log lines: json, or ocsf (OCSF 1.3.0)',
      )
        .choices(['json', 'ocsf'])
        .default('json'),
    )
    .option(
      '--replay-buffer <events>',
      'events kept for clients that resume by sequence number; 0 turns replay off',
      parseCount,
      DEFAULT_REPLAY_CAPACITY,
    )
    .option(
      '--metrics-address <host:port>',
      'serve Prometheus metrics on GET /metrics at this address, such as 127.0.0.1:9464 (default: off)',
    )
    .option(
      '--cgroup <path>',
      'cgroup v2 directory to attach the socket programs to (default: the cgroup2 root)',
    )
    .addOption(
      new Option('--log-level <level>', 'operational log level')
        .choices(['debug', 'info', 'warn', 'error'])
        .default('info'),
    );
  addGrpcListenOptions(run).action((options: RunOptions) => runAgent(options));

  registerEventsCommand(program);

  program
    .command('status')
    .description(
      'show what enforces on this node: the pinned programs, the rule-set generation, the enforcers the kernel allows',
    )
    .option(
      '--bpffs-dir <path>',
      'bpffs directory of the pinned programs and maps',
      DEFAULT_PIN_DIR,
    )
    .option('--state-dir <path>', 'directory of the agent state files', DEFAULT_STATE_DIR)
    .option('--json', 'print the status as JSON')
    .action((options: { bpffsDir: string; stateDir: string; json?: boolean }) =>
      printStatus(options.bpffsDir, options.stateDir, options.json === true),
    );

  program
    .command('uninstall')
    .description('remove the pinned programs and maps: enforcement stops on this node')
    .option(
      '--bpffs-dir <path>',
      'bpffs directory of the pinned programs and maps',
      DEFAULT_PIN_DIR,
    )
    .option('--state-dir <path>', 'directory of the agent state files', DEFAULT_STATE_DIR)
    .action((options: { bpffsDir: string; stateDir: string }) => {
      const removed = removePinnedState(options.bpffsDir);
      rmSync(join(options.stateDir, 'identities.jsonl'), { force: true });
      removeEnforcementReport(options.stateDir);
      process.stdout.write(
        removed
          ? `removed ${options.bpffsDir}: Sigil no longer enforces on this node (a running agent keeps its own programs until it exits)\n`
          : `nothing pinned in ${options.bpffsDir}\n`,
      );
    });

  const policy = program.command('policy').description('work with policy files');
  registerPolicyCommands(policy);

  registerAppArmorCommands(program.command('apparmor').description('generate AppArmor profiles'));

  const registration = program.command('registration').description('work with registration files');
  registration
    .command('check')
    .description('validate registration files; exits 1 on errors')
    .argument('<files...>')
    .action((files: string[]) => checkRegistrationFiles(files));

  return program;
}

export function main(argv: string[]): void {
  buildProgram()
    .parseAsync(argv)
    .catch((error: Error) => {
      process.stderr.write(`sigil: ${error.message}\n`);
      process.exitCode = 1;
    });
}
