import { matchesSpiffeIdPrefix, parseSpiffeId, parseSpiffeIdPrefix } from '../identity/spiffe-id';
import { SpiffeSelector } from './types';

const SLASH = 0x2f;

/** Returns the canonical text of a SPIFFE ID, or throws `SpiffeIdError` when it is invalid. */
export function canonicalSpiffeId(text: string): string {
  return parseSpiffeId(text).toString();
}

/**
 * Returns the canonical text of a SPIFFE ID prefix, without a trailing `/`, or throws
 * `SpiffeIdError` when it is invalid.
 */
export function canonicalSpiffeIdPrefix(text: string): string {
  return parseSpiffeIdPrefix(text).toString();
}

/** Returns whether a selector matches a SPIFFE ID given in canonical text. */
export function selectorMatches(selector: SpiffeSelector, spiffeId: string): boolean {
  if (selector.kind === 'spiffeId') return selector.spiffeId === spiffeId;
  // Both texts are canonical, so a match needs equal text or the prefix followed by '/'. This
  // string test skips the parsing that matchesSpiffeIdPrefix does for every other identity.
  const prefix = selector.spiffeIdPrefix;
  const candidate =
    spiffeId.startsWith(prefix) &&
    (spiffeId.length === prefix.length || spiffeId.charCodeAt(prefix.length) === SLASH);
  return candidate && matchesSpiffeIdPrefix(spiffeId, prefix);
}

/** Returns a stable text key for a selector, such as `prefix:spiffe://example.org/ns`. */
export function selectorKey(selector: SpiffeSelector): string {
  return selector.kind === 'spiffeId'
    ? `id:${selector.spiffeId}`
    : `prefix:${selector.spiffeIdPrefix}`;
}
