import { describe, expect, it } from 'vitest';
import { normaliseOperationPath, parseRulePath, pathMatcher } from '../../src/policy/paths';
import { PathObjects } from '../../src/policy/types';

const FILE = { directory: false, glob: false, maxLength: 4095 };
const DIRECTORY = { directory: true, glob: false, maxLength: 4095 };
const GLOB = { directory: false, glob: true, maxLength: 4095 };

describe('parseRulePath', () => {
  it.each([
    ['/usr/bin/env', FILE, '/usr/bin/env'],
    ['//usr///bin//env', FILE, '/usr/bin/env'],
    ['/usr/local/bin/', DIRECTORY, '/usr/local/bin'],
    ['/', DIRECTORY, '/'],
    ['//', DIRECTORY, '/'],
    ['/home/*/.ssh/**', GLOB, '/home/*/.ssh/**'],
    ['/**/id_rsa', GLOB, '/**/id_rsa'],
    ['/usr/bin/py*3', GLOB, '/usr/bin/py*3'],
    ['/usr/bin/.hidden', FILE, '/usr/bin/.hidden'],
    ['/usr/bin/..x', FILE, '/usr/bin/..x'],
  ])('normalises %s', (text, options, expected) => {
    expect(parseRulePath(text, options)).toEqual({ ok: true, path: expected });
  });

  it.each([
    ['usr/bin/env', FILE, 'the path is not absolute'],
    ['', FILE, 'the path is not absolute'],
    ['/a/\0b', FILE, 'the path contains a NUL character'],
    ['/usr/bin/', FILE, "the path ends with '/', so it names a directory"],
    ['/', FILE, "'/' is a directory"],
    ['/usr/./bin', DIRECTORY, "the path contains the segment '.'"],
    ['/usr/bin/..', DIRECTORY, "the path contains the segment '..'"],
    ['/usr/bin/*', FILE, "the path contains the glob character '*'"],
    ['/usr/bin/ls?', FILE, "the path contains the glob character '?'"],
    ['/etc/{a,b}', FILE, "the path contains the glob character '{'"],
    ['/usr/bin/ls?', GLOB, "'?' is not a supported glob character"],
    ['/etc/[ab]', GLOB, "'[' is not a supported glob character"],
    ['/a/b**', GLOB, "'**' must be a whole path segment, not part of 'b**'"],
    ['/a/***', GLOB, "'**' must be a whole path segment, not part of '***'"],
    [`/${'a'.repeat(4095)}`, FILE, 'the path is 4096 characters long'],
  ])('rejects %j', (text, options, reason) => {
    const result = parseRulePath(text, options);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.reason).toBe(reason);
  });
});

describe('normaliseOperationPath', () => {
  it.each([
    ['/usr/bin/env', '/usr/bin/env'],
    ['/usr//bin/', '/usr/bin'],
    ['/', '/'],
  ])('normalises %s', (text, expected) => {
    expect(normaliseOperationPath(text)).toBe(expected);
  });

  it.each([
    ['bin/sh', 'path "bin/sh" is not absolute'],
    ['/usr/../bin/sh', "path \"/usr/../bin/sh\" contains a '.' or '..' segment"],
  ])('rejects %s', (text, message) => {
    expect(() => normaliseOperationPath(text)).toThrow(message);
  });
});

const objects = (fields: Partial<PathObjects>): PathObjects => ({
  paths: [],
  directories: [],
  recursive: false,
  glob: false,
  ...fields,
});

