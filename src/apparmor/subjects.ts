import { Registration } from '../identity/registration';
import { subjectMatches } from '../policy/spiffe-selector';
import { Policy, PolicySet } from '../policy/types';
import { ConfigIssue } from '../util/config-error';
import { unsafeCharacter } from './aare';

/** A SPIFFE ID that gets a profile, with the policies that select it. */
export interface ProfileSubject {
  spiffeId: string;
  /** Policies that select the ID, in policy set order. */
  policies: Policy[];
}

/** An executable path that attestation maps to a SPIFFE ID through a `unix:path` selector. */
export interface ExecutableAttachment {
  path: string;
  spiffeId: string;
}

/**
 * Lists the SPIFFE IDs that get a profile: the IDs of `spiffeId` subjects, and the registration
 * entries' IDs that a `spiffeIdPrefix` or `trustDomain` subject selects. A subject that selects
 * no concrete ID, and an `unidentified` subject, get a warning and no profile. The result is
 * sorted by SPIFFE ID.
 */
export function profileSubjects(
  set: PolicySet,
  registration: Registration | null,
  warnings: ConfigIssue[],
): ProfileSubject[] {
  const ids = new Set<string>();
  const registered = registration?.entries.map((entry) => entry.spiffeId) ?? [];
  for (const policy of set.policies) {
    const subject = policy.subjectSelector;
    if (subject.kind === 'unidentified') {
      warnings.push(
        policyWarning(
          policy,
          'an unidentified subject gets no AppArmor profile: AppArmor attaches profiles to ' +
            'executables or container names, not to the absence of a SPIFFE ID',
          'BPF enforcers still apply this policy',
        ),
      );
      continue;
    }
    if (subject.kind === 'spiffeId') {
      ids.add(subject.spiffeId);
      continue;
    }
    const matched = registered.filter((spiffeId) => subjectMatches(subject, spiffeId));
    if (matched.length === 0) {
      warnings.push(
        policyWarning(
          policy,
          'the subject selects no SPIFFE ID of the registration file, so no profile is generated',
          'pass --registration with entries under this subject, or use a spiffeId subject',
        ),
      );
    }
    for (const spiffeId of matched) ids.add(spiffeId);
  }
  return [...ids].sort().map((spiffeId) => ({
    spiffeId,
    policies: set.policies.filter((policy) => subjectMatches(policy.subjectSelector, spiffeId)),
  }));
}

/**
 * Collects the `unix:path` selectors of the registration file. Adds an error issue for a path
 * that Sigil cannot write into a profile, and for a path that two SPIFFE IDs share. AppArmor
 * attaches one profile to an executable, while attestation would choose by the other
 * selectors, which AppArmor does not check.
 */
export function executableAttachments(
  registration: Registration | null,
  issues: ConfigIssue[],
): ExecutableAttachment[] {
  if (registration === null) return [];
  const owners = new Map<string, { spiffeId: string; line: number }>();
  const attachments: ExecutableAttachment[] = [];
  registration.entries.forEach((entry, index) => {
    const paths = entry.selectors.filter((s) => s.type === 'unix' && s.value.startsWith('path:'));
    const others = entry.selectors.filter((s) => !paths.includes(s));
    for (const selector of paths) {
      const path = selector.value.slice('path:'.length);
      const fieldPath = `entries[${index}].selectors`;
      const unsafe = unsafeCharacter(path);
      if (unsafe !== null) {
        issues.push({
          position: entry.position,
          fieldPath,
          message: `selector ${JSON.stringify(selector.text)} contains ${unsafe}, which Sigil never writes into an AppArmor profile`,
          hint: 'rename the executable, or attach the profile by name',
          severity: 'error',
        });
        continue;
      }
      const owner = owners.get(path);
      if (owner !== undefined && owner.spiffeId !== entry.spiffeId) {
        issues.push({
          position: entry.position,
          fieldPath,
          message: `executable ${path} is a unix:path selector of ${owner.spiffeId} (line ${owner.line}) and of ${entry.spiffeId}, but AppArmor attaches one profile to an executable`,
          hint: 'give each SPIFFE ID its own executable, or remove one unix:path selector and attach that profile by name',
          severity: 'error',
        });
        continue;
      }
      if (owner === undefined) {
        owners.set(path, { spiffeId: entry.spiffeId, line: entry.position.line });
        attachments.push({ path, spiffeId: entry.spiffeId });
      }
      if (others.length > 0) {
        issues.push({
          position: entry.position,
          fieldPath,
          message: `the profile of ${entry.spiffeId} attaches to every process that runs ${path}; AppArmor does not check the entry's other selectors (${others.map((s) => s.text).join(', ')})`,
          hint: 'keep one SPIFFE ID per executable on AppArmor nodes',
          severity: 'warning',
        });
      }
    }
  });
  return attachments.sort((a, b) => compareText(a.path, b.path));
}

function policyWarning(policy: Policy, message: string, hint: string): ConfigIssue {
  return {
    position: policy.position,
    fieldPath: 'spec.subject',
    message: `policy "${policy.name}": ${message}`,
    hint,
    severity: 'warning',
  };
}

/** Compares by UTF-16 code units, so the order does not depend on the locale. */
export function compareText(a: string, b: string): number {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}
