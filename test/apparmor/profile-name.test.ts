import { describe, expect, it } from 'vitest';
import {
  assignProfileNames,
  baseProfileName,
  isSigilProfileName,
  MAX_PROFILE_NAME_LENGTH,
} from '../../src/apparmor/profile-name';

describe('baseProfileName', () => {
  it.each([
    ['spiffe://example.org/ns/web', 'sigil.example.org.ns.web'],
    ['spiffe://example.org', 'sigil.example.org'],
    ['spiffe://example.org/A_b-c', 'sigil.example.org.A_b-c'],
  ])('names %s', (spiffeId, expected) => {
    expect(baseProfileName(spiffeId)).toBe(expected);
  });

  it('replaces characters outside the safe set', () => {
    expect(baseProfileName('spiffe://example.org/a b&c:d')).toBe('sigil.example.org.a_b_c_d');
  });

  it('never contains a slash', () => {
    expect(baseProfileName('spiffe://example.org/a//b')).not.toContain('/');
  });

  it('shortens long IDs with a hash', () => {
    const long = `spiffe://example.org/${'x'.repeat(300)}`;
    const name = baseProfileName(long);
    expect(name.length).toBe(MAX_PROFILE_NAME_LENGTH);
    expect(name).toMatch(/-[0-9a-f]{12}$/);
    expect(baseProfileName(`${long}y`)).not.toBe(name);
  });
});

describe('assignProfileNames', () => {
  it('keeps base names without collisions', () => {
    const names = assignProfileNames(['spiffe://example.org/a', 'spiffe://example.org/b']);
    expect(names.get('spiffe://example.org/a')).toBe('sigil.example.org.a');
    expect(names.get('spiffe://example.org/b')).toBe('sigil.example.org.b');
  });

  it('gives colliding IDs distinct hashed names', () => {
    const names = assignProfileNames(['spiffe://example.org/a/b', 'spiffe://example.org/a.b']);
    const slash = names.get('spiffe://example.org/a/b')!;
    const dot = names.get('spiffe://example.org/a.b')!;
    expect(slash).not.toBe(dot);
    expect(slash).toMatch(/^sigil\.example\.org\.a\.b-[0-9a-f]{12}$/);
    expect(dot).toMatch(/^sigil\.example\.org\.a\.b-[0-9a-f]{12}$/);
  });

  it('names the same way whatever the order', () => {
    const ids = ['spiffe://example.org/a/b', 'spiffe://example.org/a.b', 'spiffe://example.org/c'];
    const forward = assignProfileNames(ids);
    const backward = assignProfileNames([...ids].reverse());
    for (const id of ids) expect(backward.get(id)).toBe(forward.get(id));
  });
});

describe('isSigilProfileName', () => {
  it.each([
    ['sigil.example.org.web', true],
    ['sigilx', false],
    ['docker-default', false],
    ['/usr/bin/man', false],
  ])('%s: %s', (name, expected) => {
    expect(isSigilProfileName(name)).toBe(expected);
  });
});
