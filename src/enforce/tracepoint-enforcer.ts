/**
 * The agent's tracepoint-kill enforcer for exec and file rules, used where
 * BPF LSM is not. It loads bpf/.output/sigil-tp.bpf.o on the main object's
 * pinned maps and attaches its programs with pinned links. It publishes the
 * exec and file rules of each rule-set generation with the egress rules, and
 * turns the decision records into audit events with the result `killed`.
 *
 * The rules compile as for BPF LSM (compileLsmPolicySet), so both enforcers
 * apply the rules, postures and precedence of src/policy/decide.ts. They
 * differ on Block: this enforcer cannot fail the call, so it kills the
 * process after the exec or open succeeded (see bpf/tracepoint/kill.bpf.c).
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { RuleSetHooks } from '../kernel/datapath';
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
import { compileLsmPolicySet, LsmRuleRef } from '../policy/compile-lsm';
import { PolicySet } from '../policy/types';
import { ConfigIssue, formatIssue } from '../util/config-error';
import { EventDraft } from '../events/audit-event';
import { actionName, fileEvent, processOfRecord } from './event-builder';
import { PathRuleEnforcer, PathRuleEnforcerOptions } from './path-rule-enforcer';

export type TracepointEnforcerOptions = PathRuleEnforcerOptions;

/**
 * Returns whether the agent enforces exec and file rules with tracepoint-kill.
 * That needs the probe to choose it (BPF LSM is not active and the kernel has
 * what it needs) and pinning, because the object reuses the main object's
 * maps through their pins.
 */
export function tracepointKillUsable(pinDir: string | null, logger: Logger): boolean {
  const used = probeEnforcers().some(
    (report) => report.enforcer === 'tracepoint-kill' && report.used,
  );
  if (used && pinDir === null) {
    logger.warn(
      'process and file rules are not enforced without pinning (--no-pin is set): tracepoint-kill needs the pinned maps',
    );
  }
  return used && pinDir !== null;
}

/**
 * Resolves directory rules to the (device, inode) of their directories now.
 * A path that does not exist or is not a directory is skipped with a warning.
 */
