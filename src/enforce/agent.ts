import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { listPids } from '../identity/process-info';
import { loadRegistrationFile, Registration } from '../identity/registration';
import { EgressCompiler } from '../policy/egress-compiler';
import {
  CompiledRuleSet,
  CompiledRuleSetChanges,
  RuleRef,
  SubjectSettings,
} from '../policy/compiled-rule-set';
import { loadPolicyFiles, PolicyFileCache } from '../policy/loader';
import { PolicySet } from '../policy/types';
import { subjectMatches } from '../policy/spiffe-selector';
import { ConfigError, ConfigIssue, formatIssue } from '../util/config-error';
import {
  AcceptRecord,
  BindRecord,
  forEachRecord,
  CgroupRecord,
  ExecRecord,
  ExitRecord,
  ConnectRecord,
  KernelRecord,
  MalformedRecord,
} from '../kernel/codec';
import { Datapath, KernelRuleSet, KernelRuleSetChanges } from '../kernel/datapath';
import { KernelSubject } from '../kernel/rule-maps';
import {
  DropReason,
  KernelAction,
  SETTINGS_REPORT_ALLOWED_ACCESS,
  SETTINGS_REPORT_UNIDENTIFIED_ACCEPTS,
} from '../kernel/layout';
import { ensureKernelFilesystems, findCgroup2Root } from '../kernel/mounts';
import { probeEnforcers } from '../kernel/probe';
import { EventHub } from '../events/event-hub';
import { AuditServer } from '../events/grpc-server';
import { TcpListenAddress } from '../events/mtls-server';
import { SpiffeIdAllowList } from '../identity/spiffe-id-allow-list';
import { MtlsEndpoint } from './mtls-endpoint';
import { decideAcceptRecord, ingressSelectsUnidentified } from './accept-decision';
import {
  acceptEvent,
  agentEvent,
  connectEvent,
  execEvent,
  exitEvent,
  lossEvent,
  observedBindEvent,
} from './event-builder';
import {
  bpfLsmUsable,
  dropEnforcedKindWarnings,
  enforcedRuleKinds,
  LsmEnforcer,
} from './lsm-enforcer';
import { LsmRecord } from '../kernel/lsm-layout';
import { TpDecisionRecord } from '../kernel/tp-layout';
import { TracepointEnforcer, tracepointKillUsable } from './tracepoint-enforcer';
import { kindEnforcers, publishEnforcementReport } from './enforcement-status';
import { CacheState, ProcessCache } from './process-cache';
import { AppArmorEnforcer, appArmorEnabled } from './apparmor-enforcer';
import { IdentityRegistry } from './identity-registry';
import { ConfigWatcher } from './config-watcher';
import { socketInUse } from './single-instance';
import {
  IdentitySource,
  RegistrationIdentitySource,
  SpireAgentIdentitySource,
} from './identity-source';
import { SpireUnavailableError, validateX509Svid, WorkloadApiClient } from '../identity/spire';
import { AgentState, EventDraft, KernelDropReason } from '../events/audit-event';
import { SigilMetrics } from '../events/metrics';
import { sigilVersion } from '../events/ocsf';

export interface AgentOptions {
  /** Registration file of the embedded identity source; ignored when spireAdminSocket is set. */
  registrationFile: string;
  /** spire-agent admin socket: when set, SPIRE is the identity source. */
  spireAdminSocket?: string;
  policyFiles: string[];
  /** Unix socket of the gRPC audit service. */
  socketPath: string;
  /** Path of the linked BPF object; defaults to the build output. */
  bpfObject?: string;
  /** cgroup v2 directory the socket programs attach to; defaults to the cgroup2 root. */
  cgroupPath?: string;
  /** Reload the registration and policy files when they change. */
  watch: boolean;
  /**
   * bpffs directory for pinned maps and links, so enforcement outlives the
   * agent and a restarted agent adopts it; null keeps nothing pinned.
   */
  pinDir: string | null;
  /** Directory of the agent's state files (the SPIFFE ID to id journal). */
  stateDir: string;
  /**
   * Publish exec and exit events of processes without a SPIFFE ID too (every
   * exec and exit on the node). Without it, an unidentified process's exit is
   * published only when an earlier event named the process.
   */
  auditUnidentifiedExec?: boolean;
  /**
   * Report the execs and file opens of identified processes that no Audit or Block rule or
   * posture applied to (BPF LSM only), to record what a workload does.
   */
  reportAllowedAccess?: boolean;
  /** Event hub to publish to; pass one to subscribe before the first event. */
  hub?: EventHub;
  /** Prometheus metrics to keep current (rule and identity counts, stream clients). */
  metrics?: SigilMetrics;
  /** SPIFFE Workload API address (unix:///path): the agent fetches its own X.509-SVID there. */
  spireWorkloadApi?: string;
  /** Also serve the audit service on TCP with mTLS, with the SVID from spireWorkloadApi. */
  grpcListen?: {
    address: TcpListenAddress;
    /** SPIFFE IDs of the clients that may call. */
    allowList: SpiffeIdAllowList;
    /** How long the start waits for the agent's X.509-SVID. */
    svidTimeoutMs?: number;
  };
  node?: string;
  logger: Logger;
}

