import { readlinkSync } from 'node:fs';
import { readProcessStat } from '../identity/process-info';
import { MAX_ANCESTRY, ProcessRef } from '../events/audit-event';

/** Default bound of live processes; past it the least recently used one is evicted. */
export const DEFAULT_MAX_LIVE_PROCESSES = 65_536;
/** Default bound of exited processes kept for their descendants' ancestry and late records. */
export const DEFAULT_MAX_EXITED_PROCESSES = 16_384;
/** Processes remembered as not found in /proc, so a walk does not read /proc again for each event. */
const MAX_PROC_MISSES = 4096;

/** Facts the agent has about one process. Start times are in clock ticks since boot. */
export interface CachedProcess {
  tgid: number;
  /** Start time; with tgid it names one process, because a reused pid starts later. */
  startTimeTicks: bigint;
  ppid: number;
  /** Start time of the parent, null when unknown (then any process with pid ppid matches). */
  parentStartTimeTicks: bigint | null;
  /** Empty when unknown. */
  executable: string;
  comm: string;
  /** SPIFFE ID from the last attestation, or inherited from the parent at fork; null for none. */
  spiffeId: string | null;
  uid: number | null;
  gid: number | null;
  /** Decimal string, as in events; empty when unknown. */
  cgroupId: string;
  exited: boolean;
  /** An event was published for this process, so its exit is reported too. */
  reported: boolean;
}

export type CacheState = 'live' | 'exited';

export interface ProcessCacheOptions {
  maxLive?: number;
  maxExited?: number;
  /** Called for each evicted entry, which makes ancestry through that process incomplete. */
  onEvict?: (state: CacheState, entry: CachedProcess) => void;
  /** Root of procfs, read for processes that no record reported; defaults to /proc. */
  procRoot?: string;
}

/** Facts of a new or changed process, as a fork or exec record or /proc gives them. */
export interface ProcessFacts {
  tgid: number;
  startTimeTicks: bigint;
  ppid: number;
  parentStartTimeTicks: bigint | null;
  executable?: string;
  comm?: string;
  uid?: number;
  gid?: number;
  cgroupId?: string;
}

/**
 * The agent's process tree: filled from fork, exec and exit records and from
 * /proc, so events can name a process's program and ancestors even after
 * they exited. Bounded: live processes are evicted least recently used first,
 * exited ones oldest first, and each eviction is reported through onEvict.
 * An exited process stays until evicted, because its descendants may still run.
 */
export class ProcessCache {
  /** Insertion order is use order: the first key is the least recently used. */
  private readonly live = new Map<number, CachedProcess>();
  /** The last exited process of each tgid, oldest first. */
  private readonly exited = new Map<number, CachedProcess>();
  /** `tgid/start` of processes that /proc did not have, oldest first. */
  private readonly procMisses = new Set<string>();
  private readonly maxLive: number;
  private readonly maxExited: number;
  private readonly procRoot: string;
  /** Changes of cached processes; an ancestry computed at another version may be stale. */
  private version = 0;
  /** Ancestries computed at ancestryVersion, by tgid, with the ppid they were asked with. */
  private readonly ancestries = new Map<number, { ppid: number; refs: readonly ProcessRef[] }>();
  private ancestryVersion = -1;

  constructor(private readonly options: ProcessCacheOptions = {}) {
    this.maxLive = options.maxLive ?? DEFAULT_MAX_LIVE_PROCESSES;
    this.maxExited = options.maxExited ?? DEFAULT_MAX_EXITED_PROCESSES;
    this.procRoot = options.procRoot ?? '/proc';
    if (!(this.maxLive >= 1 && this.maxExited >= 0)) {
      throw new RangeError(
        `invalid process cache bounds: maxLive ${this.maxLive} must be at least 1 and ` +
          `maxExited ${this.maxExited} at least 0`,
      );
    }
  }

  get size(): { live: number; exited: number } {
    return { live: this.live.size, exited: this.exited.size };
  }

  /** Records a new process; it inherits its parent's program, SPIFFE ID and ids until it execs. */
  fork(facts: ProcessFacts): CachedProcess {
    const parent = this.find(facts.ppid, facts.parentStartTimeTicks);
    return this.store({
      tgid: facts.tgid,
      startTimeTicks: facts.startTimeTicks,
      ppid: facts.ppid,
      parentStartTimeTicks: facts.parentStartTimeTicks,
      executable: facts.executable ?? parent?.executable ?? '',
      comm: facts.comm ?? parent?.comm ?? '',
      spiffeId: parent?.spiffeId ?? null,
      uid: facts.uid ?? parent?.uid ?? null,
      gid: facts.gid ?? parent?.gid ?? null,
      cgroupId: facts.cgroupId ?? parent?.cgroupId ?? '',
      exited: false,
      reported: false,
    });
  }

