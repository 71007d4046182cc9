import { describe, expect, it } from 'vitest';
import {
  matchesSpiffeIdPrefix,
  parseSpiffeId,
  parseSpiffeIdPrefix,
  parseTrustDomain,
  SpiffeIdError,
  SpiffeIdErrorReason,
} from '../../src/identity/spiffe-id';

/** Returns the error that `action` throws, failing the test when it throws nothing. */
function catchSpiffeIdError(action: () => unknown): SpiffeIdError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(SpiffeIdError);
    return error as SpiffeIdError;
  }
  throw new Error('expected a SpiffeIdError, but nothing was thrown');
}

const longSegment = 'a'.repeat(100);

describe('parseSpiffeId', () => {
  it.each([
    ['spiffe://trustdomain', 'trustdomain', ''],
    ['spiffe://trustdomain/path', 'trustdomain', '/path'],
    ['spiffe://staging.example.com/payments/mysql', 'staging.example.com', '/payments/mysql'],
    [
      'spiffe://k8s-west.example.com/ns/staging/sa/default',
      'k8s-west.example.com',
      '/ns/staging/sa/default',
    ],
    [
      'spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453',
      'example.com',
      '/9eebccd2-12bf-40a6-b262-65fe0487d453',
    ],
    ['spiffe://trustdomain/.path', 'trustdomain', '/.path'],
    ['spiffe://trustdomain/..path', 'trustdomain', '/..path'],
    ['spiffe://trustdomain/...', 'trustdomain', '/...'],
    ['spiffe://td_1.example-x/Upper_Case.Path-1', 'td_1.example-x', '/Upper_Case.Path-1'],
    ['spiffe://192.168.1.1/web', '192.168.1.1', '/web'],
    [`spiffe://${'a'.repeat(255)}/x`, 'a'.repeat(255), '/x'],
  ])('accepts %s', (text, trustDomain, path) => {
    const id = parseSpiffeId(text);
    expect(id.trustDomain).toBe(trustDomain);
    expect(id.path).toBe(path);
    expect(id.toString()).toBe(text);
    expect(`${id}`).toBe(text);
  });

  it('accepts an ID of exactly 2048 bytes', () => {
    const prefix = 'spiffe://example.org/';
    const text = prefix + 'a'.repeat(2048 - prefix.length);
    expect(Buffer.byteLength(text)).toBe(2048);
    expect(parseSpiffeId(text).toString()).toBe(text);
  });

  it.each<[string, SpiffeIdErrorReason, string]>([
    ['', 'empty', 'empty'],
    ['spiffe:/', 'missing-scheme', "must start with 'spiffe://'"],
    ['example.org/web', 'missing-scheme', "must start with 'spiffe://'"],
    ['Spiffe://trustdomain', 'scheme-not-lowercase', "lowercase 'spiffe://'"],
    ['SPIFFE://trustdomain/path', 'scheme-not-lowercase', "not 'SPIFFE://'"],
    ['https://trustdomain/path', 'wrong-scheme', "not 'https'"],
    ['spiffe://', 'missing-trust-domain', 'trust domain is missing'],
    ['spiffe:///', 'missing-trust-domain', 'trust domain is missing'],
    ['spiffe:///path', 'missing-trust-domain', 'trust domain is missing'],
    ['spiffe://trustdomain/', 'trailing-slash', "must not end with '/'"],
    ['spiffe://trustdomain/path/', 'trailing-slash', "must not end with '/'"],
    ['spiffe://trustdomain//path', 'empty-segment', 'empty segment'],
    ['spiffe://trustdomain/a//b', 'empty-segment', 'empty segment'],
    ['spiffe://trustdomain/./path', 'dot-segment', "relative segment '.'"],
    ['spiffe://trustdomain/path/../other', 'dot-segment', "relative segment '..'"],
    ['spiffe://trustdomain/..', 'dot-segment', "relative segment '..'"],
    ['spiffe://%62%61%64/path', 'percent-encoding', 'percent-encoding'],
    ['spiffe://trustdomain/%F0%9F%A4%AF', 'percent-encoding', 'percent-encoding'],
    ['spiffe://trust$domain', 'trust-domain-character', "character '$'"],
    ['spiffe://trust domain/x', 'trust-domain-character', 'U+0020'],
    ['spiffe://trustdomäin/x', 'trust-domain-character', 'U+00E4'],
    ['spiffe://TrustDomain/path', 'trust-domain-character', 'must be lowercase'],
    ['spiffe://trustdomain/path$', 'path-character', "character '$'"],
    ['spiffe://trustdomain/pa th', 'path-character', 'U+0020'],
    ['spiffe://trustdomain/päth', 'path-character', 'U+00E4'],
    ['spiffe://trustdomain:8080/path', 'port', 'port'],
    ['spiffe://trustdomain:/path', 'port', 'port'],
    ['spiffe://user@trustdomain/path', 'userinfo', 'userinfo'],
    ['spiffe://user:pw@trustdomain', 'userinfo', 'userinfo'],
    ['spiffe://trustdomain/path?x=1', 'query', 'query'],
    ['spiffe://trustdomain?x=1', 'query', 'query'],
    ['spiffe://trustdomain/path#f', 'fragment', 'fragment'],
    ['spiffe://trustdomain/path#f?x', 'fragment', 'fragment'],
    ['spiffe://[::1]/path', 'ip-literal', 'IPv6'],
    [`spiffe://${'a'.repeat(256)}/x`, 'trust-domain-too-long', '256 bytes'],
    [`spiffe://example.org/${'a'.repeat(2028)}`, 'too-long', '2049 bytes'],
  ])('rejects %s', (text, reason, messagePart) => {
    const error = catchSpiffeIdError(() => parseSpiffeId(text));
    expect(error.reason).toBe(reason);
    expect(error.message).toContain(messagePart);
    expect(error.value).toBe(text);
  });

  it('names the value in the message', () => {
    const error = catchSpiffeIdError(() => parseSpiffeId('spiffe://td/a//b'));
    expect(error.message).toBe(
      'invalid SPIFFE ID "spiffe://td/a//b": the path contains an empty segment (\'//\')',
    );
  });

  it('shortens a long value in the message', () => {
    const text = `spiffe://example.org/${longSegment.repeat(30)}`;
    const error = catchSpiffeIdError(() => parseSpiffeId(text));
    expect(error.message).toContain(`(${text.length} characters)`);
    expect(error.message.length).toBeLessThan(300);
  });

  it('counts bytes, not characters, against the length limit', () => {
    // 'ä' is rejected as a character, but only after the length check, which counts 2 bytes.
    const prefix = 'spiffe://example.org/';
    const text = prefix + 'ä'.repeat(1014);
    expect(text.length).toBeLessThan(2048);
    const error = catchSpiffeIdError(() => parseSpiffeId(text));
    expect(error.reason).toBe('too-long');
  });
});

