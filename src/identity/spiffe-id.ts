/**
 * SPIFFE ID parsing and validation.
 *
 * Rules (SPIFFE-ID standard, https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md):
 * the form is `spiffe://<trust domain><path>`. The trust domain is non-empty, at most 255 bytes,
 * and uses only `a-z 0-9 . - _`. The path is optional. When present, it is a sequence of
 * `/segment` parts whose segments use only `a-z A-Z 0-9 . - _` and are not empty, `.` or `..`.
 * There is no userinfo, port, query, fragment or percent-encoding, and the whole ID is at most
 * 2048 bytes. Section 2.4 of the standard calls the scheme and trust domain case-insensitive,
 * but section 2.1 requires a lowercase trust domain. This parser rejects uppercase in both, so
 * IDs can be compared byte for byte.
 */

/** Maximum length of a whole SPIFFE ID in bytes (the standard requires accepting up to 2048). */
export const SPIFFE_ID_MAX_BYTES = 2048;

/** Maximum length of a trust domain name in bytes (the RFC 3986 host limit). */
export const TRUST_DOMAIN_MAX_BYTES = 255;

const SCHEME_PREFIX = 'spiffe://';

/** Name of the SPIFFE ID rule that a value breaks. */
export type SpiffeIdErrorReason =
  | 'empty'
  | 'too-long'
  | 'missing-scheme'
  | 'wrong-scheme'
  | 'scheme-not-lowercase'
  | 'query'
  | 'fragment'
  | 'userinfo'
  | 'port'
  | 'ip-literal'
  | 'missing-trust-domain'
  | 'trust-domain-too-long'
  | 'trust-domain-character'
  | 'percent-encoding'
  | 'path-character'
  | 'empty-segment'
  | 'dot-segment'
  | 'trailing-slash'
  | 'unexpected-path';

/** Error for a value that is not a valid SPIFFE ID, SPIFFE ID prefix or trust domain. */
export class SpiffeIdError extends Error {
  readonly reason: SpiffeIdErrorReason;
  /** The rejected text, unchanged. */
  readonly value: string;
  /** The rule that the value breaks, without the value (for messages that show it elsewhere). */
  readonly problem: string;

  constructor(
    kind: SpiffeIdValueKind,
    value: string,
    reason: SpiffeIdErrorReason,
    problem: string,
  ) {
    super(`invalid ${kind} ${quoteValue(value)}: ${problem}`);
    this.name = 'SpiffeIdError';
    this.reason = reason;
    this.value = value;
    this.problem = problem;
  }
}

/** A parsed SPIFFE ID. `toString()` returns `spiffe://<trustDomain><path>`. */
export interface SpiffeId {
  readonly trustDomain: string;
  /** Empty, or `/`-prefixed segments without a trailing `/`. */
  readonly path: string;
  toString(): string;
}

/** Kind of value being parsed, as named in error messages. */
export type SpiffeIdValueKind = 'SPIFFE ID' | 'SPIFFE ID prefix' | 'trust domain';

class ParsedSpiffeId implements SpiffeId {
  constructor(
    readonly trustDomain: string,
    readonly path: string,
  ) {}

  toString(): string {
    return `${SCHEME_PREFIX}${this.trustDomain}${this.path}`;
  }
}

/** Parses a SPIFFE ID, throwing `SpiffeIdError` that names the value and the broken rule. */
export function parseSpiffeId(text: string): SpiffeId {
  return parseWithScheme(text, 'SPIFFE ID', false);
}

/**
 * Parses a SPIFFE ID used as a path prefix. One trailing `/` is allowed and dropped, so
 * `spiffe://td/ns/` and `spiffe://td/` parse to `spiffe://td/ns` and `spiffe://td`.
 */
export function parseSpiffeIdPrefix(text: string): SpiffeId {
  return parseWithScheme(text, 'SPIFFE ID prefix', true);
}

/**
 * Parses a trust domain name given either bare (`example.org`) or as a SPIFFE ID without a path
 * (`spiffe://example.org`), and returns the bare name.
 */
