import { describe, expect, it } from 'vitest';
import { globAare, isPattern, literalAare, unsafeCharacter } from '../../src/apparmor/aare';
import { patternsOverlap } from '../../src/apparmor/pattern-overlap';
import { attachmentAare } from '../../src/apparmor/render';

describe('literalAare', () => {
  it.each([
    ['/usr/bin/web', '/usr/bin/web'],
    ['/a*b', '/a\\*b'],
    ['/a?b', '/a\\?b'],
    ['/a[0]', '/a\\[0\\]'],
    ['/a{b}', '/a\\{b\\}'],
    ['/a^b', '/a\\^b'],
    ['/a\\b', '/a\\\\b'],
    ['/odd name!$.txt', '/odd name!$.txt'],
    ['/a@b', '/a@b'],
  ])('escapes %s', (path, expected) => {
    expect(literalAare(path)).toBe(expected);
  });

  it('makes a literal that is no pattern', () => {
    expect(isPattern(literalAare('/a/*/**'))).toBe(false);
  });
});

describe('globAare', () => {
  it.each([
    ['/data/*.csv', '/data/*.csv'],
    ['/data/**', '/data/**'],
    ['/data/**/x', '/data{,/**}/x'],
    ['/a/**/b/**', '/a{,/**}/b/**'],
    ['/a?/*', '/a\\?/*'],
  ])('translates %s', (path, expected) => {
    expect(globAare(path)).toBe(expected);
  });
});

describe('unsafeCharacter', () => {
  it.each([
    ['/tmp/a\nb', 'the control character U+000A'],
    ['/tmp/a\rb', 'the control character U+000D'],
    ['/tmp/a\u0000b', 'the control character U+0000'],
    ['/tmp/a\tb', 'the control character U+0009'],
    ['/tmp/a,b', "','"],
    ['/tmp/a"b', `'"'`],
    ['/tmp/a{b', "'{'"],
    ['/tmp/a}b', "'}'"],
    ['/tmp/a#b', "'#'"],
  ])('rejects %j', (path, description) => {
    expect(unsafeCharacter(path)).toBe(description);
  });

  it.each(['/usr/bin/web', '/a b/c', '/ünï/cödé', '/a!$@+.()|'])('accepts %j', (path) => {
    expect(unsafeCharacter(path)).toBeNull();
  });
});

describe('patternsOverlap', () => {
  it.each([
    ['/a/*', '/a/b', true],
    ['/a/*', '/a/b/c', false],
    ['/a/**', '/a/b/c', true],
    ['/a/*', '/b/*', false],
    ['/a/*.sh', '/a/x*', true],
    ['/a/*.sh', '/a/*.py', false],
    ['/a{,/**}/b', '/a/b', true],
    ['/a{,/**}/b', '/a/x/y/b', true],
    ['/a{,/**}/b', '/a/x/c', false],
    ['/a/\\*', '/a/b', false],
    ['/**', '/opt/x', true],
  ])('%s and %s: %s', (left, right, expected) => {
    expect(patternsOverlap(left, right)).toBe(expected);
    expect(patternsOverlap(right, left)).toBe(expected);
  });
});

describe('attachmentAare', () => {
  it('returns null without executables', () => {
    expect(attachmentAare([])).toBeNull();
  });

  it('returns one path as it is', () => {
    expect(attachmentAare(['/usr/bin/web'])).toBe('/usr/bin/web');
  });

  it('joins several paths sorted in one group', () => {
    expect(attachmentAare(['/usr/bin/b', '/opt/a'])).toBe('/{opt/a,usr/bin/b}');
  });

  it('escapes glob characters in executables', () => {
    expect(attachmentAare(['/opt/a*'])).toBe('/opt/a\\*');
  });
});
