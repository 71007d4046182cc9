/**
 * Workload selectors in SPIRE's `type:value` text form.
 *
 * The type ends at the first ':' and the value may contain more colons, so `unix:uid:1000` has
 * type `unix` and value `uid:1000`. Matching compares selector texts exactly, so the parser
 * accepts only the canonical form that attestation produces (no leading zeros, no `..` in paths).
 */

/** A selector split into its type and value. `text` is the original `type:value` string. */
export interface Selector {
  readonly type: string;
  readonly value: string;
  readonly text: string;
}

/** Error for a selector that is malformed or of an unsupported kind. */
export class SelectorError extends Error {
  /** The rejected selector text. */
  readonly selector: string;
  /** Description of the problem, without the selector text. */
  readonly problem: string;
  /** Expected form of a valid selector of this kind, with an example. */
  readonly hint: string;

  constructor(selector: string, problem: string, hint: string) {
    super(`invalid selector ${JSON.stringify(selector)}: ${problem} (${hint})`);
    this.name = 'SelectorError';
    this.selector = selector;
    this.problem = problem;
    this.hint = hint;
  }
}

/** Largest valid uid or gid: `(uid_t)-1` = 4294967295 is the kernel's "no id" value. */
const MAX_ID = 4294967294;

type ValueCheck = (value: string) => string | null;

interface SelectorKind {
  /** Selector text up to the value, such as `unix:uid:`. */
  prefix: string;
  /** The form with a placeholder and an example, used in hints. */
  form: string;
  check: ValueCheck;
}

const SELECTOR_KINDS: readonly SelectorKind[] = [
  { prefix: 'unix:uid:', form: 'unix:uid:<uid>, e.g. unix:uid:1000', check: checkId },
  { prefix: 'unix:gid:', form: 'unix:gid:<gid>, e.g. unix:gid:1000', check: checkId },
  { prefix: 'unix:user:', form: 'unix:user:<user name>, e.g. unix:user:www', check: checkName },
  {
    prefix: 'unix:group:',
    form: 'unix:group:<group name>, e.g. unix:group:www',
    check: checkName,
  },
  {
    prefix: 'unix:supplementary_gid:',
    form: 'unix:supplementary_gid:<gid>, e.g. unix:supplementary_gid:27',
    check: checkId,
  },
  {
    prefix: 'unix:supplementary_group:',
    form: 'unix:supplementary_group:<group name>, e.g. unix:supplementary_group:docker',
    check: checkName,
  },
  {
    prefix: 'unix:path:',
    form: 'unix:path:<absolute executable path>, e.g. unix:path:/usr/bin/curl',
    check: (value) => checkAbsolutePath(value, false),
  },
  {
    prefix: 'unix:sha256:',
    form: 'unix:sha256:<64 lowercase hex digits of the executable SHA-256>',
    check: checkSha256,
  },
  {
    prefix: 'cgroup:path:',
    form: 'cgroup:path:<cgroup v2 path from the cgroup2 mount>, e.g. cgroup:path:/sigil-demo/web',
    check: (value) => checkAbsolutePath(value, true),
  },
];

/** The supported selector forms, one per kind, with a placeholder and an example. */
export const SUPPORTED_SELECTOR_FORMS: readonly string[] = SELECTOR_KINDS.map((kind) => kind.form);

const SUPPORTED_TYPES = [...new Set(SELECTOR_KINDS.map((kind) => kind.prefix.split(':')[0]))];

/** Parses and validates a selector, throwing `SelectorError` with the expected form. */
export function parseSelector(text: string): Selector {
  const colon = text.indexOf(':');
  if (colon < 0) {
    throw new SelectorError(
      text,
      "the selector has no type (no ':')",
      `expected <type>:<value> with type ${SUPPORTED_TYPES.join(' or ')}, e.g. unix:uid:1000`,
    );
  }
  const type = text.slice(0, colon);
  const value = text.slice(colon + 1);
  const kindsOfType = SELECTOR_KINDS.filter((kind) => kind.prefix.startsWith(`${type}:`));
  if (kindsOfType.length === 0) {
    throw new SelectorError(
      text,
      `unsupported selector type '${type}'`,
      `supported types are ${SUPPORTED_TYPES.join(' and ')}, e.g. unix:uid:1000`,
    );
  }

  const keyEnd = value.indexOf(':');
  const key = keyEnd < 0 ? value : value.slice(0, keyEnd);
  const kind = kindsOfType.find((candidate) => candidate.prefix === `${type}:${key}:`);
  if (kind === undefined) {
    const keys = kindsOfType.map((candidate) => candidate.prefix.slice(type.length + 1, -1));
    throw new SelectorError(
      text,
      `unsupported ${type} selector '${key}'`,
      `supported are ${keys.map((name) => `${type}:${name}:<value>`).join(', ')}`,
    );
  }
  if (keyEnd < 0) {
    throw new SelectorError(text, 'the selector has no value', `expected ${kind.form}`);
  }

  // Process facts with bytes that are not UTF-8 are read with U+FFFD in their place, so a
  // selector holding U+FFFD would match every name that differs from it only in such bytes.
  if (value.includes('\uFFFD')) {
    throw new SelectorError(
      text,
      'the value contains U+FFFD, which stands for bytes that are not UTF-8 in the paths and names Sigil reads',
      'select the process by other selectors, or rename the file, cgroup or account to valid UTF-8',
    );
  }
  const problem = kind.check(text.slice(kind.prefix.length));
  if (problem !== null) {
    throw new SelectorError(text, problem, `expected ${kind.form}`);
  }
  return { type, value, text };
}

function checkId(value: string): string | null {
  if (!/^(0|[1-9][0-9]*)$/.test(value)) {
    return `'${value}' is not a decimal number without sign or leading zeros`;
  }
  if (Number(value) > MAX_ID) {
    return `${value} is larger than the maximum id ${MAX_ID}`;
  }
  return null;
}

function checkName(value: string): string | null {
  if (value === '') {
    return 'the name is empty';
  }
  // ':' separates the fields of /etc/passwd and /etc/group, so no name can contain one.
  if (/[:\s\p{Cc}]/u.test(value)) {
    return `the name '${value}' contains ':', white space or a control character`;
  }
  return null;
}

function checkSha256(value: string): string | null {
  if (/^[0-9a-f]{64}$/.test(value)) {
    return null;
  }
  if (/^[0-9a-fA-F]{64}$/.test(value)) {
    return 'the digest must be in lowercase hex';
  }
  return `the digest has ${value.length} characters, expected 64 hex digits`;
}

/**
 * Checks that a path is absolute and canonical, as readlink of /proc/<pid>/exe and the cgroup
 * file in /proc print it: no empty, '.' or '..' segments and no trailing '/'.
 */
function checkAbsolutePath(value: string, allowRoot: boolean): string | null {
  if (!value.startsWith('/')) {
    return `the path '${value}' is not absolute`;
  }
  if (value.includes('\0')) {
    return 'the path contains a NUL character';
  }
  if (value === '/') {
    return allowRoot ? null : "the path '/' names no file";
  }
  if (value.endsWith('/')) {
    return `the path '${value}' ends with '/'`;
  }
  const segments = value.slice(1).split('/');
  if (segments.includes('')) {
    return `the path '${value}' contains an empty segment ('//')`;
  }
  if (segments.includes('.') || segments.includes('..')) {
    return `the path '${value}' contains a '.' or '..' segment`;
  }
  return null;
}