  /**
   * Records an exec: the process keeps its SPIFFE ID (the kernel keeps the
   * inherited one until user space attests the new program) and gets the new program.
   */
  exec(facts: ProcessFacts): CachedProcess {
    const current = this.find(facts.tgid, facts.startTimeTicks);
    if (!current || current.exited) return this.fork(facts);
    this.version++;
    current.ppid = facts.ppid;
    current.parentStartTimeTicks = facts.parentStartTimeTicks;
    if (facts.executable !== undefined) current.executable = facts.executable;
    if (facts.comm !== undefined) current.comm = facts.comm;
    if (facts.uid !== undefined) current.uid = facts.uid;
    if (facts.gid !== undefined) current.gid = facts.gid;
    if (facts.cgroupId !== undefined) current.cgroupId = facts.cgroupId;
    this.touch(current);
    return current;
  }

  /**
   * Records the result of an attestation. A process that no record reported
   * (it ran before the agent started) is read from /proc first.
   * Does nothing when the process is gone or its pid now names another process.
   */
  attested(
    tgid: number,
    startTimeTicks: bigint,
    executable: string,
    spiffeId: string | null,
  ): void {
    let entry = this.find(tgid, startTimeTicks);
    if (!entry) entry = this.learnFromProc(tgid, startTimeTicks) ?? undefined;
    if (!entry || entry.exited) return;
    this.version++;
    entry.executable = executable;
    entry.spiffeId = spiffeId;
  }

  /** Sets the SPIFFE ID of a live process, such as after SPIRE changed it. */
  setSpiffeId(tgid: number, spiffeId: string | null): void {
    const entry = this.live.get(tgid);
    if (!entry) return;
    this.version++;
    entry.spiffeId = spiffeId;
  }

  /** Marks a process as the subject of a published event, so its exit is reported too. */
  markReported(tgid: number): void {
    const entry = this.live.get(tgid);
    if (entry) entry.reported = true;
  }

  /**
   * Records an exit and returns what the cache knew about the process, or
   * undefined when it knew nothing (or only a process of another start time).
   */
  exit(tgid: number, startTimeTicks: bigint): CachedProcess | undefined {
    const entry = this.live.get(tgid);
    if (!entry || entry.startTimeTicks !== startTimeTicks) return undefined;
    this.version++;
    this.live.delete(tgid);
    entry.exited = true;
    this.exited.delete(tgid);
    this.exited.set(tgid, entry);
    this.evictExited();
    return entry;
  }

  /**
   * Moves live processes that /proc no longer has (or has with another start
   * time) to the exited ones, as if their exit records had arrived. For use
   * after lost exit records. Returns how many it moved.
   */
  pruneGone(): number {
    const exitedUnseen: CachedProcess[] = [];
    for (const entry of this.live.values()) {
      let stat;
      try {
        stat = readProcessStat(entry.tgid, this.procRoot);
      } catch {
        continue;
      }
      if (!stat || stat.startTimeTicks !== entry.startTimeTicks) exitedUnseen.push(entry);
    }
    for (const entry of exitedUnseen) this.exit(entry.tgid, entry.startTimeTicks);
    return exitedUnseen.length;
  }

  /**
   * Returns the process with this tgid and start time, live or exited. A null
   * start time matches the live process, else the last one that exited.
   */
  find(tgid: number, startTimeTicks: bigint | null): CachedProcess | undefined {
    const live = this.live.get(tgid);
    if (live && (startTimeTicks === null || live.startTimeTicks === startTimeTicks)) return live;
    const exited = this.exited.get(tgid);
    if (exited && (startTimeTicks === null || exited.startTimeTicks === startTimeTicks)) {
      return exited;
    }
    return undefined;
  }

  /**
   * Returns the ancestors of a process, parent first, at most maxDepth of
   * them. The walk follows the parent recorded at fork or at the last exec
   * (not a later reparenting), so an exited parent still appears while the
   * cache contains it. It stops at pid 0, at a parent that neither the cache
   * nor /proc has (with the expected start time), or at a loop.
   */
  ancestry(tgid: number, ppid: number, maxDepth = MAX_ANCESTRY): readonly ProcessRef[] {
    if (maxDepth !== MAX_ANCESTRY) return this.walkAncestry(tgid, ppid, maxDepth);
    if (this.ancestryVersion !== this.version) {
      this.ancestries.clear();
      this.ancestryVersion = this.version;
    }
    const known = this.ancestries.get(tgid);
    if (known !== undefined && known.ppid === ppid) return known.refs;
    const refs = this.walkAncestry(tgid, ppid, maxDepth);
    for (const ref of refs) Object.freeze(ref);
    Object.freeze(refs);
    // A walk that read /proc stored processes, so it moved the version on: this result is current.
    if (this.ancestryVersion !== this.version) {
      this.ancestries.clear();
      this.ancestryVersion = this.version;
    }
    this.ancestries.set(tgid, { ppid, refs });
    return refs;
  }

