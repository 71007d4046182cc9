import { Command } from 'commander';
import { describeKind } from '../policy/describe';
import { diffPolicySets, hasChanges, PolicySetDiff } from '../policy/diff';
import { Explanation, RuleMatch } from '../policy/evaluate';
import { loadPolicyFiles } from '../policy/loader';
import { describeOperation, explainOperation, Operation } from '../policy/operations';
import { policyJsonSchemaText } from '../policy/schema';
import { canonicalSpiffeId } from '../policy/spiffe-selector';
import { PolicySet, RuleKind } from '../policy/types';
import { ConfigError, formatIssue } from '../util/config-error';

/** Destination of a command's output. Tests pass their own to capture the text. */
export interface CommandOutput {
  out(text: string): void;
  err(text: string): void;
}

const PROCESS_OUTPUT: CommandOutput = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

/** Exit code of `explain` and `diff` for invalid files or options (1 means "changed" for diff). */
const EXIT_ERROR = 2;

/**
 * Enforcer of each rule kind in this version, or why there is none. `explain` runs without
 * probing the kernel, so it names both exec and file enforcers.
 */
const ENFORCEMENT: Record<RuleKind, { enforced: boolean; text: string }> = {
  egress: {
    enforced: true,
    text: 'cgroup-sock (cgroup/connect4 and cgroup/connect6) applies egress rules',
  },
  ingress: {
    enforced: false,
    text: 'no enforcer on this node applies ingress rules (Sigil has no ingress enforcer yet)',
  },
  process: {
    enforced: true,
    text:
      'bpf-lsm applies process rules, or tracepoint-kill where BPF LSM is not active; ' +
      '`sigil status` shows which this node runs',
  },
  file: {
    enforced: true,
    text:
      'bpf-lsm applies file rules, or tracepoint-kill where BPF LSM is not active; ' +
      '`sigil status` shows which this node runs',
  },
  capability: {
    enforced: false,
    text:
      'no BPF enforcer applies capability rules; AppArmor profiles from ' +
      '`sigil apparmor generate` do',
  },
};

/**
 * Adds `check`, `schema`, `explain` and `diff` to the `sigil policy` command. Each action sets
 * `process.exitCode` to the code its `run*` function returns.
 */
export function registerPolicyCommands(
  policy: Command,
  output: CommandOutput = PROCESS_OUTPUT,
): void {
  policy
    .command('check')
    .description('validate policy files or directories; prints warnings, exits 1 on errors')
    .argument('<paths...>', 'policy files, or directories of *.yaml and *.yml files')
    .action((paths: string[]) => {
      process.exitCode = runPolicyCheck(paths, output);
    });

  policy
    .command('schema')
    .description('print the JSON Schema (draft 2020-12) of a policy document, for editors')
    .action(() => {
      process.exitCode = runPolicySchema(output);
    });

  policy
    .command('explain')
    .description(
      'decide one operation of one subject with the given policies and show the deciding rule and ' +
        'every matching rule; exits 0, or 2 on invalid files or options',
    )
    .argument('<paths...>', 'policy files or directories')
    .option('--subject <spiffe-id>', 'SPIFFE ID of the process that performs the operation')
    .option('--unidentified', 'the process has no SPIFFE ID')
    .option('--exec <path>', 'decide an exec() of this absolute path')
    .option('--open <path>', 'decide an open() of this absolute path')
    .option('--write', 'with --open: the file is opened for writing')
    .option('--directory', 'with --open: the opened file is a directory')
    .option(
      '--connect <address:port>',
      'decide a connect() to this address and port ([v6]:port for IPv6)',
    )
    .option('--accept <port>', 'decide a connection accepted on this local port (needs --from)')
    .option('--from <address>', 'with --accept: source address of the connection')
    .option('--protocol <protocol>', 'with --connect or --accept: tcp or udp', 'tcp')
    .option(
      '--peer <spiffe-id>',
      'with --connect: owner of the local listener; with --accept: the local client',
    )
    .option('--capability <name>', 'decide a use of this capability, such as NET_RAW')
    .option('--json', 'print the explanation as JSON')
    .action((paths: string[], options: ExplainOptions) => {
      process.exitCode = runPolicyExplain(paths, options, output);
    });

  policy
    .command('diff')
    .description(
      'compare two policy sets (files or directories): changed rules and settings, and the ' +
        'operations whose verdict changes; exits 0 without changes, 1 with changes, 2 on errors',
    )
    .argument('<old>', 'old policy file or directory')
    .argument('<new>', 'new policy file or directory')
    .option('--json', 'print the differences as JSON')
    .action((oldPath: string, newPath: string, options: { json?: boolean }) => {
      process.exitCode = runPolicyDiff(oldPath, newPath, options, output);
    });
}