// /proc/<pid>/stat counts start time in clock ticks; USER_HZ is 100 on Linux.
const NS_PER_CLOCK_TICK = 10_000_000n;
// Rule tables kept for decoding records of generations that are no longer active.
const KEPT_GENERATIONS = 8;
const DROP_POLL_MS = 1000;
// Processes attested at once while scanning /proc, which bounds the streams open on the spire-agent.
const SCAN_CONCURRENCY = 32;
// Minimum time between two warnings about live processes evicted from the process cache.
const EVICTION_WARNING_MS = 60_000;
const KERNEL_DROP_REASONS: Record<number, KernelDropReason> = {
  [DropReason.EventsRingBufferFull]: 'events-ringbuf-full',
  [DropReason.ProcessRingBufferFull]: 'process-ringbuf-full',
};

/** Loads the registration file, throwing ConfigError with every issue in it. */
function loadRegistration(file: string): Registration {
  return loadRegistrationFile(file);
}

/**
 * The node agent: keeps the kernel's identity and rule maps in step with the
 * registration and policy files, and turns kernel records into audit events.
 */
export class Agent {
  readonly hub: EventHub;
  private readonly log: Logger;
  private registry!: IdentityRegistry;
  private readonly processes = new ProcessCache({
    onEvict: (state) => this.processEvicted(state),
  });
  private evictedLive = 0;
  private lastEvictionWarning = 0;
  private readonly rulesByGeneration = new Map<number, RuleRef[]>();
  private registration: Registration | null = null;
  private identities!: IdentitySource;
  /** Processes SPIRE could not attest while it was unavailable, with their start times. */
  private readonly unattested = new Map<number, bigint | null>();
  /** Policy files parsed at the last load, so a reload parses only the files that changed. */
  private readonly parsedPolicyFiles = new PolicyFileCache();
  private policySet!: PolicySet;
  private datapath: Datapath | null = null;
  private readonly egressCompiler = new EgressCompiler();
  private lsm: LsmEnforcer | null = null;
  private tracepoint: TracepointEnforcer | null = null;
  private apparmor: AppArmorEnforcer | null = null;
  private server: AuditServer | null = null;
  private mtls: MtlsEndpoint | null = null;
  private watcher: ConfigWatcher | null = null;
  private dropTimer: NodeJS.Timeout | null = null;
  private ownSvidWatch: { close(): void } | null = null;
  private ownSpiffeId: string | null = null;
  private reportedDrops: bigint[] = [];
  private malformed = 0;

  private constructor(private readonly options: AgentOptions) {
    this.log = options.logger;
    this.hub = options.hub ?? new EventHub(options.node);
  }

  /**
   * Starts the agent. Throws ConfigError for an invalid registration or policy
   * file, and Error for kernel failures; on a throw nothing stays attached.
   */
  static async start(options: AgentOptions): Promise<Agent> {
    const agent = new Agent(options);
    try {
      await agent.startUp();
    } catch (error) {
      await agent.stop();
      throw error;
    }
    return agent;
  }

