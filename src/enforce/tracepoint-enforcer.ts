/**
 * The agent's tracepoint-kill enforcer for exec and file rules, used where
 * BPF LSM is not. It loads bpf/.output/sigil-tp.bpf.o on the main object's
 * pinned maps, attaches its programs with pinned links, publishes the exec
 * and file rules of each rule-set generation with the egress rules, and turns
 * the decision records into audit events with the result `killed`.
 *
 * The rules compile as for BPF LSM (compileLsmPolicySet), so both enforcers
 * reach the verdicts of src/policy/decide.ts; they differ in what happens on
 * Block: this enforcer cannot fail the call, and kills the process after the
 * exec or open succeeded (see bpf/tracepoint/kill.bpf.c for the windows).
 */
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { decodeRecord, KernelRecord, MalformedRecord } from '../kernel/codec';
import { RuleSetHooks } from '../kernel/datapath';
import { DecisionReason, KernelAction, recordHeaderLayout } from '../kernel/layout';
import { kernelDeviceNumber, LsmDirectoryRule } from '../kernel/lsm-maps';
import { BpfObject, Link } from '../kernel/native';
import { probeEnforcers } from '../kernel/probe';
import { decodeTpRecord, syscallName, TpDecisionRecord, TpRecordType } from '../kernel/tp-layout';
import {
  openTpObject,
  publishTpRuleSet,
  retireTpRuleSet,
  TP_PROGRAMS,
  TpDirectoryRule,
  TpMapFds,
  tpMapFds,
} from '../kernel/tp-maps';
import { KnownIdentity } from '../policy/compile';
import { compileLsmPolicySet, LsmPolicyCompilation, LsmRuleRef } from '../policy/compile-lsm';
import { PolicySet } from '../policy/types';
import { ConfigIssue, formatIssue } from '../util/config-error';
import { Action, EventDraft, PolicyRef, Process } from '../events/audit-event';
import { fileEvent } from './event-builder';

// Rule tables kept for decoding records of generations that are no longer active, as the agent keeps egress ones.
const KEPT_GENERATIONS = 8;
const FRAME_HEADER_BYTES = 8;

const ACTION_NAMES: Record<number, Action> = {
  [KernelAction.None]: 'none',
  [KernelAction.Allow]: 'allow',
  [KernelAction.Audit]: 'audit',
  [KernelAction.Block]: 'block',
};

export interface TracepointEnforcerOptions {
  /** bpffs directory that Datapath.load pinned its maps under (pinDir/maps) and its links under (pinDir/links). */
  pinDir: string;
  /** Path of the tracepoint-kill object, by default the build output. */
  objectPath?: string;
  logger: Logger;
  /** Returns the SPIFFE ID of an identity id, or null for id 0 and unknown ids. */
  spiffeIdOf(id: number): string | null;
  /** Returns the executable the agent attested for a process, or null. */
  executableOf(tgid: number): string | null;
}

/**
 * Returns whether the agent enforces exec and file rules with tracepoint-kill:
 * the probe chose it (BPF LSM is not active and the kernel has what it needs),
 * and pinning is on, because the object reuses the main object's maps
 * through their pins.
 */
export function tracepointKillUsable(pinDir: string | null, logger: Logger): boolean {
  const used = probeEnforcers().some((report) => report.enforcer === 'tracepoint-kill' && report.used);
  if (used && pinDir === null) {
    logger.warn('process and file rules are not enforced without pinning (--no-pin is set): tracepoint-kill needs the pinned maps');
  }
  return used && pinDir !== null;
}

/** Rule table and posture sources of one generation. */
type GenerationTables = Pick<LsmPolicyCompilation, 'rules' | 'policiesBySubject'>;

/**
 * Resolves directory rules to the (device, inode) of their directories now.
 * A path that does not exist or is not a directory is skipped with a warning.
 */
