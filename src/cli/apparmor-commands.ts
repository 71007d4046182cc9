import { Command, Option } from 'commander';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateProfiles, ProfileCheckError, ProfileGeneration } from '../apparmor/generate';
import { compileProfile, ParserError } from '../apparmor/parser';
import { isSigilProfileName } from '../apparmor/profile-name';
import { RuleReport } from '../apparmor/rule-report';
import { loadRegistrationFile, Registration } from '../identity/registration';
import { loadPolicyFiles } from '../policy/loader';
import { ConfigError, formatIssue } from '../util/config-error';
import { DEFAULT_SOCKET } from './defaults';
import { parseDuration, parseSubject, RecordOptions, runAppArmorRecord } from './apparmor-record';
import { CommandOutput } from './policy-commands';

const PROCESS_OUTPUT: CommandOutput = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

/** Options of `sigil apparmor generate`, as commander parses them. */
export interface GenerateOptions {
  policy: string[];
  registration?: string;
  out?: string;
  check?: boolean;
  report?: boolean;
}

/** Adds `generate` and `record` to the `sigil apparmor` command. */
export function registerAppArmorCommands(
  apparmor: Command,
  output: CommandOutput = PROCESS_OUTPUT,
): void {
  apparmor
    .command('generate')
    .description(
      'write one AppArmor profile per subject SPIFFE ID of the policies; exits 1 on errors',
    )
    .requiredOption(
      '-p, --policy <path>',
      'policy file or directory of *.yaml and *.yml files, repeatable',
      collect,
    )
    .option(
      '-r, --registration <file>',
      'registration file: unix:path selectors attach profiles to executables, and ' +
        'spiffeIdPrefix and trustDomain subjects get a profile per entry they select',
    )
    .option(
      '-o, --out <dir>',
      'write each profile to <dir>/<profile name> and remove the sigil.* files of profiles ' +
        'no longer generated (default: print every profile to stdout)',
    )
    .option('--check', 'compile each profile with apparmor_parser -Q -K before writing it')
    .option(
      '--report',
      'print what AppArmor does with each rule: enforces, audits, partial or cannot-express',
    )
    .action(async (options: GenerateOptions) => {
      process.exitCode = await runAppArmorGenerate(options, output);
    });

  apparmor
    .command('record')
    .description(
      "record what one SPIFFE ID does (exec, connect and, with BPF LSM, file events) from the running agent's event stream, and write a least-privilege AppArmor profile or policy",
    )
    .requiredOption('--subject <spiffe-id>', 'SPIFFE ID to record', parseSubject)
    .requiredOption(
      '--duration <time>',
      'how long to record: seconds, or a number with s, m or h (such as 90s or 5m)',
      parseDuration,
    )
    .addOption(
      new Option('--format <format>', 'output: an AppArmor profile or a Sigil policy')
        .choices(['profile', 'policy'])
        .default('profile'),
    )
    .option('-s, --socket <path>', 'unix socket of the agent audit gRPC service', DEFAULT_SOCKET)
    .option(
      '-r, --registration <file>',
      'with --format profile: registration file whose unix:path selectors attach the profile',
    )
    .option('--name <name>', 'policy name (default: recorded- and the SPIFFE ID)')
    .option('-o, --out <file>', 'write the profile or policy to this file (default: stdout)')
    .action(async (options: RecordOptions) => {
      process.exitCode = await runAppArmorRecord(options, output);
    });
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Generates, optionally compiles, and writes or prints the profiles. Returns the exit code. */
export async function runAppArmorGenerate(
  options: GenerateOptions,
  output: CommandOutput = PROCESS_OUTPUT,
): Promise<number> {
  const generation = generateOrReport(options, output);
  if (!generation) return 1;
  for (const warning of generation.warnings) output.err(`${formatIssue(warning)}\n`);
  if (options.check) {
    for (const profile of generation.profiles) {
      try {
        await compileProfile(profile.text);
      } catch (error) {
        if (!(error instanceof ParserError)) throw error;
        output.err(`profile ${profile.name}: ${error.message}\n`);
        return 1;
      }
    }
  }
  if (options.out === undefined) {
    output.out(generation.profiles.map((profile) => profile.text).join('\n'));
  } else {
    writeProfiles(options.out, generation, output);
  }
  if (options.report) output.err(formatReports(generation.reports));
  return 0;
}

function generateOrReport(
  options: GenerateOptions,
  output: CommandOutput,
): ProfileGeneration | undefined {
  try {
    const set = loadPolicyFiles(options.policy);
    let registration: Registration | null = null;
    if (options.registration !== undefined) {
      registration = loadRegistrationFile(options.registration);
    }
    return generateProfiles(set, registration);
  } catch (error) {
    if (error instanceof ConfigError) {
      for (const issue of error.issues) output.err(`${formatIssue(issue)}\n`);
    } else if (error instanceof ProfileCheckError) {
      output.err(`sigil apparmor generate: ${error.message}\n`);
    } else {
      output.err(`sigil apparmor generate: ${(error as Error).message}\n`);
    }
    return undefined;
  }
}

/**
 * Writes each profile to `<dir>/<name>` and removes the files of Sigil profiles that are no
 * longer generated. Files without the Sigil prefix are left alone.
 */
function writeProfiles(dir: string, generation: ProfileGeneration, output: CommandOutput): void {
  mkdirSync(dir, { recursive: true });
  const names = new Set(generation.profiles.map((profile) => profile.name));
  for (const entry of readdirSync(dir)) {
    if (isSigilProfileName(entry) && !names.has(entry)) {
      rmSync(join(dir, entry));
      output.err(`removed ${join(dir, entry)}\n`);
    }
  }
  for (const profile of generation.profiles) {
    writeFileSync(join(dir, profile.name), profile.text);
    const attachment =
      profile.attachments.length > 0
        ? `attached to ${profile.attachments.join(', ')}`
        : `attached by name (localhost/${profile.name})`;
    const mode = profile.complain ? ', complain mode' : '';
    output.err(`wrote ${join(dir, profile.name)}: ${profile.spiffeId}, ${attachment}${mode}\n`);
  }
}

/** Formats one line per rule: `status profile policy/rule (kind) file:line: detail`. */
export function formatReports(reports: readonly RuleReport[]): string {
  return reports
    .map(
      (report) =>
        `${report.status.padEnd(14)} ${report.profile} ${report.policy}/${report.rule} ` +
        `(${report.kind}) ${report.file}:${report.line}: ${report.detail}\n`,
    )
    .join('');
}
