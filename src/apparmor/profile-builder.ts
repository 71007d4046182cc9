import { combinePostures, effectiveAction } from '../policy/actions';
import {
  CapabilityRule as PolicyCapabilityRule,
  EgressRule,
  FileRule,
  IngressRule,
  Policy,
  Posture,
  ProcessRule,
  RuleKind,
  RuleProtocol,
} from '../policy/types';
import { ConfigIssue } from '../util/config-error';
import { globAare, isPattern, literalAare, unsafeCharacter } from './aare';
import {
  CapabilityRule,
  ExecRule,
  FileAccessRule,
  NetworkRule,
  ProfileModel,
  RuleQualifier,
  SocketType,
} from './model';
import { patternsOverlap } from './pattern-overlap';
import { POSTURE_RULE, RuleReport, RuleStatus } from './rule-report';
import { ExecutableAttachment, ProfileSubject } from './subjects';

/** Inputs shared by every profile of one generation. */
export interface BuildContext {
  /** Profile name of each SPIFFE ID that gets a profile. */
  names: ReadonlyMap<string, string>;
  /** Every `unix:path` attachment of the registration file, sorted by path. */
  attachments: readonly ExecutableAttachment[];
  /** Errors and warnings, with the file and line of the policy value. */
  issues: ConfigIssue[];
}

/** The result of building one profile. */
export interface BuiltProfile {
  model: ProfileModel;
  reports: RuleReport[];
}

const PROTOCOL_TYPES: Record<RuleProtocol, SocketType[]> = {
  TCP: ['stream'],
  UDP: ['dgram'],
  Any: ['stream', 'dgram'],
};

/**
 * In complain mode the kernel logs a denied access and allows it, deny rules included. The VM
 * test shows this on Linux 6.1, the only kernel tested.
 */
const COMPLAIN_DENY =
  'the profile is in complain mode, where the kernel logs the access and allows it despite the deny rule';

/** Classes of one profile, each an allow-list or not, with the posture that applies. */
interface ClassState {
  allowList: boolean;
  posture: Posture;
}

/**
 * Builds the profile of one SPIFFE ID from the policies that select it. Values that Sigil
 * never writes into a profile are added to `context.issues` as errors, and the profile is still
 * built without them so every such value is reported in one run.
 */
export function buildProfile(subject: ProfileSubject, context: BuildContext): BuiltProfile {
  return new ProfileBuilder(subject, context).build();
}

class ProfileBuilder {
  private readonly name: string;
  private readonly policies: readonly Policy[];
  private readonly reports: RuleReport[] = [];
  private readonly files: FileAccessRule[] = [];
  private readonly execs: ExecRule[] = [];
  private readonly network: NetworkRule[] = [];
  private readonly capabilities: CapabilityRule[] = [];
  private readonly networkNotes: string[] = [];
  private readonly capabilityClass: ClassState;
  private readonly fileClass: ClassState;
  private readonly execClass: ClassState;
  private readonly networkClass: ClassState;
  private readonly complain: boolean;

  constructor(
    private readonly subject: ProfileSubject,
    private readonly context: BuildContext,
  ) {
    this.name = context.names.get(subject.spiffeId)!;
    this.policies = subject.policies;
    this.fileClass = this.classState(['file']);
    this.execClass = this.classState(['process']);
    this.networkClass = this.classState(['egress', 'ingress']);
    this.capabilityClass = this.classState(['capability']);
    this.complain = [this.fileClass, this.execClass, this.networkClass, this.capabilityClass].some(
      (state) => state.allowList && state.posture === 'Audit',
    );
  }

  build(): BuiltProfile {
    for (const policy of this.policies) {
      policy.file.forEach((rule, index) => this.addFileRule(policy, rule, index));
      policy.process.forEach((rule, index) => this.addProcessRule(policy, rule, index));
      policy.capability.forEach((rule) => this.addCapabilityRule(policy, rule));
    }
    this.addTransitions();
    this.addNetworkRules();
    this.reportPostures();
    const model: ProfileModel = {
      name: this.name,
      spiffeId: this.subject.spiffeId,
      attachments: this.context.attachments
        .filter((attachment) => attachment.spiffeId === this.subject.spiffeId)
        .map((attachment) => attachment.path),
      complain: this.complain,
      policies: this.policies.map((policy) => policy.name),
      allowAllFiles: !this.fileClass.allowList,
      allowAllExec: !this.execClass.allowList,
      allowAllNetwork: !this.networkClass.allowList,
      allowAllCapabilities: !this.capabilityClass.allowList,
      capabilities: this.capabilities,
      network: this.network,
      files: this.files,
      execs: this.execs,
      networkNotes: this.networkNotes,
    };
    return { model, reports: this.reports };
  }

