import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Small integer ids for SPIFFE IDs. The kernel maps store only ids, and this
 * registry maps them both ways. An id is never reused while the
 * agent runs, so an event decoded late still names the right SPIFFE ID.
 * Id 0 means "no identity".
 *
 * With a journal file, every assignment is appended to it and a restarted
 * agent reads it back, so the ids in pinned kernel maps keep their meaning.
 */
export class IdentityRegistry {
  private readonly idsBySpiffeId = new Map<string, number>();
  private readonly spiffeIdsById = new Map<number, string>();
  private nextId = 1;

  constructor(private readonly journal: string | null = null) {
    if (journal && existsSync(journal)) this.readJournal(journal);
  }

  private readJournal(journal: string): void {
    for (const line of readFileSync(journal, 'utf8').split('\n')) {
      if (!line) continue;
      let entry: { id?: unknown; spiffeId?: unknown };
      try {
        entry = JSON.parse(line);
      } catch {
        // A line cut short by a crash; the entries before it are intact.
        continue;
      }
      if (typeof entry.id !== 'number' || typeof entry.spiffeId !== 'string') continue;
      this.idsBySpiffeId.set(entry.spiffeId, entry.id);
      this.spiffeIdsById.set(entry.id, entry.spiffeId);
      this.nextId = Math.max(this.nextId, entry.id + 1);
    }
  }

  /** Returns the id of a SPIFFE ID, assigning the next free one on first sight. */
  idFor(spiffeId: string): number {
    let id = this.idsBySpiffeId.get(spiffeId);
    if (id === undefined) {
      id = this.nextId++;
      this.idsBySpiffeId.set(spiffeId, id);
      this.spiffeIdsById.set(id, spiffeId);
      if (this.journal) {
        mkdirSync(dirname(this.journal), { recursive: true, mode: 0o700 });
        appendFileSync(this.journal, `${JSON.stringify({ id, spiffeId })}\n`, { mode: 0o600 });
      }
    }
    return id;
  }

  /** Returns the SPIFFE ID of an id, or null for 0 and unknown ids. */
  spiffeIdOf(id: number): string | null {
    return this.spiffeIdsById.get(id) ?? null;
  }

  /** Returns every known identity, in id order. */
  entries(): { id: number; spiffeId: string }[] {
    return [...this.spiffeIdsById]
      .map(([id, spiffeId]) => ({ id, spiffeId }))
      .sort((a, b) => a.id - b.id);
  }

  get size(): number {
    return this.spiffeIdsById.size;
  }
}
