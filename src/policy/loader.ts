import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, ConfigIssue } from '../util/config-error';
import { parseYamlSource } from '../util/yaml-source';
import { policyWarnings } from './enforcer-warnings';
import { formatPosition, NamedAt, readPolicyDocument } from './policy-document';
import { Policy, PolicySet } from './types';

const POLICY_FILE_PATTERN = /\.ya?ml$/;

/**
 * Parses the policy documents of one YAML text (documents separated by `---`).
 * Throws `ConfigError` with every issue found, including duplicate policy names.
 */
export function parsePolicies(text: string, file: string): Policy[] {
  const issues: ConfigIssue[] = [];
  const names: NamedAt[] = [];
  const policies = parsePolicyText(text, file, issues, names);
  checkDuplicateNames(names, issues);
  throwOnIssues(issues, [file]);
  return policies;
}

/**
 * Parses the policy documents of one YAML text like `parsePolicies`, and returns them as a set
 * with its warnings.
 */
export function parsePolicySet(text: string, file: string): PolicySet {
  const policies = parsePolicies(text, file);
  return { policies, files: [file], warnings: policyWarnings(policies) };
}

/**
 * Loads policy files in the given order. A directory stands for its `*.yaml` and `*.yml` files
 * (not its subdirectories), sorted by name. Throws `ConfigError` listing every issue of every
 * file, including unreadable files and policy names used more than once across the set.
 * Problems that do not stop the set, such as rules that no enforcer applies, are returned in
 * `warnings`. With a cache, files whose text has not changed since an earlier load are not
 * parsed again.
 */
export function loadPolicyFiles(files: string[], cache?: PolicyFileCache): PolicySet {
  const issues: ConfigIssue[] = [];
  const expanded = expandPolicyFiles(files, issues);
  const names: NamedAt[] = [];
  const policies: Policy[] = [];
  for (const file of expanded) {
    let parsed: ParsedFile;
    try {
      parsed = readParsedFile(file, cache);
    } catch (error) {
      issues.push(fileIssue(file, `cannot read the file: ${(error as Error).message}`));
      continue;
    }
    issues.push(...parsed.issues);
    names.push(...parsed.names);
    policies.push(...parsed.policies);
  }
  checkDuplicateNames(names, issues);
  throwOnIssues(issues, expanded);
  cache?.keepOnly(expanded);
  return { policies, files: expanded, warnings: sortIssues(policyWarnings(policies), expanded) };
}

interface ParsedFile {
  /** Device, inode, size and change times of the file when it was read. */
  stamp: string;
  text: string;
  policies: readonly Policy[];
  names: readonly NamedAt[];
  issues: readonly ConfigIssue[];
}

/**
 * Returns the parse of a file: the cached one when the file's stamp or text is unchanged, else a
 * new one, which is cached when it has no issues. Throws when the file cannot be read.
 */
function readParsedFile(file: string, cache: PolicyFileCache | undefined): ParsedFile {
  const stamp = cache === undefined ? '' : fileStamp(file);
  const byStamp = stamp === '' ? undefined : cache?.byStamp(file, stamp);
  if (byStamp !== undefined) return byStamp;
  const text = readFileSync(file, 'utf8');
  const byText = cache?.byText(file, text);
  if (byText !== undefined) {
    cache?.set(file, { ...byText, stamp });
    return byText;
  }
  const issues: ConfigIssue[] = [];
  const names: NamedAt[] = [];
  const policies = parsePolicyText(text, file, issues, names);
  const parsed = { stamp, text, policies, names, issues };
  if (issues.length === 0) cache?.set(file, parsed);
  return parsed;
}

/**
 * A file changed within this many nanoseconds before it was read could change again within the
 * same timestamp tick of a file system with coarse timestamps, keeping its stamp.
 */
const RACY_STAMP_NS = 2_000_000_000n;

/**
 * Returns the stamp of a file, or '' when the file changed too recently for its stamp to tell
 * later writes apart. An empty stamp matches no cached stamp, so the next load compares the text.
 */