  private async startUp(): Promise<void> {
    const { options, log } = this;
    if (await socketInUse(options.socketPath)) {
      throw new Error(
        `another Sigil agent is serving ${options.socketPath}: stop it first, or give this one ` +
          'its own --socket, --bpffs-dir and --state-dir',
      );
    }
    for (const mounted of ensureKernelFilesystems()) log.info(`mounted ${mounted}`);

    // Ids in pinned maps keep their meaning only with the journal written next to them.
    const journal = join(options.stateDir, 'identities.jsonl');
    const pinnedMaps = options.pinDir !== null && existsSync(join(options.pinDir, 'maps'));
    if (!pinnedMaps) rmSync(journal, { force: true });
    this.registry = new IdentityRegistry(journal);

    // An invalid file stops the agent before it loads or attaches any program. Every error of
    // both kinds of file is reported at once.
    const issues: ConfigIssue[] = [];
    try {
      this.policySet = loadPolicyFiles(options.policyFiles, this.parsedPolicyFiles);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      issues.push(...error.issues);
    }
    try {
      this.identities = this.createIdentitySource();
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      issues.push(...error.issues);
    }
    if (issues.length > 0) throw new ConfigError(issues);
    // Without an SVID the TCP listener cannot authenticate, so the agent does not start, and
    // this runs before any program is loaded.
    if (options.grpcListen) {
      if (!options.spireWorkloadApi) {
        throw new Error(
          '--grpc-listen needs --spire-workload-api: the TCP listener presents the agent X.509-SVID',
        );
      }
      const workloadApi = options.spireWorkloadApi;
      this.mtls = await MtlsEndpoint.create({ ...options.grpcListen, workloadApi, logger: log });
    }
    const lsmUsable = bpfLsmUsable(options.pinDir, log);
    const tracepointUsable = !lsmUsable && tracepointKillUsable(options.pinDir, log);
    dropEnforcedKindWarnings(
      this.policySet,
      enforcedRuleKinds(lsmUsable || tracepointUsable, appArmorEnabled()),
    );
    for (const warning of this.policySet.warnings) log.warn(formatIssue(warning));

    this.reportEnforcers();

    const datapath = Datapath.load(options.bpfObject, options.pinDir);
    if (datapath.adoptedPinnedState) {
      log.info(
        { pinDir: options.pinDir, generation: datapath.currentGeneration },
        'adopted the pinned programs and maps of an earlier agent',
      );
    }
    this.datapath = datapath;
    // Publishes empty rule maps for the first apply, so its outer-map writes happen here.
    datapath.prepareStandby();
    if (lsmUsable) {
      // The LSM socket_connect hook decides the node's connects, and the cgroup connect programs
      // stay off, so each connect is decided and reported once. With --cgroup, enforcement is
      // meant for one cgroup subtree, which only the cgroup programs can limit it to.
      this.lsm = LsmEnforcer.start({
        pinDir: options.pinDir as string,
        socketHooks: options.cgroupPath === undefined,
        logger: log,
        spiffeIdOf: (id) => this.registry.spiffeIdOf(id),
        executableOf: (tgid) => this.processes.executable(tgid),
      });
    } else if (tracepointUsable) {
      this.tracepoint = TracepointEnforcer.start({
        pinDir: options.pinDir as string,
        logger: log,
        spiffeIdOf: (id) => this.registry.spiffeIdOf(id),
        executableOf: (tgid) => this.processes.executable(tgid),
      });
    }
    this.applyPolicies();
    if (appArmorEnabled()) this.apparmor = new AppArmorEnforcer({ logger: log });
    await this.apparmor?.apply(this.policySet, this.registration);
    this.reportEnforcement();
    datapath.startEvents((batch) => this.handleBatch(batch));

    // Track fork and exec before reading /proc, so no process falls between the two.
    datapath.attachProcessTracking();
    await this.attestRunningProcesses();
    const cgroupPath = options.cgroupPath ?? findCgroup2Root();
    const lsmConnect = this.lsm !== null && options.cgroupPath === undefined;
    datapath.attachSocketPrograms(cgroupPath, { connect: !lsmConnect });
    datapath.attachAcceptTracking();
    datapath.releaseEarlierLinks();
    log.info(
      { cgroup: cgroupPath, pinDir: options.pinDir, connectEnforcer: lsmConnect ? 'bpf-lsm' : 'cgroup-sock' },
      lsmConnect ? 'attached bind programs; BPF LSM decides connects' : 'attached connect and bind programs',
    );

    this.server = new AuditServer(this.hub, options.socketPath, { observer: options.metrics });
    await this.server.start();
    log.info({ socket: options.socketPath }, 'audit gRPC service listening');
    await this.mtls?.listen(this.server);

    this.dropTimer = setInterval(() => this.reportDrops(), DROP_POLL_MS);
    this.dropTimer.unref();
    if (options.watch) {
      const files = this.registration
        ? [options.registrationFile, ...options.policyFiles]
        : options.policyFiles;
      this.watcher = new ConfigWatcher(files, (changed) => void this.reload(changed));
    }
    if (options.spireWorkloadApi) this.watchOwnSvid(options.spireWorkloadApi);
    this.publishStatus(
      'started',
      `agent started: ${this.registry.size} identities, ${this.ruleCount()} rules`,
    );
    log.info(
      {
        identities: this.registry.size,
        rules: this.ruleCount(),
        generation: datapath.currentGeneration,
      },
      'agent started',
    );
  }

  /** Creates the identity source: SPIRE when configured, else the registration file. */
  private createIdentitySource(): IdentitySource {
    const { options, log } = this;
    let source: IdentitySource;
    if (options.spireAdminSocket) {
      source = new SpireAgentIdentitySource(options.spireAdminSocket);
      log.info(
        { adminSocket: options.spireAdminSocket },
        'identity source: SPIRE Delegated Identity API',
      );
    } else {
      const registration = loadRegistration(options.registrationFile);
      for (const warning of registration.warnings) log.warn(formatIssue(warning));
      for (const entry of registration.entries) this.registry.idFor(entry.spiffeId);
      this.registration = registration;
      source = new RegistrationIdentitySource(registration);
      log.info({ file: options.registrationFile }, 'identity source: registration file');
    }
    source.on('change', (pid, spiffeId) => this.handleIdentityChange(pid, spiffeId));
    source.on('status', (status) => {
      if (status.state === 'available') {
        log.info('SPIRE available');
        this.publishStatus('recovered', 'SPIRE available');
        void this.attestUnattested();
        return;
      }
      const detail = `attempt ${status.attempt}, next in ${status.retryInMs} ms: ${status.error.message}`;
      log.warn(
        { attempt: status.attempt, retryInMs: status.retryInMs, err: status.error },
        'SPIRE unavailable; enforcing with the identities already known',
      );
      this.publishStatus(
        'degraded',
        `SPIRE unavailable; enforcing with the identities already known (${detail})`,
      );
    });
    return source;
  }

