import { describe, expect, it } from 'vitest';
import { mergePortRanges, parsePortEntry } from '../../src/policy/ports';

describe('parsePortEntry', () => {
  it.each([
    [8080, 8080, 8080],
    [1, 1, 1],
    [65535, 65535, 65535],
    ['443', 443, 443],
    ['9000-9100', 9000, 9100],
    ['9000 - 9100', 9000, 9100],
    ['80-80', 80, 80],
    ['1-65535', 1, 65535],
  ])('parses %j', (value, lo, hi) => {
    expect(parsePortEntry(value)).toEqual({ ok: true, range: { lo, hi } });
  });

  it.each([
    [0, 'port 0 is out of range'],
    [65536, 'port 65536 is out of range'],
    [-1, 'port -1 is out of range'],
    [80.5, 'port 80.5 is not an integer'],
    ['0-10', 'port 0 is out of range'],
    ['10-70000', 'port 70000 is out of range'],
    ['9100-9000', 'range "9100-9000" starts after it ends'],
    ['http', '"http" is not a port or a port range'],
    ['80,443', '"80,443" is not a port or a port range'],
    ['1-2-3', '"1-2-3" is not a port or a port range'],
    ['-5', '"-5" is not a port or a port range'],
    ['', '"" is not a port or a port range'],
    [true, 'a port must be a number or a "lo-hi" string'],
    [null, 'a port must be a number or a "lo-hi" string'],
  ])('rejects %j', (value, reason) => {
    const result = parsePortEntry(value);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.reason).toBe(reason);
  });

  it('suggests the swapped range', () => {
    const result = parsePortEntry('9100-9000');
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.hint).toBe('use "9000-9100"');
  });
});

describe('mergePortRanges', () => {
  it.each([
    [[], []],
    [[{ lo: 80, hi: 80 }], [{ lo: 80, hi: 80 }]],
    [
      [
        { lo: 443, hi: 443 },
        { lo: 80, hi: 80 },
      ],
      [
        { lo: 80, hi: 80 },
        { lo: 443, hi: 443 },
      ],
    ],
    [
      [
        { lo: 80, hi: 80 },
        { lo: 81, hi: 81 },
        { lo: 82, hi: 90 },
      ],
      [{ lo: 80, hi: 90 }],
    ],
    [
      [
        { lo: 100, hi: 200 },
        { lo: 150, hi: 160 },
        { lo: 199, hi: 300 },
      ],
      [{ lo: 100, hi: 300 }],
    ],
    [
      [
        { lo: 10, hi: 20 },
        { lo: 22, hi: 30 },
      ],
      [
        { lo: 10, hi: 20 },
        { lo: 22, hi: 30 },
      ],
    ],
  ])('merges %j', (ranges, expected) => {
    expect(mergePortRanges(ranges)).toEqual(expected);
  });
});