function fileStamp(file: string): string {
  const stat = statSync(file, { bigint: true });
  const changedNs = stat.ctimeNs > stat.mtimeNs ? stat.ctimeNs : stat.mtimeNs;
  if (BigInt(Date.now()) * 1_000_000n - changedNs < RACY_STAMP_NS) return '';
  return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}:${stat.ctimeNs}`;
}

/**
 * The policies of each file that parsed without errors, with the text they came from, so that
 * loadPolicyFiles parses again only the files whose text changed, and reads again only the
 * files whose inode, size or timestamps changed. A reload after one file
 * changed then costs one parse and a read of the others, and the policies of unchanged files
 * stay the same objects, which the egress compiler uses to skip them.
 */
export class PolicyFileCache {
  private readonly files = new Map<string, ParsedFile>();

  /**
   * Returns the parse of `file` when the file has the same device, inode, size and change
   * times as when it was parsed, so it is not read again.
   */
  byStamp(file: string, stamp: string): ParsedFile | undefined {
    const parsed = this.files.get(file);
    return parsed !== undefined && parsed.stamp === stamp ? parsed : undefined;
  }

  /** Returns the parse of `file` when it was made from the same text. */
  byText(file: string, text: string): ParsedFile | undefined {
    const parsed = this.files.get(file);
    return parsed !== undefined && parsed.text === text ? parsed : undefined;
  }

  set(file: string, parsed: ParsedFile): void {
    this.files.set(file, parsed);
  }

  /** Forgets the files that are not in `files`, after a load that succeeded. */
  keepOnly(files: readonly string[]): void {
    const loaded = new Set(files);
    for (const file of this.files.keys()) {
      if (!loaded.has(file)) this.files.delete(file);
    }
  }

  /** Number of files held. */
  get size(): number {
    return this.files.size;
  }
}

/** Replaces each directory with its policy files and records unreadable paths as issues. */
function expandPolicyFiles(paths: readonly string[], issues: ConfigIssue[]): string[] {
  const files: string[] = [];
  for (const path of paths) {
    let isDirectory: boolean;
    try {
      isDirectory = statSync(path).isDirectory();
    } catch (error) {
      issues.push(fileIssue(path, `cannot read the path: ${(error as Error).message}`));
      continue;
    }
    if (!isDirectory) {
      files.push(path);
      continue;
    }
    let entries: string[];
    try {
      entries = readdirSync(path, { withFileTypes: true })
        .filter((entry) => !entry.isDirectory() && POLICY_FILE_PATTERN.test(entry.name))
        .map((entry) => entry.name);
    } catch (error) {
      issues.push(fileIssue(path, `cannot list the directory: ${(error as Error).message}`));
      continue;
    }
    // The default sort compares UTF-16 code units, so the order does not depend on the locale.
    entries.sort();
    files.push(...entries.map((name) => join(path, name)));
  }
  return files;
}

function parsePolicyText(
  text: string,
  file: string,
  issues: ConfigIssue[],
  names: NamedAt[],
): Policy[] {
  const { source, issues: syntaxIssues } = parseYamlSource(text, file);
  issues.push(...syntaxIssues);
  const policies: Policy[] = [];
  let documentsRead = 0;
  for (const document of source.documents) {
    // Field checks on a document that failed to parse would mostly repeat the syntax error.
    if (document.errors.length > 0) continue;
    const result = readPolicyDocument(source, document, issues);
    if (result !== undefined) documentsRead += 1;
    if (result?.name) names.push(result.name);
    if (result?.policy) policies.push(result.policy);
  }
  if (documentsRead === 0 && syntaxIssues.length === 0) {
    // A file caught half-written, or truncated by mistake, would otherwise remove every rule it
    // held on the next reload.
    issues.push({
      ...fileIssue(file, 'the file holds no policy document'),
      hint: 'write at least one policy in it, or delete the file to remove its policies',
    });
  }
  return policies;
}

function checkDuplicateNames(names: readonly NamedAt[], issues: ConfigIssue[]): void {
  const first = new Map<string, NamedAt>();
  for (const named of names) {
    const earlier = first.get(named.name);
    if (!earlier) {
      first.set(named.name, named);
      continue;
    }
    issues.push({
      position: named.position,
      fieldPath: 'metadata.name',
      message: `duplicate policy name "${named.name}", first used at ${formatPosition(earlier.position)}`,
      hint: 'policy names must be unique across all policy files',
      severity: 'error',
    });
  }
}

function fileIssue(file: string, message: string): ConfigIssue {
  return { position: { file, line: 1, column: 1 }, fieldPath: '', message, severity: 'error' };
}

/** Throws `ConfigError` with the issues sorted by file (in load order), line and column. */
function throwOnIssues(issues: ConfigIssue[], files: readonly string[]): void {
  if (!issues.some((issue) => issue.severity === 'error')) return;
  throw new ConfigError(sortIssues(issues, files));
}

/** Returns the issues sorted by file (in load order), line and column. */
function sortIssues(issues: readonly ConfigIssue[], files: readonly string[]): ConfigIssue[] {
  const fileOrder = new Map(files.map((file, index) => [file, index]));
  const rank = (file: string) => fileOrder.get(file) ?? -1;
  return [...issues].sort(
    (a, b) =>
      rank(a.position.file) - rank(b.position.file) ||
      a.position.line - b.position.line ||
      a.position.column - b.position.column,
  );
}