export function resolveDirectoryRules(
  rules: readonly LsmDirectoryRule[],
  table: readonly LsmRuleRef[],
  resolve: (path: string) => { dev: number; ino: bigint; directory: boolean } | null = statDirectory,
): { rules: TpDirectoryRule[]; warnings: ConfigIssue[] } {
  const resolved: TpDirectoryRule[] = [];
  const warnings: ConfigIssue[] = [];
  const warned = new Set<string>();
  for (const rule of rules) {
    const inode = resolve(rule.path);
    if (inode && inode.directory) {
      const { path: _path, ...rest } = rule;
      resolved.push({ ...rest, dev: inode.dev, ino: inode.ino });
      continue;
    }
    const ref = table[rule.ruleIndex];
    const id = `${rule.ruleIndex}:${rule.path}`;
    if (!ref || warned.has(id)) continue;
    warned.add(id);
    warnings.push({
      position: { file: ref.file, line: ref.line, column: 1 },
      fieldPath: '',
      message:
        `${ref.kind} rule "${ref.rule}" of policy "${ref.policy}": directory ${rule.path} ` +
        `${inode ? 'is not a directory' : 'does not exist'}, so tracepoint-kill does not enforce it`,
      hint: 'the rule applies once the directory exists and the agent reloads its policies',
      severity: 'warning',
    });
  }
  return { rules: resolved, warnings };
}

