import { PathObjects } from './types';

/** Characters that start a glob pattern in shells and in other policy languages. */
const GLOB_CHARACTERS = ['*', '?', '[', ']', '{', '}'];
/** Glob characters that a `glob: true` rule still rejects, because Sigil does not support them. */
const UNSUPPORTED_GLOB_CHARACTERS = ['?', '[', ']', '{', '}'];

/** Result of reading one path of a rule, with a reason and a suggested fix on failure. */
export type PathParseResult =
  { ok: true; path: string } | { ok: false; reason: string; hint: string };

/** Options for reading one path of a rule. */
export interface PathOptions {
  /** True for `directories`, where a trailing `/` is dropped and `/` itself is allowed. */
  directory: boolean;
  /** True when the rule sets `glob: true`. */
  glob: boolean;
  /** Maximum length in code points. */
  maxLength: number;
}

const RELATIVE_HINT = "write the path without '.' and '..' segments: enforcers see resolved paths";

/**
 * Validates one path of a process or file rule and returns it normalised: every `//` becomes
 * `/` and a directory loses its trailing `/`. Rejects relative paths, `.` and `..` segments,
 * NUL characters, a trailing `/` on a file path, and glob characters that the rule does not
 * allow.
 */
export function parseRulePath(text: string, options: PathOptions): PathParseResult {
  if (!text.startsWith('/')) {
    return { ok: false, reason: 'the path is not absolute', hint: "start the path with '/'" };
  }
  if (text.includes('\0')) {
    return { ok: false, reason: 'the path contains a NUL character', hint: 'remove it' };
  }
  const length = [...text].length;
  if (length > options.maxLength) {
    return {
      ok: false,
      reason: `the path is ${length} characters long`,
      hint: `use at most ${options.maxLength} characters`,
    };
  }
  let path = text.replace(/\/{2,}/g, '/');
  if (path.length > 1 && path.endsWith('/')) {
    if (!options.directory) {
      return {
        ok: false,
        reason: "the path ends with '/', so it names a directory",
        hint: `list ${path.slice(0, -1)} under directories, or remove the trailing '/'`,
      };
    }
    path = path.slice(0, -1);
  }
  if (path === '/' && !options.directory) {
    return { ok: false, reason: "'/' is a directory", hint: 'list it under directories' };
  }
  const segments = path === '/' ? [] : path.slice(1).split('/');
  for (const segment of segments) {
    if (segment === '.' || segment === '..') {
      return {
        ok: false,
        reason: `the path contains the segment '${segment}'`,
        hint: RELATIVE_HINT,
      };
    }
  }
  const globProblem = options.glob ? checkGlobSegments(segments) : findGlobCharacter(path);
  return globProblem ?? { ok: true, path };
}

function findGlobCharacter(path: string): PathParseResult | undefined {
  const character = GLOB_CHARACTERS.find((candidate) => path.includes(candidate));
  if (character === undefined) return undefined;
  return {
    ok: false,
    reason: `the path contains the glob character '${character}'`,
    hint: "set glob: true on the rule to use '*' within a segment and '**' across segments",
  };
}

function checkGlobSegments(segments: readonly string[]): PathParseResult | undefined {
  const hint = "glob patterns support '*' within a segment and '**' as a whole segment only";
  for (const segment of segments) {
    const unsupported = UNSUPPORTED_GLOB_CHARACTERS.find((character) =>
      segment.includes(character),
    );
    if (unsupported !== undefined) {
      return { ok: false, reason: `'${unsupported}' is not a supported glob character`, hint };
    }
    if (segment.includes('**') && segment !== '**') {
      return {
        ok: false,
        reason: `'**' must be a whole path segment, not part of '${segment}'`,
        hint,
      };
    }
  }
  return undefined;
}

/**
 * Normalises the path of an exec or open to decide: `//` becomes `/` and a trailing `/` is
 * dropped. Throws `Error` for a relative path or one with `.` or `..` segments, because
 * enforcers see resolved paths.
 */
export function normaliseOperationPath(text: string): string {
  if (!text.startsWith('/')) throw new Error(`path "${text}" is not absolute`);
  let path = text.replace(/\/{2,}/g, '/');
  if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
  const segments = path === '/' ? [] : path.slice(1).split('/');
  if (segments.some((segment) => segment === '.' || segment === '..')) {
    throw new Error(`path "${text}" contains a '.' or '..' segment`);
  }
  return path;
}

/** Returns whether a normalised path has any character that `glob: true` makes a pattern. */
export function hasGlobPattern(path: string): boolean {
  return path.includes('*');
}

/**
 * Tests a normalised path against the objects of one rule. With `isDirectory`, the path is an
 * opened directory, which the rule's directories also match when they name it.
 */
export type PathMatcher = (path: string, isDirectory?: boolean) => boolean;

// Rules are immutable, so each rule's matcher is built once.
const matcherCache = new WeakMap<PathObjects, PathMatcher>();

/** Returns the matcher of a rule's paths and directories. */
export function pathMatcher(objects: PathObjects): PathMatcher {
  let matcher = matcherCache.get(objects);
  if (!matcher) {
    matcher = buildMatcher(objects);
    matcherCache.set(objects, matcher);
  }
  return matcher;
}

function buildMatcher(objects: PathObjects): PathMatcher {
  const exact = new Set<string>();
  const patterns: RegExp[] = [];
  for (const path of objects.paths) {
    if (objects.glob && hasGlobPattern(path)) patterns.push(new RegExp(`^${globFragment(path)}$`));
    else exact.add(path);
  }
  const directories: string[] = [];
  const directoryPatterns: RegExp[] = [];
  for (const directory of objects.directories) {
    if (objects.glob && hasGlobPattern(directory)) {
      // One or more further segments below a recursive directory, exactly one otherwise.
      const below = objects.recursive ? '(?:/[^/]+)+' : '/[^/]+';
      patterns.push(new RegExp(`^${globFragment(directory)}${below}$`));
      directoryPatterns.push(new RegExp(`^${globFragment(directory) || '/'}$`));
    } else {
      directories.push(directory);
    }
  }
  const recursive = objects.recursive;
  return (path, isDirectory = false) => {
    if (exact.has(path)) return true;
    for (const directory of directories) {
      if (isBelow(path, directory, recursive)) return true;
      if (isDirectory && path === directory) return true;
    }
    if (isDirectory && directoryPatterns.some((pattern) => pattern.test(path))) return true;
    return patterns.some((pattern) => pattern.test(path));
  };
}

/** Returns whether a path is an entry of a directory, or any descendant when recursive. */
function isBelow(path: string, directory: string, recursive: boolean): boolean {
  const base = directory === '/' ? '/' : `${directory}/`;
  if (path.length <= base.length || !path.startsWith(base)) return false;
  return recursive || !path.includes('/', base.length);
}

/**
 * Translates a glob path into a regular expression without anchors. `*` matches within one
 * segment, and a segment of only `*` matches one or more characters. A middle `**` segment
 * matches zero or more segments, and a last `**` segment one or more.
 */
function globFragment(pattern: string): string {
  if (pattern === '/') return '';
  const segments = pattern.slice(1).split('/');
  return segments
    .map((segment, index) => {
      if (segment === '**') return index === segments.length - 1 ? '(?:/[^/]+)+' : '(?:/[^/]+)*';
      if (segment === '*') return '/[^/]+';
      return `/${segment.split('*').map(escapeRegExp).join('[^/]*')}`;
    })
    .join('');
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