describe('parseTrustDomain', () => {
  it.each([
    ['example.org', 'example.org'],
    ['spiffe://example.org', 'example.org'],
    ['td_1-x.y', 'td_1-x.y'],
  ])('accepts %s', (text, expected) => {
    expect(parseTrustDomain(text)).toBe(expected);
  });

  it.each<[string, SpiffeIdErrorReason]>([
    ['', 'empty'],
    ['Example.org', 'trust-domain-character'],
    ['example.org/web', 'trust-domain-character'],
    ['spiffe://example.org/web', 'unexpected-path'],
    ['Spiffe://example.org', 'scheme-not-lowercase'],
    ['https://example.org', 'wrong-scheme'],
    ['example.org:443', 'port'],
    ['user@example.org', 'userinfo'],
    ['ex%41mple.org', 'percent-encoding'],
    ['a'.repeat(256), 'trust-domain-too-long'],
  ])('rejects %s', (text, reason) => {
    const error = catchSpiffeIdError(() => parseTrustDomain(text));
    expect(error.reason).toBe(reason);
    expect(error.message).toContain('invalid trust domain');
  });
});

describe('parseSpiffeIdPrefix', () => {
  it.each([
    ['spiffe://td/ns', 'spiffe://td/ns'],
    ['spiffe://td/ns/', 'spiffe://td/ns'],
    ['spiffe://td/', 'spiffe://td'],
    ['spiffe://td', 'spiffe://td'],
  ])('parses %s as %s', (text, expected) => {
    expect(parseSpiffeIdPrefix(text).toString()).toBe(expected);
  });

  it.each<[string, SpiffeIdErrorReason]>([
    ['spiffe://td/ns//', 'empty-segment'],
    ['spiffe://td//', 'empty-segment'],
    ['spiffe://td/../', 'dot-segment'],
    ['spiffe://TD/', 'trust-domain-character'],
  ])('rejects %s', (text, reason) => {
    const error = catchSpiffeIdError(() => parseSpiffeIdPrefix(text));
    expect(error.reason).toBe(reason);
    expect(error.message).toContain(`invalid SPIFFE ID prefix ${JSON.stringify(text)}`);
  });
});

describe('matchesSpiffeIdPrefix', () => {
  it.each([
    ['spiffe://td/ns/a', 'spiffe://td/ns', true],
    ['spiffe://td/ns/a', 'spiffe://td/ns/', true],
    ['spiffe://td/ns/a/b', 'spiffe://td/ns', true],
    ['spiffe://td/ns', 'spiffe://td/ns', true],
    ['spiffe://td/ns', 'spiffe://td/ns/', true],
    ['spiffe://td/nsx', 'spiffe://td/ns', false],
    ['spiffe://td/nsx', 'spiffe://td/ns/', false],
    ['spiffe://td/n', 'spiffe://td/ns', false],
    ['spiffe://td/ns', 'spiffe://td/ns/a', false],
    ['spiffe://td/NS/a', 'spiffe://td/ns', false],
    ['spiffe://td/anything/deep', 'spiffe://td', true],
    ['spiffe://td/anything/deep', 'spiffe://td/', true],
    ['spiffe://td', 'spiffe://td', true],
    ['spiffe://tdx/ns', 'spiffe://td', false],
    ['spiffe://other/ns/a', 'spiffe://td/ns', false],
  ])('%s with prefix %s is %s', (id, prefix, expected) => {
    expect(matchesSpiffeIdPrefix(id, prefix)).toBe(expected);
  });

  it('rejects an invalid ID', () => {
    const error = catchSpiffeIdError(() => matchesSpiffeIdPrefix('spiffe://td/ns/', 'spiffe://td'));
    expect(error.reason).toBe('trailing-slash');
  });

  it('rejects an invalid prefix', () => {
    const error = catchSpiffeIdError(() => matchesSpiffeIdPrefix('spiffe://td/a', 'td'));
    expect(error.reason).toBe('missing-scheme');
  });
});
