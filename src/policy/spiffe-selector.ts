import { matchesSpiffeIdPrefix, parseSpiffeId, parseSpiffeIdPrefix } from '../identity/spiffe-id';
import { SpiffeSelector } from './types';

/** Returns the canonical text of a SPIFFE ID; throws `SpiffeIdError` when it is invalid. */
export function canonicalSpiffeId(text: string): string {
  return parseSpiffeId(text).toString();
}

/** Returns the canonical text of a SPIFFE ID prefix (trailing `/` dropped); throws when invalid. */
export function canonicalSpiffeIdPrefix(text: string): string {
  return parseSpiffeIdPrefix(text).toString();
}

/** Returns whether a selector matches a SPIFFE ID given in canonical text. */
export function selectorMatches(selector: SpiffeSelector, spiffeId: string): boolean {
  if (selector.kind === 'spiffeId') return selector.spiffeId === spiffeId;
  // Both texts are canonical, so a match implies a plain string prefix. The cheap test skips
  // the parsing that matchesSpiffeIdPrefix does for most identities.
  if (!spiffeId.startsWith(selector.spiffeIdPrefix)) return false;
  return matchesSpiffeIdPrefix(spiffeId, selector.spiffeIdPrefix);
}

/** Returns a stable text key for a selector, such as `prefix:spiffe://example.org/ns`. */
export function selectorKey(selector: SpiffeSelector): string {
  return selector.kind === 'spiffeId'
    ? `id:${selector.spiffeId}`
    : `prefix:${selector.spiffeIdPrefix}`;
}