  private publishAgentEvent(message: string): void {
    this.hub.publish({ type: 'agent', ktimeNs: '0', message });
  }

  /** Publishes an agent status event and brings the rule and identity gauges up to date. */
  private publishStatus(state: AgentState, message: string): void {
    this.options.metrics?.setRules(this.ruleCount());
    this.options.metrics?.setIdentities(this.registry.size);
    const status = {
      version: sigilVersion(),
      identities: this.registry.size,
      rules: this.ruleCount(),
    };
    this.hub.publish(agentEvent(state, status, message));
  }

  /**
   * Follows the agent's own X.509-SVID on the Workload API, validates it
   * against its trust domain's bundle and reports it. The SVID is what the agent
   * presents to SPIRE-authenticated peers.
   */
  private watchOwnSvid(address: string): void {
    const client = new WorkloadApiClient({ address });
    const watch = client.watchX509Svids();
    this.ownSvidWatch = watch;
    watch.on('update', (update) => {
      const svid = update.svids[0];
      if (!svid) {
        this.log.warn('the Workload API issued no X.509-SVID to the agent');
        return;
      }
      try {
        validateX509Svid(svid.chain, update.bundles);
      } catch (error) {
        this.log.error(
          { err: error, spiffeId: svid.spiffeId },
          'the agent X.509-SVID is invalid; ignored',
        );
        return;
      }
      this.ownSpiffeId = svid.spiffeId;
      const expires = svid.chain[0].validTo;
      this.log.info({ spiffeId: svid.spiffeId, expires }, 'agent X.509-SVID received');
      this.publishAgentEvent(`agent X.509-SVID ${svid.spiffeId}, valid until ${expires}`);
    });
    watch.on('retry', (retry) => {
      this.log.warn(
        { attempt: retry.attempt, err: retry.error },
        'Workload API unavailable; retrying',
      );
    });
  }

  /** The agent's own SPIFFE ID from its X.509-SVID, once the Workload API has issued one. */
  get spiffeId(): string | null {
    return this.ownSpiffeId;
  }

  /** Applies an identity change that SPIRE reported for a tracked process. */
  private handleIdentityChange(pid: number, spiffeId: string | null): void {
    const id = spiffeId ? this.idForNewOrKnown(spiffeId) : 0;
    try {
      this.datapath?.setIdentity(pid, id);
    } catch (error) {
      this.log.error({ pid, err: error }, 'write identity to the kernel map failed');
      return;
    }
    this.processes.setSpiffeId(pid, spiffeId);
    this.log.info({ pid, spiffeId }, 'identity changed');
    this.publishAgentEvent(`identity of pid ${pid} changed to ${spiffeId ?? 'none'}`);
  }

  /**
   * Returns the id of a SPIFFE ID. A SPIFFE ID seen for the first time may be
   * selected by policies, so the rule set is recompiled before the caller
   * writes the id to the kernel, and the process is never enforced without
   * its rules.
   */
  private idForNewOrKnown(spiffeId: string): number {
    const known = this.registry.size;
    const id = this.registry.idFor(spiffeId);
    if (this.registry.size !== known && this.datapath) {
      try {
        this.applyPolicies();
      } catch (error) {
        this.log.error({ spiffeId, err: error }, 'recompile rules for a new SPIFFE ID failed');
      }
    }
    return id;
  }

  private async attestUnattested(): Promise<void> {
    const pending = [...this.unattested];
    this.unattested.clear();
    for (const [pid, startTime] of pending) await this.attestAndWrite(pid, startTime);
  }

  private reportEnforcers(): void {
    for (const report of probeEnforcers()) {
      const fields = {
        enforcer: report.enforcer,
        purpose: report.purpose,
        missing: report.missing,
      };
      if (report.used) this.log.info(fields, `enforcer ${report.enforcer} in use`);
      else if (report.available)
        this.log.info(fields, `enforcer ${report.enforcer} available but not used`);
      else
        this.log.warn(
          fields,
          `enforcer ${report.enforcer} unavailable: ${report.missing.join('; ')}`,
        );
    }
  }

  private ruleCount(): number {
    return this.rulesByGeneration.get(this.datapath?.currentGeneration ?? 0)?.length ?? 0;
  }