  /**
   * Returns whether a class is an allow-list, and its posture. A class is an allow-list when
   * every one of its kinds has an Allow rule, because only then does a posture apply to every
   * operation that AppArmor mediates for the class. Its posture is Block only when the posture
   * of each kind is Block.
   */
  private classState(kinds: RuleKind[]): ClassState {
    const allowList = kinds.every((kind) =>
      this.policies.some((policy) => rulesOf(policy, kind).some((rule) => rule.action === 'Allow')),
    );
    const block = kinds.every((kind) => combinePostures(this.policies, kind).posture === 'Block');
    return { allowList, posture: block ? 'Block' : 'Audit' };
  }

  private addFileRule(policy: Policy, rule: FileRule, index: number): void {
    const aares = this.ruleAares(policy, rule, 'file', index);
    const action = effectiveAction(rule.action, policy.mode);
    const source = `${policy.name}/${rule.name}`;
    const read = rule.readOnly ? 'r' : 'rw';
    for (const aare of aares) {
      if (action === 'Block') this.files.push(fileRule('deny', aare, 'rw', source));
      else if (action === 'Audit') this.files.push(fileRule('audit', aare, read, source));
      else if (this.fileClass.allowList) this.files.push(fileRule('allow', aare, read, source));
      if (rule.readOnly) {
        const write = effectiveAction('Block', policy.mode) === 'Block' ? 'deny' : 'audit';
        this.files.push(fileRule(write, aare, 'w', source));
      }
    }
    this.report(policy, 'file', rule, this.ruleStatus(action, this.fileClass));
  }

  private addCapabilityRule(policy: Policy, rule: PolicyCapabilityRule): void {
    const action = effectiveAction(rule.action, policy.mode);
    const sources = [`${policy.name}/${rule.name}`];
    for (const capability of rule.capabilities) {
      // Policy names are those of capabilities(7) without CAP_; AppArmor writes them in lower case.
      const name = capability.toLowerCase();
      if (action === 'Block') this.capabilities.push({ qualifier: 'deny', name, sources });
      else if (action === 'Audit') this.capabilities.push({ qualifier: 'audit', name, sources });
      else if (this.capabilityClass.allowList) {
        this.capabilities.push({ qualifier: 'allow', name, sources });
      }
    }
    this.report(policy, 'capability', rule, this.ruleStatus(action, this.capabilityClass));
  }

  private addProcessRule(policy: Policy, rule: ProcessRule, index: number): void {
    const aares = this.ruleAares(policy, rule, 'process', index);
    const action = effectiveAction(rule.action, policy.mode);
    const source = `${policy.name}/${rule.name}`;
    for (const aare of aares) {
      if (action === 'Block') {
        this.execs.push({ qualifier: 'deny', aare, mode: null, target: null, sources: [source] });
      } else if (action === 'Audit' || this.execClass.allowList) {
        this.execs.push(this.allowedExec(action === 'Audit' ? 'audit' : 'allow', aare, source));
      }
    }
    this.report(policy, 'process', rule, this.ruleStatus(action, this.execClass));
  }

  /**
   * Returns the exec rule for an allowed pattern. An executable that attestation maps to
   * another SPIFFE ID with a profile moves the new process to that profile, with `Px` so the
   * environment (LD_PRELOAD and the like) is scrubbed on the way.
   */
  private allowedExec(qualifier: RuleQualifier, aare: string, source: string): ExecRule {
    const attachment = this.context.attachments.find(
      (candidate) => literalAare(candidate.path) === aare,
    );
    const target = attachment && this.transitionTarget(attachment);
    if (target) return { qualifier, aare, mode: 'Px', target, sources: [source] };
    return { qualifier, aare, mode: 'ix', target: null, sources: [source] };
  }

  private transitionTarget(attachment: ExecutableAttachment): string | null {
    if (attachment.spiffeId === this.subject.spiffeId) return null;
    return this.context.names.get(attachment.spiffeId) ?? null;
  }

  /**
   * Adds a literal `Px` rule for each executable of another profile that an allowed pattern
   * covers, since AppArmor prefers a literal rule over a pattern and would otherwise keep the
   * new process in this profile.
   */
  private addTransitions(): void {
    const allowed = this.execs.filter((rule) => rule.qualifier !== 'deny' && isPattern(rule.aare));
    const blanket = !this.execClass.allowList;
    for (const attachment of this.context.attachments) {
      if (attachment.spiffeId === this.subject.spiffeId) continue;
      const aare = literalAare(attachment.path);
      if (this.execs.some((rule) => rule.aare === aare && rule.qualifier !== 'deny')) continue;
      const covering = allowed.filter((rule) => patternsOverlap(rule.aare, aare));
      if (covering.length === 0 && !blanket) continue;
      const target = this.transitionTarget(attachment);
      if (target === null) continue;
      const qualifier = covering.some((rule) => rule.qualifier === 'audit') ? 'audit' : 'allow';
      const sources = covering.flatMap((rule) => rule.sources);
      this.execs.push({ qualifier, aare, mode: 'Px', target, sources });
    }
  }

