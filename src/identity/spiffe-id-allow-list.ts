/**
 * Authorisation by SPIFFE ID: a list of exact SPIFFE IDs and SPIFFE ID prefixes that a peer's ID
 * is checked against. A prefix matches on a path segment boundary, so `spiffe://td/soc` allows
 * `spiffe://td/soc` and `spiffe://td/soc/reader` but not `spiffe://td/soc-admin`, and a prefix of
 * only a trust domain (`spiffe://td`) allows every ID in that trust domain.
 */

import { parseSpiffeId, parseSpiffeIdPrefix } from './spiffe-id';

export class SpiffeIdAllowList {
  private readonly ids: ReadonlySet<string>;
  /** Canonical prefixes, without a trailing `/`. */
  private readonly prefixes: readonly string[];

  private constructor(ids: string[], prefixes: string[]) {
    this.ids = new Set(ids);
    this.prefixes = [...new Set(prefixes)];
  }

  /**
   * Builds a list from exact SPIFFE IDs and prefixes. Throws SpiffeIdError naming the first
   * invalid value.
   */
  static parse(ids: readonly string[], prefixes: readonly string[] = []): SpiffeIdAllowList {
    return new SpiffeIdAllowList(
      ids.map((id) => parseSpiffeId(id).toString()),
      prefixes.map((prefix) => parseSpiffeIdPrefix(prefix).toString()),
    );
  }

  /** Whether the list allows nothing. */
  get isEmpty(): boolean {
    return this.ids.size === 0 && this.prefixes.length === 0;
  }

  /**
   * Returns whether the list allows a SPIFFE ID. The ID must already be valid and canonical (as
   * parseSpiffeId returns it), because the comparison is byte for byte.
   */
  allows(spiffeId: string): boolean {
    if (this.ids.has(spiffeId)) return true;
    return this.prefixes.some((prefix) => spiffeId === prefix || spiffeId.startsWith(`${prefix}/`));
  }

  /** Describes the list for logs and messages, such as `spiffe://td/a, spiffe://td/soc/...`. */
  describe(): string {
    const entries = [...this.ids, ...this.prefixes.map((prefix) => `${prefix}/...`)];
    return entries.length > 0 ? entries.join(', ') : 'none';
  }
}
