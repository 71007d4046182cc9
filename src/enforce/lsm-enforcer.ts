/**
 * The agent's BPF LSM enforcer. It loads bpf/.output/sigil-lsm.bpf.o on the
 * main object's pinned maps and attaches its hooks with pinned links. It
 * publishes the exec and file rules of each rule-set generation together with
 * the egress rules, through Datapath.applyRuleSet's hooks, and turns the exec
 * and file decision records into audit events.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { RuleSetHooks } from '../kernel/datapath';
import { KernelAction } from '../kernel/layout';
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
import { BpfObject } from '../kernel/native';
import { probeEnforcers } from '../kernel/probe';
import { KnownIdentity } from '../policy/compile';
import { compileLsmPolicySet } from '../policy/compile-lsm';
import { policyWarnings } from '../policy/enforcer-warnings';
import { PolicySet, RuleKind } from '../policy/types';
import { formatIssue } from '../util/config-error';
import { EventDraft } from '../events/audit-event';
import { actionName, fileEvent, processOfRecord } from './event-builder';
import { PathRuleEnforcer, PathRuleEnforcerOptions } from './path-rule-enforcer';

const EPERM = 1;

/**
 * Programs that enforce connect() and bind(). The cgroup socket programs of
 * the main object already decide every connect, so attaching these as well
 * would decide and report each connect twice. They are attached only on a
 * node where the cgroup programs are not (no cgroup v2).
 */
const SOCKET_PROGRAMS: readonly string[] = ['sigil_lsm_socket_bind', 'sigil_lsm_socket_connect'];

export interface LsmEnforcerOptions extends PathRuleEnforcerOptions {
  /** Whether to attach lsm/socket_bind and lsm/socket_connect. Set it only where the cgroup socket programs are not attached. */
  socketHooks: boolean;
}

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
export class LsmEnforcer extends PathRuleEnforcer<LsmRecord, LsmEnforcerOptions> {
  private readonly maps: LsmMapFds;

  private constructor(object: BpfObject, options: LsmEnforcerOptions) {
    super(object, options, {
      recordTypes: [LsmRecordType.ExecDecision, LsmRecordType.FileDecision],
      decode: decodeLsmRecord,
      execType: 'exec-decision',
    });
    this.maps = lsmMapFds(object);
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
    return enforcer.started(() => {
      ensureLsmHashSeed(enforcer.maps);
      enforcer.attach();
    });
  }

  private attach(): void {
    const programs = LSM_PROGRAMS.filter(
      (program) => this.options.socketHooks || !SOCKET_PROGRAMS.includes(program),
    );
    this.attachPinned(
      LSM_PROGRAMS,
      programs,
      (program) => this.object.attach(program),
      'attached the BPF LSM programs',
    );
  }

  /**
   * Compiles the exec and file rules of a policy set and returns the hooks
   * that publish them under the generation Datapath.applyRuleSet creates,
   * and retire the generation it replaces.
   */
  prepare(set: PolicySet, identities: ReadonlyArray<KnownIdentity>): RuleSetHooks {
    const compiled = compileLsmPolicySet(set, identities);
    for (const warning of compiled.warnings) this.log.warn(formatIssue(warning));
    return this.generationHooks(
      compiled,
      (generation) => publishLsmRuleSet(this.maps, generation, compiled.ruleSet),
      (generation) => retireLsmRuleSet(this.maps, generation),
      'retire LSM rule set failed',
    );
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
    // An exec event names the program that the exec runs, or was denied to run.
    const executable =
      record.type === 'exec-decision' ? path : (this.options.executableOf(record.tgid) ?? '');
    const process = processOfRecord(record, executable);
    const policy = this.policyOf(record);
    const action = actionName(record.action);
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
}
