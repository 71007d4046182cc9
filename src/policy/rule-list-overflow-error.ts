import { RuleRef } from './compiled-rule-set';

/** One kernel map key whose rule list would exceed the per-key limit. */
export interface RuleListOverflow {
  subject: number;
  subjectSpiffeId: string;
  /** The key, such as `peer spiffe://example.org/api (id 4)` or `CIDR 10.0.0.0/8`. */
  key: string;
  /** Kernel rule entries the list would need. Each port range of a rule takes one. */
  entryCount: number;
  limit: number;
  /** Policy rules that contribute to the list, in rule-table order. */
  rules: RuleRef[];
}

/** Maximum overflows spelled out in the message. The `overflows` field has all of them. */
const MESSAGE_OVERFLOW_LIMIT = 20;

/** Error thrown when one or more kernel rule lists would exceed their fixed capacity. */
export class RuleListOverflowError extends Error {
  readonly overflows: RuleListOverflow[];

  constructor(overflows: RuleListOverflow[]) {
    const lines = overflows.slice(0, MESSAGE_OVERFLOW_LIMIT).map(formatOverflow);
    if (overflows.length > MESSAGE_OVERFLOW_LIMIT) {
      lines.push(`... and ${overflows.length - MESSAGE_OVERFLOW_LIMIT} more`);
    }
    const count = overflows.length === 1 ? '1 key' : `${overflows.length} keys`;
    super(
      `cannot compile the policies: rule lists too long for ${count} ` +
        '(merge port ranges or CIDRs, or remove overlapping rules for these keys):\n' +
        lines.join('\n'),
    );
    this.name = 'RuleListOverflowError';
    this.overflows = overflows;
  }
}

function formatOverflow(overflow: RuleListOverflow): string {
  // Group the contributing rules by policy, keeping rule-table order.
  const byPolicy = new Map<string, RuleRef[]>();
  for (const rule of overflow.rules) {
    const rules = byPolicy.get(rule.policy) ?? [];
    rules.push(rule);
    byPolicy.set(rule.policy, rules);
  }
  const policies = [...byPolicy].map(([policy, rules]) => {
    const names = rules.map((rule) => `"${rule.rule}" (${rule.file}:${rule.line})`).join(', ');
    return `policy "${policy}" rules ${names}`;
  });
  return (
    `subject ${overflow.subjectSpiffeId} (id ${overflow.subject}), ${overflow.key}: ` +
    `${overflow.entryCount} rule entries, more than the limit of ${overflow.limit}; ` +
    `from ${policies.join('; ')}`
  );
}
