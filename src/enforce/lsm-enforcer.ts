/**
 * The agent's BPF LSM enforcer. It loads bpf/.output/sigil-lsm.bpf.o on the
 * main object's pinned maps and attaches its hooks with pinned links. It
 * publishes the exec and file rules of each rule-set generation together with
 * the egress rules, through Datapath.applyRuleSet's hooks, and turns the exec
 * and file decision records into audit events.
 */
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { decodeRecord, KernelRecord, MalformedRecord } from '../kernel/codec';
import { RuleSetHooks } from '../kernel/datapath';
import { DecisionReason, KernelAction, recordHeaderLayout } from '../kernel/layout';
import { decodeLsmRecord, LsmRecord, LsmRecordType } from '../kernel/lsm-layout';
import {
  ensureLsmHashSeed,
  LSM_PROGRAMS,
  LsmMapFds,
  lsmMapFds,
  openLsmObject,
  publishLsmRuleSet,
  retireLsmRuleSet,
} from '../kernel/lsm-maps';
import { BpfObject, Link } from '../kernel/native';
import { probeEnforcers } from '../kernel/probe';
import { KnownIdentity } from '../policy/compile';
import { compileLsmPolicySet, LsmPolicyCompilation } from '../policy/compile-lsm';
import { policyWarnings } from '../policy/enforcer-warnings';
import { PolicySet, RuleKind } from '../policy/types';
import { formatIssue } from '../util/config-error';
import { Action, EventDraft, PolicyRef, Process } from '../events/audit-event';
import { fileEvent } from './event-builder';

const EPERM = 1;
// Rule tables kept for decoding records of generations that are no longer active, as the agent keeps egress ones.
const KEPT_GENERATIONS = 8;
const FRAME_HEADER_BYTES = 8;

/**
 * Programs that enforce connect() and bind(). The cgroup socket programs of
 * the main object already decide every connect, so attaching these as well
 * would decide and report each connect twice. They are attached only on a
 * node where the cgroup programs are not (no cgroup v2).
 */
const SOCKET_PROGRAMS: readonly string[] = ['sigil_lsm_socket_bind', 'sigil_lsm_socket_connect'];

const ACTION_NAMES: Record<number, Action> = {
  [KernelAction.None]: 'none',
  [KernelAction.Allow]: 'allow',
  [KernelAction.Audit]: 'audit',
  [KernelAction.Block]: 'block',
};

export interface LsmEnforcerOptions {
  /** bpffs directory that Datapath.load pinned its maps under (pinDir/maps) and its links under (pinDir/links). */
  pinDir: string;
  /** Path of the LSM object, by default the build output. */
  objectPath?: string;
  /** Whether to attach lsm/socket_bind and lsm/socket_connect. Set it only where the cgroup socket programs are not attached. */
  socketHooks: boolean;
  logger: Logger;
  /** Returns the SPIFFE ID of an identity id, or null for id 0 and unknown ids. */
  spiffeIdOf(id: number): string | null;
  /** Returns the executable the agent attested for a process, or null. */
  executableOf(tgid: number): string | null;
}

/** Rule table and posture sources of one generation. */
type GenerationTables = Pick<LsmPolicyCompilation, 'rules' | 'policiesBySubject'>;

/**
 * Returns whether the agent can enforce with BPF LSM: the probe reports the
 * bpf LSM active, and pinning is on, because the LSM object reuses the main
 * object's maps through their pins.
 */
export function bpfLsmUsable(pinDir: string | null, logger: Logger): boolean {
  const active = probeEnforcers().some((report) => report.enforcer === 'bpf-lsm' && report.used);
  if (active && pinDir === null) {
    logger.warn('BPF LSM is active, but process and file rules are not enforced without pinning (--no-pin is set)');
  }
  return active && pinDir !== null;
}

/** Rule kinds that the node enforces, with BPF LSM or without. */
export function enforcedRuleKinds(lsmUsed: boolean, appArmorUsed = false): RuleKind[] {
  const kinds: RuleKind[] = lsmUsed ? ['egress', 'process', 'file'] : ['egress'];
  if (appArmorUsed) kinds.push('capability');
  return kinds;
}

