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
 * `warnings`.
 */
export function loadPolicyFiles(files: string[]): PolicySet {
  const issues: ConfigIssue[] = [];
  const expanded = expandPolicyFiles(files, issues);
  const names: NamedAt[] = [];
  const policies: Policy[] = [];
  for (const file of expanded) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      issues.push(fileIssue(file, `cannot read the file: ${(error as Error).message}`));
      continue;
    }
    policies.push(...parsePolicyText(text, file, issues, names));
  }
  checkDuplicateNames(names, issues);
  throwOnIssues(issues, expanded);
  return { policies, files: expanded, warnings: sortIssues(policyWarnings(policies), expanded) };
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