describe('pathMatcher', () => {
  it.each<[string, PathObjects, string, boolean]>([
    ['exact path', objects({ paths: ['/usr/bin/env'] }), '/usr/bin/env', true],
    ['exact path, other file', objects({ paths: ['/usr/bin/env'] }), '/usr/bin/envx', false],
    ['direct entry', objects({ directories: ['/usr/bin'] }), '/usr/bin/ls', true],
    ['the directory itself', objects({ directories: ['/usr/bin'] }), '/usr/bin', false],
    [
      'nested entry without recursive',
      objects({ directories: ['/usr/bin'] }),
      '/usr/bin/x/ls',
      false,
    ],
    [
      'nested entry with recursive',
      objects({ directories: ['/usr/bin'], recursive: true }),
      '/usr/bin/x/ls',
      true,
    ],
    [
      'sibling with the same prefix',
      objects({ directories: ['/usr/bin'], recursive: true }),
      '/usr/binx/ls',
      false,
    ],
    ['root, direct entry', objects({ directories: ['/'] }), '/etc', true],
    ['root, nested entry', objects({ directories: ['/'] }), '/etc/hosts', false],
    ['root, recursive', objects({ directories: ['/'], recursive: true }), '/etc/hosts', true],
    ['root itself', objects({ directories: ['/'], recursive: true }), '/', false],
    [
      'star within a segment',
      objects({ glob: true, paths: ['/usr/bin/py*'] }),
      '/usr/bin/python3',
      true,
    ],
    [
      'star stops at a slash',
      objects({ glob: true, paths: ['/usr/bin/py*'] }),
      '/usr/bin/py/x',
      false,
    ],
    [
      'star as a segment needs a character',
      objects({ glob: true, paths: ['/home/*/x'] }),
      '/home//x',
      false,
    ],
    [
      'star as a segment',
      objects({ glob: true, paths: ['/home/*/.ssh/id_rsa'] }),
      '/home/ann/.ssh/id_rsa',
      true,
    ],
    [
      'star matches dot files',
      objects({ glob: true, paths: ['/home/ann/*'] }),
      '/home/ann/.bashrc',
      true,
    ],
    ['middle ** matches no segment', objects({ glob: true, paths: ['/a/**/b'] }), '/a/b', true],
    ['middle ** matches segments', objects({ glob: true, paths: ['/a/**/b'] }), '/a/x/y/b', true],
    ['trailing ** needs a segment', objects({ glob: true, paths: ['/a/**'] }), '/a', false],
    ['trailing ** matches below', objects({ glob: true, paths: ['/a/**'] }), '/a/x/y', true],
    ['leading **', objects({ glob: true, paths: ['/**/id_rsa'] }), '/home/ann/.ssh/id_rsa', true],
    [
      'regexp characters are literal',
      objects({ glob: true, paths: ['/a/b.c+*'] }),
      '/a/bxc+1',
      false,
    ],
    [
      'regexp characters match themselves',
      objects({ glob: true, paths: ['/a/b.c+*'] }),
      '/a/b.c+1',
      true,
    ],
    [
      'glob directory, direct entry',
      objects({ glob: true, directories: ['/home/*/bin'] }),
      '/home/ann/bin/x',
      true,
    ],
    [
      'glob directory, nested',
      objects({ glob: true, directories: ['/home/*/bin'] }),
      '/home/ann/bin/x/y',
      false,
    ],
    [
      'glob directory, recursive',
      objects({ glob: true, recursive: true, directories: ['/home/*/bin'] }),
      '/home/ann/bin/x/y',
      true,
    ],
    [
      'glob rule with a plain path',
      objects({ glob: true, paths: ['/etc/hosts'] }),
      '/etc/hosts',
      true,
    ],
  ])('%s', (_name, rule, path, expected) => {
    expect(pathMatcher(rule)(path)).toBe(expected);
  });
});

describe('pathMatcher on an opened directory', () => {
  it.each<[string, PathObjects, string, boolean]>([
    ['the directory itself', objects({ directories: ['/etc'] }), '/etc', true],
    [
      'the directory itself, recursive',
      objects({ directories: ['/etc'], recursive: true }),
      '/etc',
      true,
    ],
    ['the root', objects({ directories: ['/'] }), '/', true],
    ['an entry that is a directory', objects({ directories: ['/etc'] }), '/etc/ssl', true],
    ['a nested directory', objects({ directories: ['/etc'] }), '/etc/ssl/certs', false],
    [
      'a glob directory itself',
      objects({ glob: true, directories: ['/home/*'] }),
      '/home/ann',
      true,
    ],
    ['a glob root pattern', objects({ glob: true, directories: ['/*'] }), '/etc', true],
    ['a file path rule', objects({ paths: ['/etc'] }), '/etc', true],
  ])('%s', (_name, rule, path, expected) => {
    expect(pathMatcher(rule)(path, true)).toBe(expected);
  });

  it('needs the directory flag to match the directory itself', () => {
    expect(pathMatcher(objects({ directories: ['/etc'] }))('/etc')).toBe(false);
  });
});