export function resolveDirectoryRules(
  rules: readonly LsmDirectoryRule[],
  table: readonly LsmRuleRef[],
  resolve: (
    path: string,
  ) => { dev: number; ino: bigint; directory: boolean } | null = statDirectory,
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

/**
 * Returns a warning for each policy in Enforce mode that selects processes
 * without a SPIFFE ID and has Allow rules with a Block posture of the process
 * or file kind. Under tracepoint-kill that kills every unregistered process
 * that executes or opens anything else, the agent and system services
 * included, where BPF LSM would only fail the call.
 */
export function unidentifiedKillWarnings(set: PolicySet): ConfigIssue[] {
  const warnings: ConfigIssue[] = [];
  for (const policy of set.policies) {
    if (policy.subjectSelector.kind !== 'unidentified' || policy.mode !== 'Enforce') continue;
    const kinds = [
      { kind: 'process', field: 'processPosture', rules: policy.process, verb: 'executes' },
      { kind: 'file', field: 'filePosture', rules: policy.file, verb: 'opens' },
    ] as const;
    for (const { kind, field, rules, verb } of kinds) {
      if (policy[field] !== 'Block' || !rules.some((rule) => rule.action === 'Allow')) continue;
      warnings.push({
        position: policy.position,
        fieldPath: `spec.${field}`,
        message:
          `policy "${policy.name}" makes tracepoint-kill kill every process without a SPIFFE ID ` +
          `that ${verb} anything its Allow ${kind} rules do not match, including the agent and system services`,
        hint: 'set mode: Audit first to see what it would kill',
        severity: 'warning',
      });
    }
  }
  return warnings;
}

/** Programs that must attach; the others are skipped with a warning on a kernel without their tracepoint. */
const REQUIRED_PROGRAMS: readonly string[] = ['sigil_tp_exec', 'sigil_tp_openat'];

/** The tracepoint-kill object, its pinned links and the rule tables of recent generations. */
export class TracepointEnforcer extends PathRuleEnforcer<
  TpDecisionRecord,
  TracepointEnforcerOptions
> {
  private readonly maps: TpMapFds;

  private constructor(object: BpfObject, options: TracepointEnforcerOptions) {
    super(object, options, {
      recordTypes: [TpRecordType.ExecDecision, TpRecordType.FileDecision],
      decode: decodeTpRecord,
      execType: 'tp-exec-decision',
    });
    this.maps = tpMapFds(object);
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
    return enforcer.started(() => enforcer.attach());
  }

  private attach(): void {
    const programs = TP_PROGRAMS.map(({ program }) => program);
    this.attachPinned(
      programs,
      programs,
      (program) => this.attachProgram(program),
      'attached the tracepoint-kill programs',
    );
  }

  /** Attaches one program to its tracepoint, or returns null after a warning for an optional one. */
  private attachProgram(program: string): Link | null {
    const { kind, target } = TP_PROGRAMS.find((entry) => entry.program === program)!;
    try {
      if (kind === 'raw_tp') return this.object.attachRawTracepoint(program, target);
      const [category, name] = target.split('/');
      return this.object.attachTracepoint(program, category, name);
    } catch (error) {
      if (REQUIRED_PROGRAMS.includes(program)) {
        throw new Error(`attach ${program} to ${target}: ${(error as Error).message}`, {
          cause: error,
        });
      }
      this.log.warn(
        { program, target, err: error },
        `tracepoint ${target} not attached; opens through it are not enforced`,
      );
      return null;
    }
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
      ...compiled.warnings.map((issue) => ({
        ...issue,
        message: issue.message.replace('BPF LSM', 'tracepoint-kill'),
      })),
      ...directories.warnings,
      ...unidentifiedKillWarnings(set),
    ];
    for (const warning of warnings) this.log.warn(formatIssue(warning));
    const ruleSet = {
      subjects: compiled.ruleSet.subjects,
      inodeRules: compiled.ruleSet.inodeRules,
      directoryRules: directories.rules,
    };
    return this.generationHooks(
      compiled,
      (generation) => publishTpRuleSet(this.maps, generation, ruleSet),
      (generation) => retireTpRuleSet(this.maps, generation),
      'retire tracepoint-kill rule set failed',
    );
  }

  /**
   * Returns the audit event of a decision. A Block verdict whose SIGKILL the
   * kernel queued has the result `killed`. One it could not queue (such as
   * for init, pid 1) has `allowed`, with the errno in the message, and is logged.
   */
  eventFor(record: TpDecisionRecord): EventDraft {
    const path = record.path || `inode ${record.dev}:${record.ino}`;
    const killed = record.denied && record.killResult === 0;
    let outcome = killed ? 'killed the process' : 'allowed';
    if (record.denied && !killed) {
      outcome = `allowed: SIGKILL failed with errno ${-record.killResult}`;
      this.log.warn(
        { pid: record.tgid, errno: -record.killResult, path },
        'tracepoint-kill could not kill a blocked process',
      );
    }
    const draft =
      record.type === 'tp-exec-decision'
        ? this.execDraft(record, path, `exec of ${path} ${outcome}`)
        : this.fileDraft(record, path, outcome);
    if (killed) draft.result = 'killed';
    return draft;
  }

  /** Builds an exec event, which names the program that the exec ran. */
  private execDraft(record: TpDecisionRecord, path: string, message: string): EventDraft {
    const draft: EventDraft = {
      type: 'exec',
      ktimeNs: record.ktimeNs.toString(),
      subject: { spiffeId: this.options.spiffeIdOf(record.subjectId) ?? '' },
      process: processOfRecord(record, path),
      action: actionName(record.action),
      result: 'allowed',
      enforcer: 'tracepoint-kill',
      message,
    };
    const policy = this.policyOf(record);
    if (policy) draft.policy = policy;
    return draft;
  }

  /** Builds a file event for the open; the result is set by eventFor. */
  private fileDraft(record: TpDecisionRecord, path: string, outcome: string): EventDraft {
    const access = record.writeIntent ? 'write' : 'read';
    const executable = this.options.executableOf(record.tgid) ?? '';
    return fileEvent(
      {
        ktimeNs: record.ktimeNs,
        spiffeId: this.options.spiffeIdOf(record.subjectId),
        process: processOfRecord(record, executable),
        policy: this.policyOf(record),
        action: actionName(record.action),
        denied: false,
        enforcer: 'tracepoint-kill',
        message: `${syscallName(record.syscall)} of ${path} for ${access} ${outcome}`,
      },
      { path, operation: 'open' },
    );
  }
}
