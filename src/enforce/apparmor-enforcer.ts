/**
 * The agent's AppArmor enforcer: on a node where AppArmor is enabled, it keeps one loaded
 * profile per subject SPIFFE ID in step with the policies. It loads and replaces profiles with
 * `apparmor_parser -r`, removes those no longer generated with `apparmor_parser -R`, and touches
 * only profiles whose name has the Sigil prefix.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { generateProfiles, ProfileCheckError, ProfileGeneration } from '../apparmor/generate';
import { loadProfile, ParserOptions, removeProfiles } from '../apparmor/parser';
import { isSigilProfileName } from '../apparmor/profile-name';
import { Registration } from '../identity/registration';
import { PolicySet } from '../policy/types';
import { ConfigError, formatIssue } from '../util/config-error';

/** AppArmor's directory in securityfs. */
export const APPARMOR_SECURITYFS = '/sys/kernel/security/apparmor';
/** The module parameter that reads `Y` when AppArmor is enabled at boot. */
export const APPARMOR_ENABLED_PARAMETER = '/sys/module/apparmor/parameters/enabled';

export interface AppArmorEnforcerOptions extends ParserOptions {
  logger: Logger;
  /** AppArmor's securityfs directory; `APPARMOR_SECURITYFS` by default. */
  securityfsDir?: string;
}

/**
 * Returns whether AppArmor is enabled on this node: its securityfs directory exists, or its
 * module parameter reads `Y` (securityfs may not be mounted yet).
 */
export function appArmorEnabled(
  securityfsDir = APPARMOR_SECURITYFS,
  parameter = APPARMOR_ENABLED_PARAMETER,
): boolean {
  if (existsSync(securityfsDir)) return true;
  try {
    return readFileSync(parameter, 'utf8').trim() === 'Y';
  } catch {
    return false;
  }
}

/**
 * Returns the names of the loaded profiles from securityfs `profiles`, whose lines read
 * `<name> (<mode>)`. Names may contain blanks, so each line is cut at its last ` (`.
 */
export function loadedProfileNames(securityfsDir = APPARMOR_SECURITYFS): string[] {
  const text = readFileSync(join(securityfsDir, 'profiles'), 'utf8');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const end = line.lastIndexOf(' (');
      return end < 0 ? line : line.slice(0, end);
    });
}

/** Keeps the loaded Sigil profiles in step with the policies. */
export class AppArmorEnforcer {
  private readonly log: Logger;
  private readonly securityfsDir: string;
  /** Text of each profile that this enforcer loaded, by name. */
  private readonly loaded = new Map<string, string>();
  /** The apply in progress, so applies run one after the other. */
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly options: AppArmorEnforcerOptions) {
    this.log = options.logger.child({ enforcer: 'apparmor' });
    this.securityfsDir = options.securityfsDir ?? APPARMOR_SECURITYFS;
    this.log.info('AppArmor is enabled: Sigil loads a profile per subject SPIFFE ID');
  }

  /**
   * Generates the profiles of a policy set and loads them. Profiles whose text did not change
   * are not loaded again, and loaded Sigil profiles that are no longer generated are removed.
   * When the policies cannot become profiles, or the parser rejects one, the error is logged
   * and the profiles already loaded stay in force. Never rejects.
   */
  apply(set: PolicySet, registration: Registration | null): Promise<void> {
    this.queue = this.queue.then(() => this.applyNow(set, registration));
    return this.queue;
  }

  private async applyNow(set: PolicySet, registration: Registration | null): Promise<void> {
    let generation: ProfileGeneration;
    try {
      generation = generateProfiles(set, registration);
    } catch (error) {
      const errors =
        error instanceof ConfigError
          ? error.issues.map(formatIssue)
          : error instanceof ProfileCheckError
            ? error.problems
            : [(error as Error).message];
      this.log.error(
        { errors },
        'AppArmor profiles not generated; the loaded profiles stay in force',
      );
      return;
    }
    for (const warning of generation.warnings) this.log.warn(formatIssue(warning));
    this.logReports(generation);
    for (const profile of generation.profiles) {
      if (this.loaded.get(profile.name) === profile.text) continue;
      try {
        await loadProfile(profile.text, this.options);
      } catch (error) {
        this.log.error(
          { err: error, profile: profile.name, spiffeId: profile.spiffeId },
          'AppArmor profile not loaded; the loaded version, if any, stays in force',
        );
        continue;
      }
      const replaced = this.loaded.has(profile.name);
      this.loaded.set(profile.name, profile.text);
      this.log.info(
        {
          profile: profile.name,
          spiffeId: profile.spiffeId,
          attachments: profile.attachments,
          mode: profile.complain ? 'complain' : 'enforce',
        },
        replaced ? 'AppArmor profile replaced' : 'AppArmor profile loaded',
      );
    }
    await this.removeStale(new Set(generation.profiles.map((profile) => profile.name)));
  }

  private logReports(generation: ProfileGeneration): void {
    for (const report of generation.reports) {
      const fields = {
        profile: report.profile,
        policy: report.policy,
        rule: report.rule,
        kind: report.kind,
        file: report.file,
        line: report.line,
        status: report.status,
      };
      this.log.info(fields, `AppArmor ${report.status}: ${report.detail}`);
    }
  }

  /** Removes loaded Sigil profiles that are not in `keep`; other profiles are never removed. */
  private async removeStale(keep: ReadonlySet<string>): Promise<void> {
    let names: string[];
    try {
      names = loadedProfileNames(this.securityfsDir);
    } catch (error) {
      this.log.error({ err: error }, 'cannot list the loaded AppArmor profiles; none removed');
      return;
    }
    // A name with `//` is a child profile, such as a `null-` profile the kernel made, which
    // goes away with its parent.
    const stale = names
      .filter((name) => isSigilProfileName(name) && !name.includes('//') && !keep.has(name))
      .sort();
    if (stale.length === 0) return;
    try {
      await removeProfiles(stale, this.options);
    } catch (error) {
      this.log.error({ err: error, profiles: stale }, 'AppArmor profiles not removed');
      return;
    }
    for (const name of stale) this.loaded.delete(name);
    this.log.info({ profiles: stale }, 'AppArmor profiles removed');
  }
}