function statDirectory(path: string): { dev: number; ino: bigint; directory: boolean } | null {
  let stats;
  try {
    stats = statSync(path, { bigint: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  return { dev: kernelDeviceNumber(stats.dev), ino: stats.ino, directory: stats.isDirectory() };
}

/** The tracepoint-kill object, its pinned links and the rule tables of recent generations. */
export class TracepointEnforcer {
  private readonly maps: TpMapFds;
  private readonly links: Link[] = [];
  private readonly tables = new Map<number, GenerationTables>();
  private readonly log: Logger;

  private constructor(
    private readonly object: BpfObject,
    private readonly options: TracepointEnforcerOptions,
  ) {
    this.maps = tpMapFds(object);
    this.log = options.logger;
  }

  /**
   * Loads the object on the pinned maps of pinDir and attaches its programs.
   * Links are pinned under pinDir/links, so the programs keep killing after
   * the agent exits. The links an earlier agent pinned there are removed only
   * after this agent's links are attached, so enforcement has no gap. A
   * tracepoint this kernel lacks (open_by_handle_at is optional) is skipped
   * with a warning; the exec and openat programs must attach.
   */
  static start(options: TracepointEnforcerOptions): TracepointEnforcer {
    const object = openTpObject(join(options.pinDir, 'maps'), options.objectPath);
    const enforcer = new TracepointEnforcer(object, options);
    try {
      enforcer.attach();
    } catch (error) {
      enforcer.close();
      throw error;
    }
    return enforcer;
  }

  private attach(): void {
    const linkDirectory = join(this.options.pinDir, 'links');
    const earlierPins = readdirSync(linkDirectory)
      .filter((name) => TP_PROGRAMS.some(({ program }) => name.startsWith(`${program}-`)))
      .map((name) => join(linkDirectory, name));
    const attached: string[] = [];
    for (const { program, kind, target } of TP_PROGRAMS) {
      let link: Link;
      try {
        if (kind === 'raw_tp') link = this.object.attachRawTracepoint(program, target);
        else {
          const [category, name] = target.split('/');
          link = this.object.attachTracepoint(program, category, name);
        }
      } catch (error) {
        if (program === 'sigil_tp_exec' || program === 'sigil_tp_openat') {
          throw new Error(`attach ${program} to ${target}: ${(error as Error).message}`, { cause: error });
        }
        this.log.warn({ program, target, err: error }, `tracepoint ${target} not attached; opens through it are not enforced`);
        continue;
      }
      this.links.push(link);
      // bpffs rejects '.' in names, so the pin name is the program and the agent's pid.
      link.pin(join(linkDirectory, `${program}-${process.pid}`));
      attached.push(program);
    }
    for (const pin of earlierPins) rmSync(pin, { force: true });
    this.log.info({ programs: attached, replaced: earlierPins.length }, 'attached the tracepoint-kill programs');
  }

  /**
   * Compiles the exec and file rules of a policy set and returns the hooks
   * that publish them under the generation Datapath.applyRuleSet creates, and
   * retire the generation it replaces.
   */
  prepare(set: PolicySet, identities: ReadonlyArray<KnownIdentity>): RuleSetHooks {
    const compiled = compileLsmPolicySet(set, identities);
    const directories = resolveDirectoryRules([...compiled.ruleSet.directoryRules], compiled.rules);
    const warnings = [
      ...compiled.warnings.map((issue) => ({ ...issue, message: issue.message.replace('BPF LSM', 'tracepoint-kill') })),
      ...directories.warnings,
    ];
    for (const warning of warnings) this.log.warn(formatIssue(warning));
    const ruleSet = {
      subjects: compiled.ruleSet.subjects,
      inodeRules: compiled.ruleSet.inodeRules,
      directoryRules: directories.rules,
    };
    return {
      beforeSwitch: (generation) => publishTpRuleSet(this.maps, generation, ruleSet),
      afterSwitch: (generation, previous) => {
        this.tables.set(generation, { rules: compiled.rules, policiesBySubject: compiled.policiesBySubject });
        this.tables.delete(generation - KEPT_GENERATIONS);
        if (previous === 0) return;
        try {
          retireTpRuleSet(this.maps, previous);
        } catch (error) {
          this.log.error({ err: error, generation: previous }, 'retire tracepoint-kill rule set failed');
        }
      },
    };
  }

  /**
   * Decodes a ring-buffer batch (see batchRecords for the framing) like
   * decodeBatch of codec.ts, and also the decision records of this object.
   */
  decodeBatch(batch: Buffer): (KernelRecord | MalformedRecord | TpDecisionRecord)[] {
    const records: (KernelRecord | MalformedRecord | TpDecisionRecord)[] = [];
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

  private decodeRecord(batch: Buffer, at: number, length: number): KernelRecord | MalformedRecord | TpDecisionRecord {
    if (length < recordHeaderLayout.size) return decodeRecord(batch, at, length);
    const type = batch.readUInt32LE(at + recordHeaderLayout.offsetOf('type'));
    if (type !== TpRecordType.ExecDecision && type !== TpRecordType.FileDecision) {
      return decodeRecord(batch, at, length);
    }
    try {
      return decodeTpRecord(batch, at, length)!;
    } catch (error) {
      return { type: 'malformed', reason: (error as Error).message };
    }
  }

  /**
   * Returns the audit event of a decision. A Block verdict whose SIGKILL the
   * kernel queued has the result `killed`. One it could not queue (such as
   * for init, pid 1) has `allowed`, says why in the message, and is logged.
   */
  eventFor(record: TpDecisionRecord): EventDraft {
    const spiffeId = this.options.spiffeIdOf(record.subjectId);
    const path = record.path || `inode ${record.dev}:${record.ino}`;
    const isExec = record.type === 'tp-exec-decision';
    const killed = record.denied && record.killResult === 0;
    const process: Process = {
      pid: record.tgid,
      ppid: record.ppid,
      uid: record.uid,
      gid: record.gid,
      // An exec event names the program that the exec ran.
      executable: isExec ? path : (this.options.executableOf(record.tgid) ?? ''),
      comm: record.comm,
      cgroupId: record.cgroupId.toString(),
      tgid: record.tgid,
    };
    const policy = this.policyOf(record);
    const action = ACTION_NAMES[record.action] ?? 'none';
    const operation = isExec ? `exec of ${path}` : `${syscallName(record.syscall)} of ${path} for ${record.writeIntent ? 'write' : 'read'}`;
    let outcome = killed ? 'killed the process' : 'allowed';
    if (record.denied && !killed) {
      outcome = `allowed: SIGKILL failed with errno ${-record.killResult}`;
      this.log.warn({ pid: record.tgid, errno: -record.killResult, path }, 'tracepoint-kill could not kill a blocked process');
    }
    const message = `${operation} ${outcome}`;
    let draft: EventDraft;
    if (isExec) {
      draft = {
        type: 'exec',
        ktimeNs: record.ktimeNs.toString(),
        subject: { spiffeId: spiffeId ?? '' },
        process,
        action,
        result: 'allowed',
        enforcer: 'tracepoint-kill',
        message,
      };
      if (policy) draft.policy = policy;
    } else {
      draft = fileEvent(
        { ktimeNs: record.ktimeNs, spiffeId, process, policy, action, denied: false, enforcer: 'tracepoint-kill', message },
        { path, operation: 'open' },
      );
    }
    if (killed) draft.result = 'killed';
    return draft;
  }

  /** Names the rule, or the policies whose posture decided, from the generation's tables. */
  private policyOf(record: TpDecisionRecord): PolicyRef | undefined {
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
      const rule = record.type === 'tp-exec-decision' ? 'processPosture' : 'filePosture';
      return { name: names.join(','), rule, reason: 'posture' };
    }
    return undefined;
  }

  /** Releases this process's links and the object. Pinned links stay attached and keep killing. */
  close(): void {
    for (const link of this.links.splice(0)) link.destroy();
    this.object.close();
  }
}