/**
 * Removes from set.warnings the warnings about rules of the kinds in
 * enforcedKinds, which the loader issues because it assumes only egress
 * rules are enforced. Every other warning stays, in its order.
 */
export function dropEnforcedKindWarnings(set: PolicySet, enforcedKinds: readonly RuleKind[]): void {
  const unenforced = new Set(policyWarnings(set.policies, enforcedKinds).map(formatIssue));
  const loaderDefault = new Set(policyWarnings(set.policies).map(formatIssue));
  set.warnings = set.warnings.filter((issue) => {
    const text = formatIssue(issue);
    return unenforced.has(text) || !loaderDefault.has(text);
  });
}

/** The LSM object, its pinned links and the rule tables of recent generations. */
export class LsmEnforcer {
  private readonly maps: LsmMapFds;
  private readonly links: Link[] = [];
  private readonly tables = new Map<number, GenerationTables>();
  private readonly log: Logger;

  private constructor(
    private readonly object: BpfObject,
    private readonly options: LsmEnforcerOptions,
  ) {
    this.maps = lsmMapFds(object);
    this.log = options.logger;
  }

  /**
   * Loads the LSM object on the pinned maps of pinDir and attaches its
   * programs. Links are pinned under pinDir/links, so the hooks stay attached
   * after the agent exits. The links that an earlier agent pinned there are
   * removed only after this agent's links are attached, so enforcement has no
   * gap. Until the first rule set is published, the programs decide with the
   * pinned rules of the generation in force, or allow everything on a first start.
   */
  static start(options: LsmEnforcerOptions): LsmEnforcer {
    const object = openLsmObject(join(options.pinDir, 'maps'), options.objectPath);
    const enforcer = new LsmEnforcer(object, options);
    try {
      ensureLsmHashSeed(enforcer.maps);
      enforcer.attach();
    } catch (error) {
      enforcer.close();
      throw error;
    }
    return enforcer;
  }

  private attach(): void {
    const linkDirectory = join(this.options.pinDir, 'links');
    const programs = LSM_PROGRAMS.filter((program) => this.options.socketHooks || !SOCKET_PROGRAMS.includes(program));
    const earlierPins = readdirSync(linkDirectory)
      .filter((name) => LSM_PROGRAMS.some((program) => name.startsWith(`${program}-`)))
      .map((name) => join(linkDirectory, name));
    for (const program of programs) {
      const link = this.object.attach(program);
      this.links.push(link);
      // bpffs rejects '.' in names, so the pin name is the program and the agent's pid.
      link.pin(join(linkDirectory, `${program}-${process.pid}`));
    }
    for (const pin of earlierPins) rmSync(pin, { force: true });
    this.log.info({ programs, replaced: earlierPins.length }, 'attached the BPF LSM programs');
  }

  /**
   * Compiles the exec and file rules of a policy set and returns the hooks
   * that publish them under the generation Datapath.applyRuleSet creates,
   * and retire the generation it replaces.
   */
  prepare(set: PolicySet, identities: ReadonlyArray<KnownIdentity>): RuleSetHooks {
    const compiled = compileLsmPolicySet(set, identities);
    for (const warning of compiled.warnings) this.log.warn(formatIssue(warning));
    return {
      beforeSwitch: (generation) => publishLsmRuleSet(this.maps, generation, compiled.ruleSet),
      afterSwitch: (generation, previous) => {
        this.tables.set(generation, { rules: compiled.rules, policiesBySubject: compiled.policiesBySubject });
        this.tables.delete(generation - KEPT_GENERATIONS);
        if (previous === 0) return;
        try {
          retireLsmRuleSet(this.maps, previous);
        } catch (error) {
          this.log.error({ err: error, generation: previous }, 'retire LSM rule set failed');
        }
      },
    };
  }

