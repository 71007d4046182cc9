/**
 * Paths in AppArmor's pattern language (AARE), as AppArmor 3.0 parses them inside a quoted
 * string: the facts come from the apparmor.d(5) manual page of AppArmor 3.0.8 and were checked
 * with `apparmor_parser` 3.0.8.
 */

/**
 * Characters that Sigil never writes into a profile. A line break or NUL ends a rule, and a
 * comma, a quote or a brace can end the path or the rule in tools that read profiles with
 * their own patterns (aa-logprof, aa-complain). `#` starts a comment in those tools even inside
 * a word. Escaping would be enough for `apparmor_parser`, but rejecting keeps every profile
 * readable by every AppArmor tool.
 */
const UNSAFE_CHARACTER = /[\u0000-\u001f\u007f",{}#]/u;

/** Characters with a meaning in AARE that a literal path escapes with a backslash. */
const AARE_SPECIAL = /[\\*?[\]{}^]/g;

/** Returns a description of the first character of `value` that Sigil never writes, or null. */
export function unsafeCharacter(value: string): string | null {
  const match = UNSAFE_CHARACTER.exec(value);
  if (match === null) return null;
  const character = match[0];
  const code = character.codePointAt(0)!;
  if (code < 0x20 || code === 0x7f) {
    return `the control character U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
  }
  return `'${character}'`;
}

/** Escapes every AARE special character so the path matches only itself. */
export function literalAare(path: string): string {
  return path.replace(AARE_SPECIAL, (character) => `\\${character}`);
}

/**
 * Translates a path of a `glob: true` rule, where `*` matches within one segment and a `**`
 * segment matches any number of segments, into AARE. A whole-segment `*` matches at least one
 * character in both languages. AppArmor's `**` also needs one character, so a middle `/**`
 * becomes `{,/**}` to keep the zero-segment match, and a last `/**` stays as it is because the
 * policy language also needs one segment there.
 */
export function globAare(path: string): string {
  const segments = path.slice(1).split('/');
  let result = '';
  segments.forEach((segment, index) => {
    const last = index === segments.length - 1;
    if (segment === '**') {
      result += last ? '/**' : '{,/**}';
      return;
    }
    result += `/${segment.split('*').map(literalAare).join('*')}`;
  });
  return result;
}

/** Returns whether a pattern written by `globAare` has a wildcard, so it is not one path. */
export function isPattern(aare: string): boolean {
  return /(^|[^\\])(\\\\)*[*{]/.test(aare);
}

/**
 * Quotes an AARE for a profile. The caller has rejected the characters of `unsafeCharacter`,
 * so only backslashes (already escaped by `literalAare`) need care here.
 */
export function quote(aare: string): string {
  return `"${aare}"`;
}
