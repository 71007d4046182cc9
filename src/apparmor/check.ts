import { isPattern, unsafeCharacter } from './aare';
import { ExecRule, ProfileModel } from './model';
import { patternsOverlap } from './pattern-overlap';
import { PROFILE_PREFIX } from './profile-name';

const OPTIONAL_DESCENT = '{,/**}';
const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * Checks a set of profiles for what `apparmor_parser` rejects, or accepts but gets wrong, and
 * returns one message per problem (empty when the set is valid):
 * - a name without the Sigil prefix, with characters outside `[A-Za-z0-9._-]`, or used twice;
 * - two profiles attached to the same executable;
 * - an unsafe character in a pattern or an attachment;
 * - two allowed exec rules with different modes on the same path, or on overlapping patterns
 *   (the parser fails with "conflicting x modifiers");
 * - a `Px` rule whose target profile is not in the set (the parser accepts it, and the kernel
 *   denies the exec with "profile transition not found").
 */
export function checkProfiles(models: readonly ProfileModel[]): string[] {
  const problems: string[] = [];
  const names = new Set<string>();
  const attachedTo = new Map<string, string>();
  for (const model of models) {
    if (!model.name.startsWith(PROFILE_PREFIX) || !PROFILE_NAME.test(model.name)) {
      problems.push(
        `profile name ${JSON.stringify(model.name)} is not ${PROFILE_PREFIX} followed by letters, digits, '.', '_' and '-'`,
      );
    }
    if (names.has(model.name)) problems.push(`profile name ${model.name} is used twice`);
    names.add(model.name);
    for (const path of model.attachments) {
      const owner = attachedTo.get(path);
      if (owner !== undefined) {
        problems.push(`profiles ${owner} and ${model.name} both attach to ${path}`);
      }
      attachedTo.set(path, model.name);
      const unsafe = unsafeCharacter(path);
      if (unsafe !== null)
        problems.push(
          `profile ${model.name}: attachment ${JSON.stringify(path)} contains ${unsafe}`,
        );
    }
    for (const rule of [...model.files, ...model.execs]) {
      // `{,/**}` is the one group that the generator itself writes.
      const unsafe = unsafeCharacter(rule.aare.split(OPTIONAL_DESCENT).join(''));
      if (unsafe !== null)
        problems.push(
          `profile ${model.name}: path ${JSON.stringify(rule.aare)} contains ${unsafe}`,
        );
    }
  }
  for (const model of models) {
    problems.push(...execConflicts(model));
    for (const rule of model.execs) {
      if (rule.mode === 'Px' && (rule.target === null || !names.has(rule.target))) {
        problems.push(
          `profile ${model.name}: exec of ${rule.aare} moves to profile ${rule.target ?? '(none)'}, which is not generated`,
        );
      }
    }
  }
  return problems;
}

/** Returns the allowed exec rules of a profile, with the blanket exec rule as `/**` ix. */
function allowedExecs(model: ProfileModel): ExecRule[] {
  const rules = model.execs.filter((rule) => rule.qualifier !== 'deny');
  if (model.allowAllExec) {
    rules.push({ qualifier: 'allow', aare: '/**', mode: 'ix', target: null, sources: [] });
  }
  return rules;
}

function execConflicts(model: ProfileModel): string[] {
  const problems: string[] = [];
  const rules = allowedExecs(model);
  for (let i = 0; i < rules.length; i++) {
    for (let j = i + 1; j < rules.length; j++) {
      const [a, b] = [rules[i], rules[j]];
      if (a.mode === b.mode && a.target === b.target) continue;
      const bothLiteral = !isPattern(a.aare) && !isPattern(b.aare);
      const bothPatterns = isPattern(a.aare) && isPattern(b.aare);
      // A literal path wins over a pattern, so only equal literals or two patterns conflict.
      const conflict = bothLiteral
        ? a.aare === b.aare
        : bothPatterns && patternsOverlap(a.aare, b.aare);
      if (conflict) {
        problems.push(
          `profile ${model.name}: exec rules ${a.aare} (${modeText(a)}) and ${b.aare} (${modeText(b)}) match the same path with different exec modes`,
        );
      }
    }
  }
  return problems;
}

function modeText(rule: ExecRule): string {
  return rule.mode === 'Px' ? `Px -> ${rule.target}` : String(rule.mode);
}