  /**
   * Compiles the current policy set against the known identities and swaps it in. Where only
   * some policies changed, only their subjects are compiled. After the first apply only the
   * changed map entries are written, into the standby maps, which are prepared after the switch.
   */
  private applyPolicies(): void {
    const datapath = this.datapath as Datapath;
    // SPIFFE IDs a policy names get ids now, so their rules exist before any process has them.
    for (const id of exactSpiffeIds(this.policySet)) this.registry.idFor(id);
    const { compiled, changes } = this.egressCompiler.compile(
      this.policySet,
      this.registry.entries(),
    );
    const lsmHooks = (this.lsm ?? this.tracepoint)?.prepare(this.policySet, this.registry.entries());
    let settingsFlags = this.options.reportAllowedAccess ? SETTINGS_REPORT_ALLOWED_ACCESS : 0;
    if (ingressSelectsUnidentified(this.policySet)) settingsFlags |= SETTINGS_REPORT_UNIDENTIFIED_ACCEPTS;
    let generation: number;
    try {
      generation =
        changes && datapath.canApplyChanges
          ? datapath.applyRuleSetChanges(toKernelChanges(changes), settingsFlags, lsmHooks)
          : datapath.applyRuleSet(toKernelRuleSet(compiled), settingsFlags, lsmHooks);
    } catch (error) {
      // The kernel keeps the previous set, which the compiler's state no longer describes.
      this.egressCompiler.reset();
      throw error;
    }
    this.rulesByGeneration.set(generation, compiled.rules);
    this.rulesByGeneration.delete(generation - KEPT_GENERATIONS);
    setImmediate(() => this.prepareStandby(datapath));
  }

  private prepareStandby(datapath: Datapath): void {
    if (this.datapath !== datapath) return;
    try {
      datapath.prepareStandby();
    } catch (error) {
      this.log.error(
        { err: error },
        'preparing the standby rule maps failed; the next policy change is applied whole',
      );
    }
  }

  /** Attests every running process and writes its identity; two passes catch forks during the first. */
  private async attestRunningProcesses(): Promise<void> {
    const seen = new Set<number>([process.pid]);
    for (let pass = 0; pass < 2; pass++) {
      const pids = listPids().filter((pid) => !seen.has(pid));
      for (const pid of pids) seen.add(pid);
      for (let i = 0; i < pids.length; i += SCAN_CONCURRENCY) {
        await Promise.all(
          pids.slice(i, i + SCAN_CONCURRENCY).map((pid) => this.attestAndWrite(pid, null)),
        );
      }
    }
  }

  /**
   * Attests one process and writes its identity id (0 when no entry matches).
   * Returns the SPIFFE ID, or undefined when the process could not be attested
   * because it is gone, replaced, a kernel thread, or SPIRE is unavailable.
   * The process then keeps the identity it has in the kernel.
   */
  private async attestAndWrite(
    pid: number,
    expectedStartTime: bigint | null,
  ): Promise<string | null | undefined> {
    let result;
    try {
      result = await this.identities.attest(pid, expectedStartTime);
    } catch (error) {
      if (error instanceof SpireUnavailableError) this.unattested.set(pid, expectedStartTime);
      // Such as EACCES on /proc/1/exe inside a sandbox.
      else this.log.debug({ pid, err: error }, 'attest process failed');
      return undefined;
    }
    if (!result || result.executable === null) return undefined;
    const id = result.spiffeId ? this.idForNewOrKnown(result.spiffeId) : 0;
    this.processes.attested(pid, result.startTimeTicks, result.executable, result.spiffeId);
    try {
      this.datapath?.setIdentity(pid, id, 0, result.startTimeTicks);
    } catch (error) {
      this.log.error({ pid, err: error }, 'write identity to the kernel map failed');
    }
    return result.spiffeId;
  }

  /** Logs and stores which rules this node enforces, per kind and per rule. */
  private reportEnforcement(): void {
    let pathEnforcer: 'bpf-lsm' | 'tracepoint-kill' | null = null;
    if (this.lsm) pathEnforcer = 'bpf-lsm';
    else if (this.tracepoint) pathEnforcer = 'tracepoint-kill';
    const generation = this.datapath?.currentGeneration ?? 0;
    const kinds = kindEnforcers(
      pathEnforcer,
      this.lsm !== null && this.options.cgroupPath === undefined,
      this.apparmor !== null,
    );
    publishEnforcementReport(this.log, this.options.stateDir, this.policySet.policies, kinds, generation);
  }

  private handleBatch(batch: Buffer): void {
    const decoder = this.lsm ?? this.tracepoint;
    // One record at a time, so each becomes garbage before the next is decoded.
    if (decoder) decoder.forEachRecord(batch, this.visitRecord);
    else forEachRecord(batch, this.visitRecord);
  }

  private readonly visitRecord = (record: KernelRecord | MalformedRecord | LsmRecord | TpDecisionRecord) => {
    try {
      this.handleRecord(record);
    } catch (error) {
      this.log.error({ err: error, record: record.type }, 'handle kernel record failed');
    }
  };