/** Loads a policy set, or prints every issue and returns undefined. */
function loadOrReport(paths: string[], output: CommandOutput): PolicySet | undefined {
  try {
    return loadPolicyFiles(paths);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    for (const issue of error.issues) output.err(`${formatIssue(issue)}\n`);
    return undefined;
  }
}

/** Validates policy files; prints warnings and errors, and returns 1 on errors. */
export function runPolicyCheck(paths: string[], output: CommandOutput = PROCESS_OUTPUT): number {
  const set = loadOrReport(paths, output);
  if (!set) return 1;
  for (const warning of set.warnings) output.err(`${formatIssue(warning)}\n`);
  output.out(`${set.policies.length} policies in ${set.files.length} files: valid\n`);
  return 0;
}

/** Prints the JSON Schema of a policy document. */
export function runPolicySchema(output: CommandOutput = PROCESS_OUTPUT): number {
  output.out(policyJsonSchemaText());
  return 0;
}

/** Options of `sigil policy explain`, as commander parses them. */
export interface ExplainOptions {
  subject?: string;
  unidentified?: boolean;
  exec?: string;
  open?: string;
  write?: boolean;
  directory?: boolean;
  connect?: string;
  accept?: string;
  from?: string;
  protocol?: string;
  peer?: string;
  capability?: string;
  json?: boolean;
}

/** Error in the options of a command, printed as `sigil policy <command>: <message>`. */
class UsageError extends Error {}

/**
 * Decides one operation and prints the verdict, the deciding rule or posture, and every
 * matching rule. Returns 0, or 2 for invalid files or options.
 */
export function runPolicyExplain(
  paths: string[],
  options: ExplainOptions,
  output: CommandOutput = PROCESS_OUTPUT,
): number {
  let subject: string | null;
  let operation: Operation;
  try {
    subject = subjectOf(options);
    operation = operationOf(options);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    output.err(`sigil policy explain: ${error.message}\n`);
    return EXIT_ERROR;
  }
  const set = loadOrReport(paths, output);
  if (!set) return EXIT_ERROR;

  let explanation: Explanation;
  let programOpen: Explanation | null = null;
  try {
    explanation = explainOperation(set, subject, operation);
    // execve() opens the program file before the exec is decided, so the file rules decide first.
    if (operation.kind === 'process') {
      const open = explainOperation(set, subject, {
        kind: 'file',
        path: operation.path,
        write: false,
      });
      if (open.decision.denied) programOpen = open;
    }
  } catch (error) {
    // The decision functions reject invalid addresses and paths with Error.
    output.err(`sigil policy explain: ${(error as Error).message}\n`);
    return EXIT_ERROR;
  }
  if (options.json) {
    const json = explanationJson(subject, operation, explanation);
    const withOpen = programOpen
      ? { ...json, programOpen: { verdict: describeVerdict(programOpen), ...programOpen } }
      : json;
    output.out(`${JSON.stringify(withOpen, null, 2)}\n`);
  } else {
    output.out(formatExplanation(subject, operation, explanation));
    if (programOpen) {
      output.out(
        `program open: ${describeVerdict(programOpen)}: execve() opens the program first, ` +
          'so the file rules deny the exec before the process rules apply\n',
      );
    }
  }
  return 0;
}

function subjectOf(options: ExplainOptions): string | null {
  if (options.subject !== undefined && options.unidentified) {
    throw new UsageError('give either --subject or --unidentified, not both');
  }
  if (options.unidentified) return null;
  if (options.subject === undefined) {
    throw new UsageError(
      'missing --subject <spiffe-id> (or --unidentified for a process without one)',
    );
  }
  return canonicalOption(options.subject, '--subject');
}

function canonicalOption(text: string, option: string): string {
  try {
    return canonicalSpiffeId(text);
  } catch (error) {
    throw new UsageError(`${option}: ${(error as Error).message}`);
  }
}