  /** Returns the AARE of each path and directory of a rule, skipping unsafe values. */
  private ruleAares(
    policy: Policy,
    rule: FileRule | ProcessRule,
    kind: 'file' | 'process',
    index: number,
  ): string[] {
    const aares: string[] = [];
    const translate = (path: string) => (rule.glob ? globAare(path) : literalAare(path));
    for (const path of rule.paths) {
      if (this.isSafe(policy, rule, `spec.${kind}[${index}].paths`, path))
        aares.push(translate(path));
    }
    for (const directory of rule.directories) {
      if (!this.isSafe(policy, rule, `spec.${kind}[${index}].directories`, directory)) continue;
      const base = directory === '/' ? '' : translate(directory);
      // A directory is its own object in AppArmor, named with a trailing '/'.
      if (kind === 'file') aares.push(`${base}/`);
      if (rule.recursive) aares.push(`${base}/**`);
      else if (kind === 'file') aares.push(`${base}/*`, `${base}/*/`);
      else aares.push(`${base}/*`);
    }
    return aares;
  }

  private isSafe(
    policy: Policy,
    rule: FileRule | ProcessRule,
    field: string,
    path: string,
  ): boolean {
    const unsafe = unsafeCharacter(path);
    if (unsafe === null) return true;
    this.context.issues.push({
      position: rule.position,
      fieldPath: field,
      message: `rule "${rule.name}" of policy "${policy.name}": path ${JSON.stringify(path)} contains ${unsafe}, which Sigil never writes into an AppArmor profile`,
      hint: 'rename the file, or leave this rule to the BPF enforcers and generate no profile',
      severity: 'error',
    });
    return false;
  }

  private ruleStatus(action: string, state: ClassState): [RuleStatus, string] {
    if (action === 'Block' && this.complain) return ['audits', COMPLAIN_DENY];
    if (action === 'Block') return ['enforces', 'an audit deny rule denies and logs the access'];
    if (action === 'Audit') return ['audits', 'an audit rule allows and logs the access'];
    if (state.allowList) return ['enforces', 'an allow rule of the allow-list grants the access'];
    return ['enforces', 'the profile allows the whole class, so the access is allowed'];
  }

  private addNetworkRules(): void {
    const types = new Set<SocketType>();
    const blocked = { egress: new Set<SocketType>(), ingress: new Set<SocketType>() };
    this.networkNotes.push(
      'AppArmor 3.0 mediates sockets by address family and type only. Ports, addresses and',
      "peer SPIFFE IDs are enforced by Sigil's BPF programs, not by this profile.",
    );
    for (const policy of this.policies) {
      for (const kind of ['egress', 'ingress'] as const) {
        for (const rule of rulesOf(policy, kind) as (EgressRule | IngressRule)[]) {
          const action = effectiveAction(rule.action, policy.mode);
          const wide = peerOf(rule).kind === 'any' && rule.ports === null;
          if (action !== 'Block') PROTOCOL_TYPES[rule.protocol].forEach((type) => types.add(type));
          if (action === 'Block' && wide) {
            PROTOCOL_TYPES[rule.protocol].forEach((type) => blocked[kind].add(type));
          }
          if (!wide) this.noteInexpressible(policy, kind, rule);
        }
      }
    }
    const denied = [...blocked.egress].filter((type) => blocked.ingress.has(type));
    for (const type of denied) this.network.push(...inetRules('deny', type));
    if (this.networkClass.allowList) {
      for (const type of [...types].sort()) this.network.push(...inetRules('allow', type));
      this.network.push({ qualifier: 'allow', family: 'netlink', type: null });
      this.network.push({ qualifier: 'allow', family: 'unix', type: null });
    }
    this.reportNetworkRules(new Set(denied));
  }

