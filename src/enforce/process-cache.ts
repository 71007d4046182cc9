import { readlinkSync } from 'node:fs';

/** Maximum processes in the cache; past it the oldest is forgotten. */
const MAX_PROCESSES = 65_536;

interface CachedProcess {
  executable: string;
  startTimeTicks: bigint;
}

/**
 * Executable paths of processes the agent has attested, so events name the
 * program even after it exited. Bounded: the oldest entries go first.
 */
export class ProcessCache {
  private readonly processes = new Map<number, CachedProcess>();

  remember(tgid: number, executable: string, startTimeTicks: bigint): void {
    this.processes.delete(tgid);
    this.processes.set(tgid, { executable, startTimeTicks });
    if (this.processes.size > MAX_PROCESSES) {
      const oldest = this.processes.keys().next().value as number;
      this.processes.delete(oldest);
    }
  }

  forget(tgid: number): void {
    this.processes.delete(tgid);
  }

  /** Returns the executable of a process, from the cache or else from /proc; null when unknown. */
  executable(tgid: number): string | null {
    const cached = this.processes.get(tgid);
    if (cached) return cached.executable;
    try {
      return readlinkSync(`/proc/${tgid}/exe`);
    } catch {
      return null;
    }
  }
}
