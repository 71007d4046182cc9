/**
 * Small integer ids for SPIFFE IDs. The kernel maps hold only ids; this
 * registry holds the mapping both ways. An id is never reused while the
 * agent runs, so an event decoded late still names the right SPIFFE ID.
 * Id 0 means "no identity".
 */
export class IdentityRegistry {
  private readonly idsBySpiffeId = new Map<string, number>();
  private readonly spiffeIdsById = new Map<number, string>();
  private nextId = 1;

  /** Returns the id of a SPIFFE ID, assigning the next free one on first sight. */
  idFor(spiffeId: string): number {
    let id = this.idsBySpiffeId.get(spiffeId);
    if (id === undefined) {
      id = this.nextId++;
      this.idsBySpiffeId.set(spiffeId, id);
      this.spiffeIdsById.set(id, spiffeId);
    }
    return id;
  }

  /** Returns the SPIFFE ID of an id, or null for 0 and unknown ids. */
  spiffeIdOf(id: number): string | null {
    return this.spiffeIdsById.get(id) ?? null;
  }

  /** Every known identity, in id order. */
  entries(): { id: number; spiffeId: string }[] {
    return [...this.spiffeIdsById].map(([id, spiffeId]) => ({ id, spiffeId }));
  }

  get size(): number {
    return this.spiffeIdsById.size;
  }
}