  private handleRecord(
    record: KernelRecord | MalformedRecord | LsmRecord | TpDecisionRecord,
  ): void {
    switch (record.type) {
      case 'fork':
        this.processes.fork({
          tgid: record.tgid,
          startTimeTicks: record.startBoottimeNs / NS_PER_CLOCK_TICK,
          ppid: record.ppid,
          parentStartTimeTicks: record.parentStartBoottimeNs / NS_PER_CLOCK_TICK,
        });
        return;
      case 'exec':
        this.handleExec(record).catch((error) =>
          this.log.error({ err: error, pid: record.tgid }, 'handle exec record failed'),
        );
        return;
      case 'exit':
        return this.handleExit(record);
      case 'cgroup':
        this.handleCgroupMove(record).catch((error) =>
          this.log.error({ err: error, pid: record.pid }, 'handle cgroup move record failed'),
        );
        return;
      case 'connect':
        return this.handleConnect(record);
      case 'bind':
        return this.handleBind(record);
      case 'accept':
        return this.handleAccept(record);
      case 'exec-decision':
      case 'file-decision': {
        const draft = this.lsm?.eventFor(record);
        if (draft) this.publishProcessEvent(draft);
        return;
      }
      case 'tp-exec-decision':
      case 'tp-file-decision':
        if (this.tracepoint) this.hub.publish(this.tracepoint.eventFor(record));
        return;
      case 'malformed':
        this.malformed++;
        this.log.warn({ reason: record.reason }, 'skipped a malformed kernel record');
        this.hub.publish({
          type: 'loss',
          ktimeNs: '0',
          loss: { where: 'decode', count: 1 },
          message: `skipped a malformed kernel record: ${record.reason}`,
        });
        return;
    }
  }

  /**
   * Attests a process again after it moved to another cgroup, since a cgroup:path selector
   * may give it another identity there. Threads moved on their own are left to their
   * process's next attestation.
   */
  private async handleCgroupMove(record: CgroupRecord): Promise<void> {
    if (tgidOf(record.pid) !== record.pid) return;
    const before = this.processes.find(record.pid, null)?.spiffeId ?? null;
    const after = await this.attestAndWrite(record.pid, null);
    if (after === undefined || (after ?? null) === (before ?? null)) return;
    this.log.info(
      { pid: record.pid, cgroupId: record.dstId.toString(), before, after },
      'identity changed after a cgroup move',
    );
    this.publishAgentEvent(
      `identity of pid ${record.pid} changed to ${after ?? 'none'} after a move to cgroup ${record.dstId}`,
    );
  }

  private async handleExec(record: ExecRecord): Promise<void> {
    const startTicks = record.startBoottimeNs / NS_PER_CLOCK_TICK;
    // The path given to execve() is the executable until attestation reads /proc/<pid>/exe.
    this.processes.exec({
      tgid: record.tgid,
      startTimeTicks: startTicks,
      ppid: record.ppid,
      parentStartTimeTicks: record.parentStartBoottimeNs / NS_PER_CLOCK_TICK,
      executable: record.filename,
      comm: record.comm,
      uid: record.uid,
      gid: record.gid,
      cgroupId: record.cgroupId.toString(),
    });
    const spiffeId = await this.attestAndWrite(record.tgid, startTicks);
    // Execs of processes without an identity are most of a node's execs; they are opt-in.
    if (!spiffeId && !this.options.auditUnidentifiedExec) return;
    const executable = this.processes.executable(record.tgid) ?? record.filename;
    this.publishProcessEvent(execEvent(record, spiffeId ?? null, executable));
  }

  /**
   * Publishes the exit of a process that had an identity or was named by an
   * earlier event. Other exits only update the process cache, so that a
   * node's short-lived helper processes do not flood the stream.
   */
  private handleExit(record: ExitRecord): void {
    this.identities.forget(record.tgid);
    this.unattested.delete(record.tgid);
    const process = this.processes.exit(record.tgid, record.startBoottimeNs / NS_PER_CLOCK_TICK);
    if (!process) return;
    if (!process.spiffeId && !process.reported && !this.options.auditUnidentifiedExec) return;
    this.hub.publish(
      exitEvent(record, {
        spiffeId: process.spiffeId,
        executable: process.executable,
        ppid: process.ppid,
        uid: process.uid ?? 0,
        gid: process.gid ?? 0,
        comm: process.comm,
        cgroupId: process.cgroupId || '0',
        ancestry: this.processes.ancestry(record.tgid, process.ppid),
      }),
    );
  }

  /** Publishes a bind by a process with an identity. */
  private handleBind(record: BindRecord): void {
    this.publishProcessEvent(
      observedBindEvent(record, {
        subject: this.registry.spiffeIdOf(record.subjectId),
        executable: this.processes.executable(record.tgid),
      }),
    );
  }

  /** Publishes an accepted connection with the decision of the ingress rules, which no enforcer applies. */
  private handleAccept(record: AcceptRecord): void {
    const subject = this.registry.spiffeIdOf(record.subjectId);
    const peer = this.registry.spiffeIdOf(record.peerId);
    this.publishProcessEvent(
      acceptEvent(record, {
        subject,
        peer,
        executable: this.processes.executable(record.tgid),
        decision: decideAcceptRecord(this.policySet, record, subject, peer),
      }),
    );
  }

