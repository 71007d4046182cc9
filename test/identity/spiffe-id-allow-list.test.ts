import { describe, expect, it } from 'vitest';
import { SpiffeIdAllowList } from '../../src/identity/spiffe-id-allow-list';
import { SpiffeIdError } from '../../src/identity/spiffe-id';

describe('SpiffeIdAllowList', () => {
  const list = SpiffeIdAllowList.parse(
    ['spiffe://example.org/siem', 'spiffe://example.org/ops/pager'],
    ['spiffe://example.org/soc', 'spiffe://partner.example/readers/'],
  );

  it.each([
    ['spiffe://example.org/siem', true, 'exact ID'],
    ['spiffe://example.org/ops/pager', true, 'second exact ID'],
    ['spiffe://example.org/siem/worker', false, 'exact ID is not a prefix'],
    ['spiffe://example.org/sie', false, 'shorter than an exact ID'],
    ['spiffe://example.org/soc', true, 'equal to a prefix'],
    ['spiffe://example.org/soc/reader', true, 'one segment below a prefix'],
    ['spiffe://example.org/soc/tier1/reader', true, 'two segments below a prefix'],
    ['spiffe://example.org/soc-admin', false, 'prefix without a segment boundary'],
    ['spiffe://example.org/socks/reader', false, 'longer first segment'],
    ['spiffe://partner.example/readers/a', true, 'prefix given with a trailing slash'],
    ['spiffe://partner.example/readers', true, 'prefix itself, given with a trailing slash'],
    ['spiffe://other.example/soc/reader', false, 'same path in another trust domain'],
    ['spiffe://example.org/SOC/reader', false, 'path compared case-sensitively'],
    ['spiffe://example.org', false, 'the trust domain ID itself'],
  ])('%s is allowed: %s (%s)', (spiffeId, allowed) => {
    expect(list.allows(spiffeId)).toBe(allowed);
  });

  it('allows a whole trust domain with a bare prefix', () => {
    const trustDomain = SpiffeIdAllowList.parse([], ['spiffe://example.org']);
    expect(trustDomain.allows('spiffe://example.org/any/workload')).toBe(true);
    expect(trustDomain.allows('spiffe://example.org')).toBe(true);
    expect(trustDomain.allows('spiffe://example.org.evil/any')).toBe(false);
  });

  it('canonicalises a prefix with a trailing slash', () => {
    expect(SpiffeIdAllowList.parse([], ['spiffe://example.org/soc/']).describe()).toBe(
      'spiffe://example.org/soc/...',
    );
  });

  it('describes exact IDs and prefixes', () => {
    expect(list.describe()).toBe(
      'spiffe://example.org/siem, spiffe://example.org/ops/pager, spiffe://example.org/soc/..., ' +
        'spiffe://partner.example/readers/...',
    );
  });

  it('is empty without entries', () => {
    const empty = SpiffeIdAllowList.parse([]);
    expect(empty.isEmpty).toBe(true);
    expect(empty.describe()).toBe('none');
    expect(empty.allows('spiffe://example.org/siem')).toBe(false);
    expect(list.isEmpty).toBe(false);
  });

  it.each([
    [['spiffe://example.org/siem/'], [], 'trailing-slash'],
    [['https://example.org/siem'], [], 'wrong-scheme'],
    [['spiffe://Example.org/siem'], [], 'trust-domain-character'],
    [[], ['spiffe://example.org//soc'], 'empty-segment'],
    [[], ['example.org/soc'], 'missing-scheme'],
  ])('rejects ids %j and prefixes %j (%s)', (ids, prefixes, reason) => {
    let caught: unknown;
    try {
      SpiffeIdAllowList.parse(ids, prefixes);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SpiffeIdError);
    expect((caught as SpiffeIdError).reason).toBe(reason);
  });
});
