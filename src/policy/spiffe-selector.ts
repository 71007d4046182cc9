import { matchesSpiffeIdPrefix, parseSpiffeId, parseSpiffeIdPrefix } from '../identity/spiffe-id';
import { SpiffeSelector, SubjectSelector } from './types';

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

/**
 * Returns whether a policy subject selects a process, given its canonical SPIFFE ID or null
 * when it has none. Only an `unidentified` subject selects a process without a SPIFFE ID.
 */
export function subjectMatches(subject: SubjectSelector, spiffeId: string | null): boolean {
  if (subject.kind === 'unidentified') return spiffeId === null;
  if (spiffeId === null) return false;
  if (subject.kind === 'trustDomain') {
    const trustDomainId = `spiffe://${subject.trustDomain}`;
    return (
      spiffeId.startsWith(trustDomainId) &&
      (spiffeId.length === trustDomainId.length ||
        spiffeId.charCodeAt(trustDomainId.length) === SLASH)
    );
  }
  return selectorMatches(subject, spiffeId);
}

/** Returns a stable text key for a policy subject, such as `trustDomain:example.org`. */
export function subjectKey(subject: SubjectSelector): string {
  if (subject.kind === 'unidentified') return 'unidentified';
  if (subject.kind === 'trustDomain') return `trustDomain:${subject.trustDomain}`;
  return selectorKey(subject);
}