export function parseTrustDomain(text: string): string {
  if (text.includes('://')) {
    const id = parseWithScheme(text, 'trust domain', false);
    if (id.path !== '') {
      throw new SpiffeIdError(
        'trust domain',
        text,
        'unexpected-path',
        `a trust domain has no path, so remove '${id.path}'`,
      );
    }
    return id.trustDomain;
  }
  if (text === '') {
    throw new SpiffeIdError('trust domain', text, 'empty', 'the value is empty');
  }
  checkTrustDomain(text, text, 'trust domain');
  return text;
}

/**
 * Returns whether `id` equals `prefix` or continues it at a path segment boundary:
 * `spiffe://td/ns/a` matches `spiffe://td/ns` and `spiffe://td/ns/` but not `spiffe://td/nsx`.
 * A prefix of only a trust domain (`spiffe://td`) matches every ID in that trust domain.
 * Throws `SpiffeIdError` when either value is invalid.
 */
export function matchesSpiffeIdPrefix(id: string, prefix: string): boolean {
  const idText = parseSpiffeId(id).toString();
  const prefixText = parseSpiffeIdPrefix(prefix).toString();
  return idText === prefixText || idText.startsWith(`${prefixText}/`);
}

function parseWithScheme(
  text: string,
  kind: SpiffeIdValueKind,
  allowTrailingSlash: boolean,
): SpiffeId {
  checkLength(text, kind);
  checkScheme(text, kind);

  // A '?' starts the query and a '#' the fragment, whichever comes first.
  const queryIndex = text.indexOf('?');
  const fragmentIndex = text.indexOf('#');
  if (fragmentIndex >= 0 && (queryIndex < 0 || fragmentIndex < queryIndex)) {
    throw new SpiffeIdError(kind, text, 'fragment', "a fragment ('#...') is not allowed");
  }
  if (queryIndex >= 0) {
    throw new SpiffeIdError(kind, text, 'query', "a query ('?...') is not allowed");
  }

  const rest = text.slice(SCHEME_PREFIX.length);
  const slashIndex = rest.indexOf('/');
  const authority = slashIndex < 0 ? rest : rest.slice(0, slashIndex);
  let path = slashIndex < 0 ? '' : rest.slice(slashIndex);
  checkTrustDomain(authority, text, kind);

  if (allowTrailingSlash && path.endsWith('/')) {
    path = path.slice(0, -1);
  }
  checkPath(path, text, kind);
  return new ParsedSpiffeId(authority, path);
}

function checkLength(text: string, kind: SpiffeIdValueKind): void {
  if (text === '') {
    throw new SpiffeIdError(kind, text, 'empty', 'the value is empty');
  }
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > SPIFFE_ID_MAX_BYTES) {
    throw new SpiffeIdError(
      kind,
      text,
      'too-long',
      `the value is ${bytes} bytes long, more than the maximum of ${SPIFFE_ID_MAX_BYTES}`,
    );
  }
}

function checkScheme(text: string, kind: SpiffeIdValueKind): void {
  if (text.startsWith(SCHEME_PREFIX)) {
    return;
  }
  const head = text.slice(0, SCHEME_PREFIX.length);
  if (head.toLowerCase() === SCHEME_PREFIX) {
    throw new SpiffeIdError(
      kind,
      text,
      'scheme-not-lowercase',
      `the scheme must be lowercase 'spiffe://', not '${head}'`,
    );
  }
  const separator = text.indexOf('://');
  if (separator < 0) {
    throw new SpiffeIdError(kind, text, 'missing-scheme', "the value must start with 'spiffe://'");
  }
  throw new SpiffeIdError(
    kind,
    text,
    'wrong-scheme',
    `the scheme must be 'spiffe', not '${text.slice(0, separator)}'`,
  );
}