function operationOf(options: ExplainOptions): Operation {
  const operationOptions = (['exec', 'open', 'connect', 'accept', 'capability'] as const).filter(
    (name) => options[name] !== undefined,
  );
  if (operationOptions.length !== 1) {
    const found =
      operationOptions.length === 0
        ? 'none'
        : operationOptions.map((name) => `--${name}`).join(' and ');
    throw new UsageError(
      `give exactly one of --exec, --open, --connect, --accept and --capability, found ${found}`,
    );
  }
  const [kind] = operationOptions;
  checkOnlyWith(options.write !== undefined, '--write', kind, ['open']);
  checkOnlyWith(options.directory !== undefined, '--directory', kind, ['open']);
  checkOnlyWith(options.from !== undefined, '--from', kind, ['accept']);
  checkOnlyWith(options.peer !== undefined, '--peer', kind, ['connect', 'accept']);
  switch (kind) {
    case 'exec':
      return { kind: 'process', path: options.exec! };
    case 'capability':
      return { kind: 'capability', capability: options.capability! };
    case 'open':
      return {
        kind: 'file',
        path: options.open!,
        write: options.write === true,
        ...(options.directory ? { directory: true } : {}),
      };
    case 'connect': {
      const { address, port } = parseEndpoint(options.connect!);
      return {
        kind: 'egress',
        address,
        port,
        protocol: protocolOf(options),
        peer: peerOf(options),
      };
    }
    case 'accept': {
      if (options.from === undefined) throw new UsageError('--accept needs --from <address>');
      const port = parsePort(options.accept!, '--accept');
      const address = options.from;
      return {
        kind: 'ingress',
        address,
        port,
        protocol: protocolOf(options),
        peer: peerOf(options),
      };
    }
  }
}

function checkOnlyWith(present: boolean, option: string, kind: string, allowed: string[]): void {
  if (present && !allowed.includes(kind)) {
    throw new UsageError(
      `${option} works only with ${allowed.map((name) => `--${name}`).join(' or ')}`,
    );
  }
}

function peerOf(options: ExplainOptions): string | null {
  return options.peer === undefined ? null : canonicalOption(options.peer, '--peer');
}

function protocolOf(options: ExplainOptions): 'TCP' | 'UDP' {
  const protocol = (options.protocol ?? 'tcp').toUpperCase();
  if (protocol !== 'TCP' && protocol !== 'UDP') {
    throw new UsageError(
      `--protocol: invalid protocol "${options.protocol}" (valid values: tcp, udp)`,
    );
  }
  return protocol;
}

/** Parses `a.b.c.d:port` or `[v6]:port`. The address itself is checked by the decision. */
function parseEndpoint(text: string): { address: string; port: number } {
  const match = /^\[([^\]]+)\]:([^:]+)$/.exec(text) ?? /^([^:[\]]+):([^:]+)$/.exec(text);
  if (!match) {
    throw new UsageError(
      `--connect: invalid endpoint "${text}" (expected ADDRESS:PORT such as 10.0.0.5:5432 or [2001:db8::1]:443)`,
    );
  }
  return { address: match[1], port: parsePort(match[2], '--connect') };
}

function parsePort(text: string, option: string): number {
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) > 65535) {
    throw new UsageError(`${option}: invalid port "${text}" (expected 0-65535)`);
  }
  return Number(text);
}

/** Describes a verdict in one line, such as `Block by rule web/db (web.yaml:12)`. */
export function describeVerdict(explanation: Explanation): string {
  const { decision, kind } = explanation;
  const action = decision.wouldBlock
    ? `${decision.action} (would be Block in Enforce mode)`
    : decision.action;
  if (decision.reason === 'rule' && explanation.decidingMatch) {
    const match = explanation.decidingMatch;
    return `${action} by rule ${match.policy}/${match.rule} (${match.file}:${match.line})`;
  }
  if (decision.reason === 'posture') {
    return `${action} by the ${kind} posture of ${explanation.policies.join(', ')}`;
  }
  if (explanation.policies.length === 0) return `${action}: no policy selects the subject`;
  return `${action}: the subject has no Allow ${kind} rule, so no posture applies`;
}

function formatSubject(subject: string | null): string {
  return subject ?? 'none (unidentified process)';
}