  /**
   * Decodes a ring-buffer batch (see batchRecords for the framing) like
   * decodeBatch of codec.ts, and also decodes the exec and file decision
   * records, which codec.ts reports as malformed.
   */
  decodeBatch(batch: Buffer): (KernelRecord | MalformedRecord | LsmRecord)[] {
    const records: (KernelRecord | MalformedRecord | LsmRecord)[] = [];
    let at = 0;
    while (at + FRAME_HEADER_BYTES <= batch.length) {
      const length = batch.readUInt32LE(at);
      const start = at + FRAME_HEADER_BYTES;
      if (start + length > batch.length) {
        records.push({ type: 'malformed', reason: `frame of ${length} bytes overruns the batch` });
        break;
      }
      records.push(this.decodeRecord(batch, start, length));
      at = start + Math.ceil(length / 8) * 8;
    }
    return records;
  }

  private decodeRecord(batch: Buffer, at: number, length: number): KernelRecord | MalformedRecord | LsmRecord {
    if (length < recordHeaderLayout.size) return decodeRecord(batch, at, length);
    const type = batch.readUInt32LE(at + recordHeaderLayout.offsetOf('type'));
    if (type !== LsmRecordType.ExecDecision && type !== LsmRecordType.FileDecision) {
      return decodeRecord(batch, at, length);
    }
    try {
      return decodeLsmRecord(batch, at, length)!;
    } catch (error) {
      return { type: 'malformed', reason: (error as Error).message };
    }
  }

  /**
   * Returns the audit event of an exec or file decision, or null for a
   * decision without a rule or posture (action none). The programs report
   * every exec and open of a process with an identity, and the agent's exec
   * events already cover the ones that no policy decides.
   */
  eventFor(record: LsmRecord): EventDraft | null {
    if (record.action === KernelAction.None) return null;
    const spiffeId = this.options.spiffeIdOf(record.subjectId);
    const path = record.path || `inode ${record.dev}:${record.ino}`;
    const process: Process = {
      pid: record.tgid,
      ppid: record.ppid,
      uid: record.uid,
      gid: record.gid,
      // An exec event names the program that the exec runs, or was denied to run.
      executable: record.type === 'exec-decision' ? path : (this.options.executableOf(record.tgid) ?? ''),
      comm: record.comm,
      cgroupId: record.cgroupId.toString(),
      tgid: record.tgid,
    };
    const policy = this.policyOf(record);
    const action = ACTION_NAMES[record.action] ?? 'none';
    if (record.type === 'file-decision') {
      const access = record.writeIntent ? 'write' : 'read';
      return fileEvent(
        {
          ktimeNs: record.ktimeNs,
          spiffeId,
          process,
          policy,
          action,
          denied: record.denied,
          enforcer: 'bpf-lsm',
          message: `open of ${path} for ${access} ${record.denied ? 'denied' : 'allowed'}`,
        },
        { path, operation: 'open' },
      );
    }
    const draft: EventDraft = {
      type: 'exec',
      ktimeNs: record.ktimeNs.toString(),
      subject: { spiffeId: spiffeId ?? '' },
      process,
      action,
      result: record.denied ? 'denied' : 'allowed',
      enforcer: 'bpf-lsm',
      message: `exec of ${path} ${record.denied ? 'denied' : 'allowed'}`,
    };
    if (policy) draft.policy = policy;
    if (record.denied) draft.errno = EPERM;
    return draft;
  }

  /** Names the rule, or the policies whose posture decided, from the generation's tables. */
  private policyOf(record: LsmRecord): PolicyRef | undefined {
    const tables = this.tables.get(record.generation);
    if (record.reason === DecisionReason.Rule) {
      const rule = tables?.rules[record.ruleIndex];
      if (!rule) return undefined;
      const policy: PolicyRef = { name: rule.policy, rule: rule.rule, reason: 'rule' };
      if (rule.severity) policy.severity = rule.severity;
      if (rule.tags?.length) policy.tags = [...rule.tags];
      if (rule.message) policy.message = rule.message;
      return policy;
    }
    if (record.reason === DecisionReason.Posture) {
      const names = tables?.policiesBySubject.get(record.subjectId) ?? [];
      const rule = record.type === 'exec-decision' ? 'processPosture' : 'filePosture';
      return { name: names.join(','), rule, reason: 'posture' };
    }
    return undefined;
  }

  /**
   * Releases this process's links and the object. Pinned links stay attached
   * and keep enforcing with the pinned maps after this call.
   */
  close(): void {
    for (const link of this.links.splice(0)) link.destroy();
    this.object.close();
  }
}
