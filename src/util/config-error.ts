/** Position of a value in a configuration file, 1-based like editors show it. */
export interface SourcePosition {
  file: string;
  line: number;
  column: number;
}

/** One problem found in a configuration file (registration file or policy file). */
export interface ConfigIssue {
  position: SourcePosition;
  /** Field path from the document root, such as `spec.egress[2].ports[0]`. */
  fieldPath: string;
  message: string;
  /** Example of a valid value, or the fix for the problem. */
  hint?: string;
  severity: 'error' | 'warning';
}

/** Formats an issue as `file:line:column: error: fieldPath: message (hint)`. */
export function formatIssue(issue: ConfigIssue): string {
  const { file, line, column } = issue.position;
  const field = issue.fieldPath ? `${issue.fieldPath}: ` : '';
  const hint = issue.hint ? ` (${issue.hint})` : '';
  return `${file}:${line}:${column}: ${issue.severity}: ${field}${issue.message}${hint}`;
}

/** Error thrown when a configuration file has one or more errors; carries every issue found. */
export class ConfigError extends Error {
  readonly issues: ConfigIssue[];

  constructor(issues: ConfigIssue[]) {
    const errors = issues.filter((issue) => issue.severity === 'error');
    const count = errors.length === 1 ? '1 error' : `${errors.length} errors`;
    super(`invalid configuration (${count}):\n${issues.map(formatIssue).join('\n')}`);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}