function formatExplanation(
  subject: string | null,
  operation: Operation,
  explanation: Explanation,
): string {
  const lines = [
    `verdict: ${describeVerdict(explanation)}`,
    `subject: ${formatSubject(subject)}`,
    `operation: ${describeOperation(operation)}`,
    `policies: ${explanation.policies.length > 0 ? explanation.policies.join(', ') : 'none'}`,
  ];
  if (explanation.policies.length > 0) {
    const posture = explanation.posture ?? 'none';
    const applies = explanation.hasAllow
      ? 'applies'
      : `does not apply: no Allow ${operation.kind} rule`;
    const note = explanation.postureWouldBlock ? ', would be Block in Enforce mode' : '';
    lines.push(`${operation.kind} posture: ${posture}${note} (${applies})`);
  }
  lines.push('matching rules:');
  if (explanation.matches.length === 0) lines.push('  none');
  for (const match of explanation.matches) lines.push(`  ${formatMatch(match)}`);
  lines.push(`enforcement: ${ENFORCEMENT[operation.kind].text}`);
  return `${lines.join('\n')}\n`;
}

function formatMatch(match: RuleMatch): string {
  let action: string = match.action;
  if (match.readOnlyWrite) action += ' (readOnly rule, write)';
  if (match.wouldBlock) action += ' (would be Block in Enforce mode)';
  let text = `${action} ${match.policy}/${match.rule} (${match.file}:${match.line})`;
  if (match.severity) text += ` severity ${match.severity}`;
  if (match.tags) text += ` tags ${match.tags.join(', ')}`;
  if (match.message) text += ` message ${JSON.stringify(match.message)}`;
  return text;
}

function explanationJson(subject: string | null, operation: Operation, explanation: Explanation) {
  return {
    subject,
    operation,
    verdict: describeVerdict(explanation),
    ...explanation,
    enforced: ENFORCEMENT[operation.kind].enforced,
    enforcement: ENFORCEMENT[operation.kind].text,
  };
}

/**
 * Compares two policy sets and prints the changed rules, settings and sampled verdicts.
 * Returns 0 without changes, 1 with changes and 2 for invalid files, like diff(1).
 */
export function runPolicyDiff(
  oldPath: string,
  newPath: string,
  options: { json?: boolean },
  output: CommandOutput = PROCESS_OUTPUT,
): number {
  const before = loadOrReport([oldPath], output);
  const after = loadOrReport([newPath], output);
  if (!before || !after) return EXIT_ERROR;
  const diff = diffPolicySets(before, after);
  if (options.json) output.out(`${JSON.stringify(diffJson(diff), null, 2)}\n`);
  else output.out(formatDiff(diff));
  return hasChanges(diff) ? 1 : 0;
}

function formatDiff(diff: PolicySetDiff): string {
  const lines: string[] = [];
  if (diff.settings.length > 0) {
    lines.push('policies:');
    for (const change of diff.settings) {
      let description = `${change.setting} ${change.before} -> ${change.after}`;
      if (change.setting === 'policy')
        description = change.after === 'absent' ? 'removed' : 'added';
      lines.push(`  ${change.policy} (subject ${change.subject}): ${description}`);
    }
  }
  if (diff.rules.length > 0) {
    lines.push('rules:');
    let heading = '';
    for (const change of diff.rules) {
      const next = `  subject ${change.subject}, ${describeKind(change.kind)}:`;
      if (next !== heading) lines.push(next);
      heading = next;
      const name = `${change.policy}/${change.rule}`;
      if (change.change === 'added') lines.push(`    + ${name}: ${change.after}`);
      else if (change.change === 'removed') lines.push(`    - ${name}: ${change.before}`);
      else lines.push(`    ~ ${name}: ${change.before}`, `      now: ${change.after}`);
    }
  }
  lines.push(
    `verdicts: ${diff.verdicts.length} of ${diff.sampledOperations} sampled operations change`,
  );
  for (const change of diff.verdicts) {
    lines.push(
      `  ${formatSubject(change.subject)}: ${describeOperation(change.operation)}: ` +
        `${describeVerdict(change.before)} -> ${describeVerdict(change.after)}`,
    );
  }
  if (!hasChanges(diff)) lines.push('no changes');
  return `${lines.join('\n')}\n`;
}

function diffJson(diff: PolicySetDiff) {
  return {
    changed: hasChanges(diff),
    settings: diff.settings,
    rules: diff.rules,
    sampledOperations: diff.sampledOperations,
    verdicts: diff.verdicts.map((change) => ({
      subject: change.subject,
      operation: change.operation,
      description: describeOperation(change.operation),
      before: { verdict: describeVerdict(change.before), ...change.before.decision },
      after: { verdict: describeVerdict(change.after), ...change.after.decision },
    })),
  };
}