function checkTrustDomain(name: string, text: string, kind: SpiffeIdValueKind): void {
  if (name === '') {
    throw new SpiffeIdError(kind, text, 'missing-trust-domain', 'the trust domain is missing');
  }
  if (name.includes('@')) {
    throw new SpiffeIdError(kind, text, 'userinfo', "userinfo ('user@') is not allowed");
  }
  if (name.startsWith('[')) {
    throw new SpiffeIdError(
      kind,
      text,
      'ip-literal',
      'an IPv6 address literal is not allowed as a trust domain',
    );
  }
  if (name.includes(':')) {
    throw new SpiffeIdError(kind, text, 'port', "a port (':<port>') is not allowed");
  }
  if (name.includes('%')) {
    throw new SpiffeIdError(
      kind,
      text,
      'percent-encoding',
      'percent-encoding is not allowed in the trust domain',
    );
  }
  for (let index = 0; index < name.length; index++) {
    const code = name.charCodeAt(index);
    if (!isTrustDomainChar(code)) {
      const detail = isUpperAsciiLetter(code) ? ' (the trust domain must be lowercase)' : '';
      throw new SpiffeIdError(
        kind,
        text,
        'trust-domain-character',
        `the trust domain contains ${describeChar(name, index)}${detail}; ` +
          "allowed are a-z, 0-9, '.', '-' and '_'",
      );
    }
  }
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > TRUST_DOMAIN_MAX_BYTES) {
    throw new SpiffeIdError(
      kind,
      text,
      'trust-domain-too-long',
      `the trust domain is ${bytes} bytes long, more than the maximum of ${TRUST_DOMAIN_MAX_BYTES}`,
    );
  }
}

/** Checks a path that is empty or starts with '/'. */
function checkPath(path: string, text: string, kind: SpiffeIdValueKind): void {
  if (path === '') {
    return;
  }
  const segments = path.slice(1).split('/');
  for (let index = 0; index < segments.length; index++) {
    const segment = segments[index];
    if (segment === '') {
      // For a prefix, one trailing '/' was already dropped, so any empty segment left is inside.
      if (index === segments.length - 1 && kind !== 'SPIFFE ID prefix') {
        throw new SpiffeIdError(kind, text, 'trailing-slash', "the path must not end with '/'");
      }
      throw new SpiffeIdError(
        kind,
        text,
        'empty-segment',
        "the path contains an empty segment ('//')",
      );
    }
    if (segment === '.' || segment === '..') {
      throw new SpiffeIdError(
        kind,
        text,
        'dot-segment',
        `the path contains the relative segment '${segment}'`,
      );
    }
    if (segment.includes('%')) {
      throw new SpiffeIdError(
        kind,
        text,
        'percent-encoding',
        'percent-encoding is not allowed in the path',
      );
    }
    for (let charIndex = 0; charIndex < segment.length; charIndex++) {
      if (!isPathChar(segment.charCodeAt(charIndex))) {
        throw new SpiffeIdError(
          kind,
          text,
          'path-character',
          `the path contains ${describeChar(segment, charIndex)}; ` +
            "allowed are a-z, A-Z, 0-9, '.', '-' and '_'",
        );
      }
    }
  }
}

function isTrustDomainChar(code: number): boolean {
  return isLowerAsciiLetter(code) || isDigit(code) || isPunctuationChar(code);
}

function isPathChar(code: number): boolean {
  return isTrustDomainChar(code) || isUpperAsciiLetter(code);
}

function isLowerAsciiLetter(code: number): boolean {
  return code >= 0x61 && code <= 0x7a;
}

function isUpperAsciiLetter(code: number): boolean {
  return code >= 0x41 && code <= 0x5a;
}

function isDigit(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

/** '.', '-' or '_'. */
function isPunctuationChar(code: number): boolean {
  return code === 0x2e || code === 0x2d || code === 0x5f;
}

/** Names a character so that control, space and non-ASCII characters are visible. */
function describeChar(text: string, index: number): string {
  const codePoint = text.codePointAt(index) ?? 0;
  const hex = codePoint.toString(16).toUpperCase().padStart(4, '0');
  if (codePoint > 0x20 && codePoint < 0x7f) {
    return `the character '${String.fromCodePoint(codePoint)}'`;
  }
  return `the character U+${hex}`;
}

/** Quotes a value for a message, shortening values too long to read. */
function quoteValue(value: string): string {
  const maxShown = 120;
  if (value.length <= maxShown) {
    return JSON.stringify(value);
  }
  return `${JSON.stringify(value.slice(0, maxShown))}... (${value.length} characters)`;
}
