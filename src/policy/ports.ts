import { PortRange } from './types';

export const MIN_PORT = 1;
export const MAX_PORT = 65535;

/** Result of parsing one entry of a rule's `ports` list, with a reason and a fix on failure. */
export type PortParseResult =
  { ok: true; range: PortRange } | { ok: false; reason: string; hint: string };

const PORT_HINT = `expected a port ${MIN_PORT}-${MAX_PORT} or a range "lo-hi" with lo <= hi`;

function checkPort(value: number, text: string): PortParseResult | undefined {
  if (!Number.isInteger(value)) {
    return { ok: false, reason: `port ${text} is not an integer`, hint: PORT_HINT };
  }
  if (value < MIN_PORT || value > MAX_PORT) {
    return { ok: false, reason: `port ${text} is out of range`, hint: PORT_HINT };
  }
  return undefined;
}

/**
 * Parses one `ports` entry: a number, a decimal string such as "8080", or a range
 * string "lo-hi". Both ends are inclusive and must be within 1-65535.
 */
export function parsePortEntry(value: unknown): PortParseResult {
  if (typeof value === 'number') {
    return checkPort(value, String(value)) ?? { ok: true, range: { lo: value, hi: value } };
  }
  if (typeof value !== 'string') {
    return { ok: false, reason: 'a port must be a number or a "lo-hi" string', hint: PORT_HINT };
  }

  const match = /^\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?$/.exec(value);
  if (!match) {
    return { ok: false, reason: `"${value}" is not a port or a port range`, hint: PORT_HINT };
  }
  const lo = Number(match[1]);
  const hi = match[2] === undefined ? lo : Number(match[2]);
  const problem = checkPort(lo, match[1]) ?? checkPort(hi, match[2] ?? match[1]);
  if (problem) return problem;
  if (lo > hi) {
    return {
      ok: false,
      reason: `range "${value}" starts after it ends`,
      hint: `use "${hi}-${lo}"`,
    };
  }
  return { ok: true, range: { lo, hi } };
}

/** Returns ranges sorted by start, with overlapping and adjacent ranges merged into one. */
export function mergePortRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.lo - b.lo || a.hi - b.hi);
  const merged: PortRange[] = [];
  for (const range of sorted) {
    const last = merged[merged.length - 1];
    if (last && range.lo <= last.hi + 1) {
      merged[merged.length - 1] = { lo: last.lo, hi: Math.max(last.hi, range.hi) };
    } else {
      merged.push({ lo: range.lo, hi: range.hi });
    }
  }
  return merged;
}