  /**
   * Publishes an event about a process, with its ancestry from the process
   * cache, and marks the process so its exit is published too.
   */
  private publishProcessEvent(draft: EventDraft): void {
    const process = draft.process;
    if (process) {
      const tgid = process.tgid || process.pid;
      if (!process.ancestry?.length) {
        const ancestry = this.processes.ancestry(tgid, process.ppid);
        // A frozen process is shared by several events, so it gets a copy with the ancestry.
        if (ancestry.length > 0 && Object.isFrozen(process)) draft.process = { ...process, ancestry };
        else if (ancestry.length > 0) process.ancestry = ancestry;
      }
      this.processes.markReported(tgid);
    }
    this.hub.publish(draft);
  }

  /** Counts an eviction from the process cache, and warns at most once a minute about live ones. */
  private processEvicted(state: CacheState): void {
    this.options.metrics?.processCacheEvicted(state, 1);
    if (state !== 'live') return;
    this.evictedLive++;
    const now = Date.now();
    if (now - this.lastEvictionWarning < EVICTION_WARNING_MS) return;
    this.lastEvictionWarning = now;
    this.log.warn(
      { evicted: this.evictedLive },
      'process cache full: evicted live processes, whose descendants lose that part of their ancestry',
    );
    this.evictedLive = 0;
  }

  private handleConnect(record: ConnectRecord): void {
    const rules = this.rulesByGeneration.get(record.generation);
    const rule = record.reason === 1 ? rules?.[record.ruleIndex] : undefined;
    const subjectPolicy = record.reason === 2 ? this.postureSource(record.subjectId) : undefined;
    this.publishProcessEvent(
      connectEvent(record, {
        subject: this.registry.spiffeIdOf(record.subjectId),
        peer: this.registry.spiffeIdOf(record.peerId),
        executable: this.processes.executable(record.tgid),
        // Here rather than in publishProcessEvent, so connectEvent can reuse a frozen process.
        ancestry: this.processes.ancestry(record.tgid, record.ppid),
        rule,
        posturePolicy: subjectPolicy,
      }),
    );
  }

  /** Names the policies whose posture decided for a subject, for posture decisions. */
  private postureSource(subjectId: number): string | undefined {
    const spiffeId = subjectId === 0 ? null : this.registry.spiffeIdOf(subjectId);
    if (subjectId !== 0 && !spiffeId) return undefined;
    const names = this.policySet.policies
      .filter((policy) => subjectMatches(policy.subjectSelector, spiffeId))
      .map((policy) => policy.name);
    return names.length ? names.join(',') : undefined;
  }

  /**
   * Reports the kernel's drop counters per reason as loss events, and brings
   * the ring-buffer fill and process cache gauges up to date. Runs about once a second.
   */
  private reportDrops(): void {
    if (!this.datapath) return;
    this.updateGauges(this.datapath);
    let drops: bigint[];
    try {
      drops = this.datapath.readDrops();
    } catch (error) {
      this.log.error({ err: error }, 'read kernel drop counters failed');
      return;
    }
    drops.forEach((total, index) => {
      const previous = this.reportedDrops[index] ?? 0n;
      if (total === previous) return;
      this.reportedDrops[index] = total;
      const count = Number(total - previous);
      const reason = KERNEL_DROP_REASONS[index];
      if (index === DropReason.ProcessRingBufferFull) {
        // Lost exec records leave processes with a pre-exec identity, and lost fork and exit
        // records leave gaps in the process cache: attest every process again.
        this.processes.pruneGone();
        this.attestRunningProcesses().catch((error) =>
          this.log.error({ err: error }, 'attest processes after dropped records failed'),
        );
      }
      this.log.warn(
        { count, total: total.toString(), reason },
        'kernel ring buffer full: records dropped',
      );
      const ring = index === DropReason.ProcessRingBufferFull ? 'process' : 'decision';
      const draft = lossEvent(
        'kernel-ringbuf',
        count,
        `${count} kernel ${ring} records were dropped because their ring buffer was full`,
      );
      if (draft.loss && reason) draft.loss.reason = reason;
      this.hub.publish(draft);
    });
  }

  private updateGauges(datapath: Datapath): void {
    const metrics = this.options.metrics;
    if (!metrics) return;
    const cache = this.processes.size;
    metrics.setProcessCacheSize(cache.live, cache.exited);
    try {
      const fill = datapath.ringFill();
      metrics.setRingBufferFill('process', fill.process);
      metrics.setRingBufferFill('events', fill.events);
    } catch (error) {
      this.log.error({ err: error }, 'read ring buffer positions failed');
    }
  }

