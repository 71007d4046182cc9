import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { listPids } from '../identity/process-info';
import { loadRegistrationFile, Registration } from '../identity/registration';
import { compilePolicySet } from '../policy/compile';
import { CompiledRuleSet, RuleRef } from '../policy/compiled-rule-set';
import { loadPolicyFiles } from '../policy/loader';
import { PolicySet } from '../policy/types';
import { subjectMatches } from '../policy/spiffe-selector';
import { ConfigError, ConfigIssue, formatIssue } from '../util/config-error';
import {
  decodeBatch,
  ExecRecord,
  ConnectRecord,
  KernelRecord,
  MalformedRecord,
} from '../kernel/codec';
import { Datapath, KernelRuleSet } from '../kernel/datapath';
import { KernelAction } from '../kernel/layout';
import { ensureKernelFilesystems, findCgroup2Root } from '../kernel/mounts';
import { probeEnforcers } from '../kernel/probe';
import { EventHub } from '../events/event-hub';
import { AuditServer } from '../events/grpc-server';
import { agentEvent, connectEvent, execEvent } from './event-builder';
import {
  bpfLsmUsable,
  dropEnforcedKindWarnings,
  enforcedRuleKinds,
  LsmEnforcer,
} from './lsm-enforcer';
import { LsmRecord } from '../kernel/lsm-layout';
import { AppArmorEnforcer, appArmorEnabled } from './apparmor-enforcer';
import { ProcessCache } from './process-cache';
import { IdentityRegistry } from './identity-registry';
import { ConfigWatcher } from './config-watcher';
import { socketInUse } from './single-instance';
import {
  IdentitySource,
  RegistrationIdentitySource,
  SpireAgentIdentitySource,
} from './identity-source';
import { SpireUnavailableError, validateX509Svid, WorkloadApiClient } from '../identity/spire';
import { AgentState } from '../events/audit-event';
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
  /** Publish exec events of processes without a SPIFFE ID too (every exec on the node). */
  auditUnidentifiedExec?: boolean;
  /** Event hub to publish to; pass one to subscribe before the first event. */
  hub?: EventHub;
  /** Prometheus metrics to keep current (rule and identity counts, stream clients). */
  metrics?: SigilMetrics;
  /** SPIFFE Workload API address (unix:///path): the agent fetches its own X.509-SVID there. */
  spireWorkloadApi?: string;
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
  private readonly processes = new ProcessCache();
  private readonly rulesByGeneration = new Map<number, RuleRef[]>();
  private registration: Registration | null = null;
  private identities!: IdentitySource;
  /** Processes SPIRE could not attest while it was unavailable, with their start times. */
  private readonly unattested = new Map<number, bigint | null>();
  private policySet!: PolicySet;
  private datapath: Datapath | null = null;
  private lsm: LsmEnforcer | null = null;
  private apparmor: AppArmorEnforcer | null = null;
  private server: AuditServer | null = null;
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
      this.policySet = loadPolicyFiles(options.policyFiles);
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
    const lsmUsable = bpfLsmUsable(options.pinDir, log);
    dropEnforcedKindWarnings(this.policySet, enforcedRuleKinds(lsmUsable));
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
    if (lsmUsable) {
      // The cgroup socket programs attached below decide every connect, so the LSM socket hooks stay off.
      this.lsm = LsmEnforcer.start({
        pinDir: options.pinDir as string,
        socketHooks: false,
        logger: log,
        spiffeIdOf: (id) => this.registry.spiffeIdOf(id),
        executableOf: (tgid) => this.processes.executable(tgid),
      });
    }
    this.applyPolicies();
    if (appArmorEnabled()) this.apparmor = new AppArmorEnforcer({ logger: log });
    await this.apparmor?.apply(this.policySet, this.registration);
    datapath.startEvents((batch) => this.handleBatch(batch));

    // Track fork and exec before reading /proc, so no process falls between the two.
    datapath.attachProcessTracking();
    await this.attestRunningProcesses();
    const cgroupPath = options.cgroupPath ?? findCgroup2Root();
    datapath.attachSocketPrograms(cgroupPath);
    datapath.releaseEarlierLinks();
    log.info({ cgroup: cgroupPath, pinDir: options.pinDir }, 'attached connect and bind programs');

    this.server = new AuditServer(this.hub, options.socketPath, { observer: options.metrics });
    await this.server.start();
    log.info({ socket: options.socketPath }, 'audit gRPC service listening');

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

  /** Compiles the current policy set against the known identities and swaps it in. */
  private applyPolicies(): void {
    const datapath = this.datapath as Datapath;
    // SPIFFE IDs a policy names get ids now, so their rules exist before any process has them.
    for (const id of exactSpiffeIds(this.policySet)) this.registry.idFor(id);
    const compiled = compilePolicySet(this.policySet, this.registry.entries());
    const lsmHooks = this.lsm?.prepare(this.policySet, this.registry.entries());
    const generation = datapath.applyRuleSet(toKernelRuleSet(compiled), 0, lsmHooks);
    this.rulesByGeneration.set(generation, compiled.rules);
    this.rulesByGeneration.delete(generation - KEPT_GENERATIONS);
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
    this.processes.remember(pid, result.executable, result.startTimeTicks);
    try {
      this.datapath?.setIdentity(pid, id);
    } catch (error) {
      this.log.error({ pid, err: error }, 'write identity to the kernel map failed');
    }
    return result.spiffeId;
  }

  private handleBatch(batch: Buffer): void {
    for (const record of this.lsm ? this.lsm.decodeBatch(batch) : decodeBatch(batch)) {
      try {
        this.handleRecord(record);
      } catch (error) {
        this.log.error({ err: error, record: record.type }, 'handle kernel record failed');
      }
    }
  }

  private handleRecord(record: KernelRecord | MalformedRecord | LsmRecord): void {
    switch (record.type) {
      case 'exec':
        this.handleExec(record).catch((error) =>
          this.log.error({ err: error, pid: record.tgid }, 'handle exec record failed'),
        );
        return;
      case 'exit':
        this.processes.forget(record.tgid);
        this.identities.forget(record.tgid);
        this.unattested.delete(record.tgid);
        return;
      case 'connect':
        return this.handleConnect(record);
      case 'exec-decision':
      case 'file-decision': {
        const draft = this.lsm?.eventFor(record);
        if (draft) this.hub.publish(draft);
        return;
      }
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

  private async handleExec(record: ExecRecord): Promise<void> {
    const startTicks = record.startBoottimeNs / NS_PER_CLOCK_TICK;
    const spiffeId = await this.attestAndWrite(record.tgid, startTicks);
    // The process exited before it could be read: it keeps no identity to report.
    if (spiffeId === undefined) this.processes.remember(record.tgid, record.filename, startTicks);
    // Execs of processes without an identity are most of a node's execs; they are opt-in.
    if (!spiffeId && !this.options.auditUnidentifiedExec) return;
    const executable = this.processes.executable(record.tgid) ?? record.filename;
    this.hub.publish(execEvent(record, spiffeId ?? null, executable));
  }

  private handleConnect(record: ConnectRecord): void {
    const rules = this.rulesByGeneration.get(record.generation);
    const rule = record.reason === 1 ? rules?.[record.ruleIndex] : undefined;
    const subjectPolicy = record.reason === 2 ? this.postureSource(record.subjectId) : undefined;
    this.hub.publish(
      connectEvent(record, {
        subject: this.registry.spiffeIdOf(record.subjectId),
        peer: this.registry.spiffeIdOf(record.peerId),
        executable: this.processes.executable(record.tgid),
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

  private reportDrops(): void {
    if (!this.datapath) return;
    let drops: bigint[];
    try {
      drops = this.datapath.readDrops();
    } catch (error) {
      this.log.error({ err: error }, 'read kernel drop counters failed');
      return;
    }
    drops.forEach((total, reason) => {
      const previous = this.reportedDrops[reason] ?? 0n;
      if (total === previous) return;
      this.reportedDrops[reason] = total;
      const count = Number(total - previous);
      // Dropped records may include execs: attest every process again, so none keeps a
      // pre-exec identity because its exec record was lost.
      this.attestRunningProcesses().catch((error) =>
        this.log.error({ err: error }, 'attest processes after dropped records failed'),
      );
      this.log.warn({ count, total: total.toString() }, 'kernel ring buffer full: records dropped');
      this.hub.publish({
        type: 'loss',
        ktimeNs: '0',
        loss: { where: 'kernel-ringbuf', count },
        message: `${count} kernel records were dropped because the ring buffer was full`,
      });
    });
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
      policySet = loadPolicyFiles(this.options.policyFiles);
    } catch (error) {
      this.rejectReload(error);
      return;
    }

    dropEnforcedKindWarnings(policySet, enforcedRuleKinds(this.lsm !== null));
    for (const warning of policySet.warnings) this.log.warn(formatIssue(warning));
    const previous = { registration: this.registration, policySet: this.policySet };
    try {
      this.registration = registration;
      this.policySet = policySet;
      if (registrationChanged && registration) {
        for (const entry of registration.entries) this.registry.idFor(entry.spiffeId);
      }
      this.applyPolicies();
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
    this.identities?.close();
    if (this.dropTimer) clearInterval(this.dropTimer);
    this.dropTimer = null;
    await this.server?.stop();
    this.server = null;
    this.lsm?.close();
    this.lsm = null;
    this.datapath?.close();
    this.datapath = null;
  }
}

/** Returns every exact SPIFFE ID the policies name as subject or peer. */
function exactSpiffeIds(set: PolicySet): string[] {
  const ids: string[] = [];
  for (const policy of set.policies) {
    if (policy.subject.kind === 'spiffeId') ids.push(policy.subject.spiffeId);
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
    subjects: [...compiled.subjects].map(([id, settings]) => ({
      id,
      hasEgressAllow: settings.hasEgressAllow,
      egressPosture: settings.egressPosture === 'Block' ? KernelAction.Block : KernelAction.Audit,
    })),
    peerRules: compiled.peerRules.values(),
    cidrRules: compiled.cidrRules,
  };
}
