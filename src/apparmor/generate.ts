import { Registration } from '../identity/registration';
import { PolicySet } from '../policy/types';
import { ConfigError, ConfigIssue } from '../util/config-error';
import { checkProfiles } from './check';
import { ProfileModel } from './model';
import { buildProfile } from './profile-builder';
import { assignProfileNames } from './profile-name';
import { renderProfile } from './render';
import { RuleReport } from './rule-report';
import { executableAttachments, profileSubjects } from './subjects';

/** One generated profile. */
export interface GeneratedProfile {
  name: string;
  spiffeId: string;
  /** Executables the profile attaches to; empty when it attaches by name only. */
  attachments: string[];
  complain: boolean;
  /** The policy file text, ending in a newline. */
  text: string;
}

/** The result of `generateProfiles`. */
export interface ProfileGeneration {
  /** Profiles sorted by name. */
  profiles: GeneratedProfile[];
  /** One entry per rule (and per posture) of every policy in every profile. */
  reports: RuleReport[];
  /** Problems that do not stop generation, such as network ports that AppArmor cannot express. */
  warnings: ConfigIssue[];
}

/** Error for a profile set that fails the checks of `checkProfiles`. */
export class ProfileCheckError extends Error {
  readonly problems: string[];

  constructor(problems: string[]) {
    super(`invalid AppArmor profiles:\n${problems.map((problem) => `  ${problem}`).join('\n')}`);
    this.name = 'ProfileCheckError';
    this.problems = problems;
  }
}

/**
 * Generates one AppArmor profile per subject SPIFFE ID of a policy set. Executables come from
 * the `unix:path` selectors of the registration file; without one, every profile attaches by
 * name only. Throws `ConfigError` listing every policy or registration value that cannot be
 * written into a profile, and `ProfileCheckError` when the profiles fail `checkProfiles`.
 */
export function generateProfiles(
  set: PolicySet,
  registration: Registration | null,
): ProfileGeneration {
  const issues: ConfigIssue[] = [];
  const subjects = profileSubjects(set, registration, issues);
  const attachments = executableAttachments(registration, issues);
  const names = assignProfileNames(subjects.map((subject) => subject.spiffeId));
  const context = { names, attachments, issues };
  const built = subjects.map((subject) => buildProfile(subject, context));
  if (issues.some((issue) => issue.severity === 'error')) throw new ConfigError(issues);
  const models = built.map((profile) => profile.model);
  const problems = checkProfiles(models);
  if (problems.length > 0) throw new ProfileCheckError(problems);
  return {
    profiles: models.map(generatedProfile).sort((a, b) => (a.name < b.name ? -1 : 1)),
    reports: built.flatMap((profile) => profile.reports),
    warnings: issues,
  };
}

function generatedProfile(model: ProfileModel): GeneratedProfile {
  return {
    name: model.name,
    spiffeId: model.spiffeId,
    attachments: [...model.attachments],
    complain: model.complain,
    text: renderProfile(model),
  };
}