  /**
   * Reloads changed files. A file with errors is rejected with every issue in
   * the log, and the last good registration and policies keep enforcing.
   */
  async reload(changed: string[]): Promise<void> {
    const registrationChanged =
      this.registration !== null && changed.includes(this.options.registrationFile);
    let registration = this.registration;
    let policySet = this.policySet;
    try {
      if (registrationChanged) registration = loadRegistration(this.options.registrationFile);
      policySet = loadPolicyFiles(this.options.policyFiles, this.parsedPolicyFiles);
    } catch (error) {
      this.rejectReload(error);
      return;
    }

    dropEnforcedKindWarnings(
      policySet,
      enforcedRuleKinds(this.lsm !== null || this.tracepoint !== null, this.apparmor !== null),
    );
    for (const warning of policySet.warnings) this.log.warn(formatIssue(warning));
    const previous = { registration: this.registration, policySet: this.policySet };
    try {
      this.registration = registration;
      this.policySet = policySet;
      if (registrationChanged && registration) {
        for (const entry of registration.entries) this.registry.idFor(entry.spiffeId);
      }
      this.applyPolicies();
      this.reportEnforcement();
    } catch (error) {
      Object.assign(this, previous);
      this.rejectReload(error);
      return;
    }
    await this.apparmor?.apply(policySet, registration);
    if (
      registrationChanged &&
      registration &&
      this.identities instanceof RegistrationIdentitySource
    ) {
      this.identities.setRegistration(registration);
      await this.attestRunningProcesses();
    }
    const generation = this.datapath?.currentGeneration;
    this.log.info(
      { files: changed, generation, rules: this.ruleCount() },
      'configuration reloaded',
    );
    this.publishStatus(
      'reloaded',
      `configuration reloaded: generation ${generation}, ${this.ruleCount()} rules`,
    );
  }

  private rejectReload(error: unknown): void {
    const detail =
      error instanceof ConfigError ? error.issues.map(formatIssue) : [(error as Error).message];
    this.log.error(
      { errors: detail },
      'configuration rejected; the last good configuration stays in force',
    );
    this.publishStatus(
      'rejected',
      `configuration rejected; the last good configuration stays in force: ${detail.join('; ')}`,
    );
  }

  /** Returns the SPIFFE ID the kernel map holds for a process, or null. */
  identityOf(pid: number): string | null {
    const entry = this.datapath?.getIdentity(pid);
    return entry ? this.registry.spiffeIdOf(entry.id) : null;
  }

  /** Stops watching, serving and enforcing. Enforcement ends with this call. */
  async stop(): Promise<void> {
    if (this.server) this.publishStatus('stopping', 'agent stopping');
    this.watcher?.close();
    this.watcher = null;
    this.ownSvidWatch?.close();
    this.ownSvidWatch = null;
    this.mtls?.close();
    this.mtls = null;
    this.identities?.close();
    if (this.dropTimer) clearInterval(this.dropTimer);
    this.dropTimer = null;
    await this.server?.stop();
    this.server = null;
    this.lsm?.close();
    this.lsm = null;
    this.tracepoint?.close();
    this.tracepoint = null;
    this.datapath?.close();
    this.datapath = null;
  }
}

/** Returns every exact SPIFFE ID the policies name as subject or peer. */
function exactSpiffeIds(set: PolicySet): string[] {
  const ids: string[] = [];
  for (const policy of set.policies) {
    // policy.subject represents an unidentified subject as the empty SPIFFE ID, which has no id.
    if (policy.subjectSelector.kind === 'spiffeId') ids.push(policy.subjectSelector.spiffeId);
    for (const rule of policy.egress) {
      if (rule.to.kind === 'peer' && rule.to.peer.kind === 'spiffeId')
        ids.push(rule.to.peer.spiffeId);
    }
  }
  return ids;
}

/** Converts the policy compiler's output to the datapath's input. */
export function toKernelRuleSet(compiled: CompiledRuleSet): KernelRuleSet {
  return {
    subjects: [...compiled.subjects].map(([id, settings]) => kernelSubject(id, settings)),
    peerRules: [],
    peerRulesBySubject: [...compiled.peerRules].map(([subject, { peers, lists }]) => ({
      subject,
      peers,
      lists,
    })),
    cidrRules: compiled.cidrRules,
  };
}

/** Converts the incremental compiler's changes to the datapath's input. */
export function toKernelChanges(changes: CompiledRuleSetChanges): KernelRuleSetChanges {
  return {
    upserts: {
      subjects: changes.subjects.upsert.map(([id, settings]) => kernelSubject(id, settings)),
      peerRules: changes.peerRules.upsert,
      cidrRules: changes.cidrRules.upsert,
    },
    removals: {
      subjects: changes.subjects.remove,
      peerRules: changes.peerRules.remove,
      cidrRules: changes.cidrRules.remove,
    },
  };
}

function kernelSubject(id: number, settings: SubjectSettings): KernelSubject {
  return {
    id,
    hasEgressAllow: settings.hasEgressAllow,
    egressPosture: settings.egressPosture === 'Block' ? KernelAction.Block : KernelAction.Audit,
    hasPeerRules: settings.hasPeerRules,
    cidrPrefixLengths: settings.cidrPrefixLengths,
  };
}

/** Returns the tgid of a task id from /proc, or null when the task is gone. */
function tgidOf(pid: number): number | null {
  try {
    const match = /^Tgid:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}
