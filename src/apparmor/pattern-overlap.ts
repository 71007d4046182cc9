/**
 * Overlap test for the AARE patterns that Sigil writes: literal characters (backslash-escaped
 * where special), `*`, `**` and the group `{,/**}`. AppArmor fails to compile a profile where
 * two overlapping patterns carry different exec modes, so the generator tests this first.
 */

type Token = { kind: 'char'; char: string } | { kind: 'star' } | { kind: 'doubleStar' };

/** A character that no pattern names, standing for every other non-`/` character. */
const OTHER_CHARACTER = '\u0001';
const OPTIONAL_DESCENT = '{,/**}';
/** Limit on `{,/**}` groups in one pattern, since each group doubles the alternatives. */
const MAX_GROUPS = 8;

/**
 * Returns whether some path matches both patterns. The test treats `*` and `**` as matching
 * the empty string too, so it can report an overlap that AppArmor's at-least-one-character
 * rule excludes, but it never misses one.
 */
export function patternsOverlap(left: string, right: string): boolean {
  for (const a of expandGroups(left)) {
    for (const b of expandGroups(right)) {
      if (tokensOverlap(tokenize(a), tokenize(b))) return true;
    }
  }
  return false;
}

function expandGroups(pattern: string): string[] {
  const index = pattern.indexOf(OPTIONAL_DESCENT);
  if (index < 0) return [pattern];
  const groups = pattern.split(OPTIONAL_DESCENT).length - 1;
  if (groups > MAX_GROUPS) {
    throw new RangeError(`pattern ${pattern} has ${groups} '**' segments, at most ${MAX_GROUPS}`);
  }
  const head = pattern.slice(0, index);
  const tails = expandGroups(pattern.slice(index + OPTIONAL_DESCENT.length));
  return tails.flatMap((tail) => [`${head}${tail}`, `${head}/**${tail}`]);
}

function tokenize(pattern: string): Token[] {
  const tokens: Token[] = [];
  for (let i = 0; i < pattern.length; i++) {
    const character = pattern[i];
    if (character === '\\' && i + 1 < pattern.length) {
      tokens.push({ kind: 'char', char: pattern[++i] });
    } else if (character === '*' && pattern[i + 1] === '*') {
      tokens.push({ kind: 'doubleStar' });
      i++;
    } else if (character === '*') {
      tokens.push({ kind: 'star' });
    } else {
      tokens.push({ kind: 'char', char: character });
    }
  }
  return tokens;
}

function accepts(token: Token, character: string): boolean {
  if (token.kind === 'char') return token.char === character;
  if (token.kind === 'star') return character !== '/';
  return true;
}

/** Adds the positions reachable by letting stars match nothing. */
function closure(tokens: Token[], position: number): number[] {
  const positions = [position];
  while (position < tokens.length && tokens[position].kind !== 'char') positions.push(++position);
  return positions;
}

/** Breadth-first search over pairs of positions in the two token lists. */
function tokensOverlap(left: Token[], right: Token[]): boolean {
  const seen = new Set<string>();
  const queue: [number, number][] = [];
  const push = (i: number, j: number) => {
    for (const a of closure(left, i)) {
      for (const b of closure(right, j)) {
        const key = `${a},${b}`;
        if (seen.has(key)) continue;
        seen.add(key);
        queue.push([a, b]);
      }
    }
  };
  push(0, 0);
  while (queue.length > 0) {
    const [i, j] = queue.shift()!;
    if (i === left.length && j === right.length) return true;
    if (i === left.length || j === right.length) continue;
    const candidates = new Set(['/', OTHER_CHARACTER]);
    for (const token of [left[i], right[j]]) if (token.kind === 'char') candidates.add(token.char);
    for (const character of candidates) {
      if (!accepts(left[i], character) || !accepts(right[j], character)) continue;
      // A star stays where it is after a character, and a literal moves on.
      push(left[i].kind === 'char' ? i + 1 : i, right[j].kind === 'char' ? j + 1 : j);
    }
  }
  return false;
}