  /**
   * Walks the ancestors of a process and marks them as recently used.
   * ancestry() reuses a walk until a process of the cache changes, so the
   * ancestors of a busy process are marked at its first event after a change
   * rather than at every event.
   */
  private walkAncestry(tgid: number, ppid: number, maxDepth: number): ProcessRef[] {
    const refs: ProcessRef[] = [];
    const self = this.live.get(tgid) ?? this.exited.get(tgid);
    let parentPid = self?.ppid ?? ppid;
    let parentStart = self ? self.parentStartTimeTicks : null;
    const seen = new Set<number>([tgid]);
    while (refs.length < maxDepth && parentPid > 0 && !seen.has(parentPid)) {
      seen.add(parentPid);
      const parent =
        this.find(parentPid, parentStart) ?? this.learnFromProc(parentPid, parentStart);
      if (!parent) break;
      if (!parent.exited) this.touch(parent);
      refs.push({
        pid: parent.tgid,
        executable: parent.executable,
        comm: parent.comm,
        spiffeId: parent.spiffeId ?? '',
      });
      parentPid = parent.ppid;
      parentStart = parent.parentStartTimeTicks;
    }
    return refs;
  }

  /** Returns the executable of a process, from the cache or else from /proc; null when unknown. */
  executable(tgid: number): string | null {
    const cached = this.live.get(tgid) ?? this.exited.get(tgid);
    if (cached?.executable) return cached.executable;
    try {
      return readlinkSync(`${this.procRoot}/${tgid}/exe`);
    } catch {
      return null;
    }
  }

  /**
   * Adds a running process from /proc, with its executable and parent.
   * Returns null when it is gone, or when its start time is not the expected one.
   */
  private learnFromProc(tgid: number, expectedStart: bigint | null): CachedProcess | null {
    const missKey = `${tgid}/${expectedStart ?? ''}`;
    if (this.procMisses.has(missKey)) return null;
    let stat;
    try {
      stat = readProcessStat(tgid, this.procRoot);
    } catch {
      stat = null;
    }
    if (!stat || (expectedStart !== null && stat.startTimeTicks !== expectedStart)) {
      // A process gone from /proc never comes back; a later one with its pid is another process.
      this.procMisses.add(missKey);
      if (this.procMisses.size > MAX_PROC_MISSES) {
        this.procMisses.delete(this.procMisses.values().next().value as string);
      }
      return null;
    }
    let parentStart: bigint | null = null;
    try {
      parentStart =
        stat.ppid > 0 ? (readProcessStat(stat.ppid, this.procRoot)?.startTimeTicks ?? null) : null;
    } catch {
      parentStart = null;
    }
    let executable = '';
    try {
      executable = readlinkSync(`${this.procRoot}/${tgid}/exe`).replace(/ \(deleted\)$/, '');
    } catch {
      // kernel threads have no executable, and another user's may be unreadable
    }
    return this.store({
      tgid,
      startTimeTicks: stat.startTimeTicks,
      ppid: stat.ppid,
      parentStartTimeTicks: parentStart,
      executable,
      comm: stat.comm,
      spiffeId: null,
      uid: null,
      gid: null,
      cgroupId: '',
      exited: false,
      reported: false,
    });
  }

  private store(entry: CachedProcess): CachedProcess {
    this.version++;
    // A live entry of an earlier process with this tgid lost its exit record; it is replaced.
    this.live.delete(entry.tgid);
    this.live.set(entry.tgid, entry);
    while (this.live.size > this.maxLive) {
      const [oldestTgid, oldest] = this.live.entries().next().value as [number, CachedProcess];
      this.live.delete(oldestTgid);
      this.options.onEvict?.('live', oldest);
    }
    return entry;
  }

  private touch(entry: CachedProcess): void {
    this.live.delete(entry.tgid);
    this.live.set(entry.tgid, entry);
  }

  private evictExited(): void {
    while (this.exited.size > this.maxExited) {
      const [oldestTgid, oldest] = this.exited.entries().next().value as [number, CachedProcess];
      this.version++;
      this.exited.delete(oldestTgid);
      this.options.onEvict?.('exited', oldest);
    }
  }
}