  private noteInexpressible(
    policy: Policy,
    kind: 'egress' | 'ingress',
    rule: EgressRule | IngressRule,
  ): void {
    const parts: string[] = [];
    if (rule.ports !== null) {
      parts.push(
        `ports ${rule.ports.map((r) => (r.lo === r.hi ? `${r.lo}` : `${r.lo}-${r.hi}`)).join(',')}`,
      );
    }
    const peer = peerOf(rule);
    if (peer.kind === 'cidrs')
      parts.push(`addresses ${peer.cidrs.map((cidr) => cidr.text).join(' ')}`);
    if (peer.kind === 'peer') {
      const selector = peer.peer;
      parts.push(
        `peer ${selector.kind === 'spiffeId' ? selector.spiffeId : `${selector.spiffeIdPrefix}/*`}`,
      );
    }
    this.networkNotes.push(
      `${kind} rule ${policy.name}/${rule.name}: ${parts.join('; ')} not expressible`,
    );
    const duplicate = this.context.issues.some(
      (issue) => issue.position === rule.position && issue.fieldPath === `spec.${kind}`,
    );
    if (duplicate) return;
    this.context.issues.push({
      position: rule.position,
      fieldPath: `spec.${kind}`,
      message: `${kind} rule "${rule.name}" of policy "${policy.name}": AppArmor 3.0 network rules cannot express ${parts.join(' or ')}; the profile treats the rule as one on every ${rule.protocol === 'Any' ? 'TCP and UDP' : rule.protocol} socket`,
      hint: "Sigil's BPF enforcers still apply the rule as written",
      severity: 'warning',
    });
  }

  private reportNetworkRules(denied: ReadonlySet<SocketType>): void {
    for (const policy of this.policies) {
      for (const kind of ['egress', 'ingress'] as const) {
        for (const rule of rulesOf(policy, kind) as (EgressRule | IngressRule)[]) {
          const action = effectiveAction(rule.action, policy.mode);
          const wide = peerOf(rule).kind === 'any' && rule.ports === null;
          const types = PROTOCOL_TYPES[rule.protocol];
          let status: [RuleStatus, string];
          if (action === 'Block' && wide && types.every((type) => denied.has(type))) {
            status = this.complain
              ? ['audits', COMPLAIN_DENY]
              : ['enforces', 'a network deny rule covers the socket type in both directions'];
          } else if (action === 'Block') {
            status = [
              'cannot-express',
              'AppArmor 3.0 cannot deny a connection direction, port or peer without denying the whole socket type',
            ];
          } else if (action === 'Audit') {
            status = [
              'cannot-express',
              'AppArmor 3.0 cannot log only the connections this rule matches',
            ];
          } else if (this.networkClass.allowList && !wide) {
            status = [
              'partial',
              'the profile allows the socket type; the port, address or peer is not checked',
            ];
          } else {
            status = ['enforces', 'the profile allows the socket type'];
          }
          this.report(policy, kind, rule, status);
        }
      }
    }
  }

  private reportPostures(): void {
    const classes: [RuleKind[], ClassState][] = [
      [['file'], this.fileClass],
      [['process'], this.execClass],
      [['egress', 'ingress'], this.networkClass],
      [['capability'], this.capabilityClass],
    ];
    for (const [kinds, state] of classes) {
      for (const kind of kinds) {
        for (const policy of this.policies) {
          if (!rulesOf(policy, kind).some((rule) => rule.action === 'Allow')) continue;
          this.report(policy, kind, null, this.postureStatus(kind, state));
        }
      }
    }
  }

  private postureStatus(kind: RuleKind, state: ClassState): [RuleStatus, string] {
    if (!state.allowList) {
      return [
        'cannot-express',
        `AppArmor sees one network class, so ${kind} is an allow-list only when egress and ingress both have Allow rules`,
      ];
    }
    if (state.posture === 'Audit') {
      return [
        'audits',
        'the profile is in complain mode, so AppArmor logs and allows what no rule allows',
      ];
    }
    if (this.complain) {
      return [
        'audits',
        'another class has an Audit posture, so the whole profile is in complain mode and only logs what no rule allows',
      ];
    }
    return ['enforces', 'the profile is an allow-list, so AppArmor denies what no rule allows'];
  }

  private report(
    policy: Policy,
    kind: RuleKind,
    rule: FileRule | ProcessRule | EgressRule | IngressRule | PolicyCapabilityRule | null,
    [status, detail]: [RuleStatus, string],
  ): void {
    const position = rule?.position ?? policy.position;
    this.reports.push({
      profile: this.name,
      spiffeId: this.subject.spiffeId,
      policy: policy.name,
      kind,
      rule: rule?.name ?? POSTURE_RULE,
      file: position.file,
      line: position.line,
      status,
      detail,
    });
  }
}

function rulesOf(policy: Policy, kind: RuleKind): readonly { action: string }[] {
  return policy[kind];
}

function peerOf(rule: EgressRule | IngressRule) {
  return 'to' in rule ? rule.to : rule.from;
}

function fileRule(
  qualifier: RuleQualifier,
  aare: string,
  permissions: string,
  source: string,
): FileAccessRule {
  return { qualifier, aare, permissions, sources: [source] };
}

function inetRules(qualifier: RuleQualifier, type: SocketType): NetworkRule[] {
  return [
    { qualifier, family: 'inet', type },
    { qualifier, family: 'inet6', type },
  ];
}
