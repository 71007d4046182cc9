import { realpathSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readProcessStat } from '../../src/identity/process-info';
import {
  CacheState,
  CachedProcess,
  ProcessCache,
  ProcessFacts,
} from '../../src/enforce/process-cache';

// Pids from 4,000,001 on are above the kernel's pid_max (at most 2^22), so /proc never has them
// and the cache can only know them from the records the tests feed it.
const BASE = 4_000_001;

function facts(tgid: number, ppid: number, extra: Partial<ProcessFacts> = {}): ProcessFacts {
  return { tgid, startTimeTicks: BigInt(tgid), ppid, parentStartTimeTicks: BigInt(ppid), ...extra };
}

/** Builds a chain BASE <- BASE+1 <- ... <- BASE+length-1, process i running /bin/p<i>. */
function chain(cache: ProcessCache, length: number): void {
  cache.exec(facts(BASE, 0, { executable: '/bin/p0', comm: 'p0', parentStartTimeTicks: null }));
  for (let i = 1; i < length; i++) {
    cache.fork(facts(BASE + i, BASE + i - 1));
    cache.exec(facts(BASE + i, BASE + i - 1, { executable: `/bin/p${i}`, comm: `p${i}` }));
  }
}

describe('process cache records', () => {
  it('fork inherits program and SPIFFE ID', () => {
    const cache = new ProcessCache();
    cache.exec(facts(BASE, 1, { executable: '/usr/bin/bash', comm: 'bash', uid: 7, gid: 8 }));
    cache.attested(BASE, BigInt(BASE), '/usr/bin/bash', 'spiffe://td/a');
    const child = cache.fork(facts(BASE + 1, BASE));
    expect(child.executable).toBe('/usr/bin/bash');
    expect(child.comm).toBe('bash');
    expect(child.spiffeId).toBe('spiffe://td/a');
    expect(child.uid).toBe(7);
    expect(child.gid).toBe(8);
  });

  it('exec keeps the SPIFFE ID and changes the program', () => {
    const cache = new ProcessCache();
    cache.exec(facts(BASE, 1, { executable: '/usr/bin/bash', comm: 'bash' }));
    cache.attested(BASE, BigInt(BASE), '/usr/bin/bash', 'spiffe://td/a');
    cache.fork(facts(BASE + 1, BASE));
    const execd = cache.exec(facts(BASE + 1, BASE, { executable: '/usr/bin/curl', comm: 'curl' }));
    expect(execd.executable).toBe('/usr/bin/curl');
    expect(execd.comm).toBe('curl');
    expect(execd.spiffeId).toBe('spiffe://td/a');
  });

  it('ignores an attestation of another start time', () => {
    const cache = new ProcessCache();
    cache.exec(facts(BASE, 1, { executable: '/bin/a' }));
    cache.attested(BASE, 12345n, '/bin/other', 'spiffe://td/wrong');
    expect(cache.find(BASE, BigInt(BASE))?.spiffeId).toBeNull();
    expect(cache.find(BASE, BigInt(BASE))?.executable).toBe('/bin/a');
  });

  it('exit returns the process once and keeps it as exited', () => {
    const cache = new ProcessCache();
    cache.exec(facts(BASE, 1, { executable: '/bin/a' }));
    const exited = cache.exit(BASE, BigInt(BASE));
    expect(exited?.executable).toBe('/bin/a');
    expect(exited?.exited).toBe(true);
    expect(cache.exit(BASE, BigInt(BASE))).toBeUndefined();
    expect(cache.size).toEqual({ live: 0, exited: 1 });
    expect(cache.executable(BASE)).toBe('/bin/a');
  });

  it('exit of another start time returns nothing', () => {
    const cache = new ProcessCache();
    cache.exec(facts(BASE, 1, { executable: '/bin/a' }));
    expect(cache.exit(BASE, 99n)).toBeUndefined();
    expect(cache.size).toEqual({ live: 1, exited: 0 });
  });

  it('markReported flags a live process', () => {
    const cache = new ProcessCache();
    cache.exec(facts(BASE, 1));
    cache.markReported(BASE);
    expect(cache.exit(BASE, BigInt(BASE))?.reported).toBe(true);
  });
});

describe('process cache ancestry', () => {
  it('lists ancestors parent first', () => {
    const cache = new ProcessCache();
    chain(cache, 4);
    cache.attested(BASE + 1, BigInt(BASE + 1), '/bin/p1', 'spiffe://td/p1');
    const ancestry = cache.ancestry(BASE + 3, BASE + 2);
    expect(ancestry.map((ref) => ref.pid)).toEqual([BASE + 2, BASE + 1, BASE]);
    expect(ancestry.map((ref) => ref.executable)).toEqual(['/bin/p2', '/bin/p1', '/bin/p0']);
    expect(ancestry.map((ref) => ref.comm)).toEqual(['p2', 'p1', 'p0']);
    expect(ancestry.map((ref) => ref.spiffeId)).toEqual(['', 'spiffe://td/p1', '']);
  });

  it('reuses a frozen ancestry until a change', () => {
    const cache = new ProcessCache();
    chain(cache, 3);
    const first = cache.ancestry(BASE + 2, BASE + 1);
    expect(cache.ancestry(BASE + 2, BASE + 1)).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(Object.isFrozen(first[0])).toBe(true);
    expect(cache.ancestry(BASE + 2, BASE + 1)).toEqual(first);
  });

  it.each([
    ['attestation', (cache: ProcessCache) => cache.attested(BASE + 1, BigInt(BASE + 1), '/bin/p1', 'spiffe://td/new')],
    ['SPIFFE ID change', (cache: ProcessCache) => cache.setSpiffeId(BASE + 1, 'spiffe://td/new')],
    ['exec', (cache: ProcessCache) => cache.exec(facts(BASE + 1, BASE, { executable: '/bin/new', comm: 'new' }))],
  ])('recomputes ancestry after %s', (_change, change) => {
    const cache = new ProcessCache();
    chain(cache, 3);
    const before = cache.ancestry(BASE + 2, BASE + 1);
    change(cache);
    const after = cache.ancestry(BASE + 2, BASE + 1);
    expect(after).not.toBe(before);
    expect(after[0].spiffeId === 'spiffe://td/new' || after[0].executable === '/bin/new').toBe(true);
  });

  it('recomputes ancestry after a parent exits and its pid is reused', () => {
    const cache = new ProcessCache();
    chain(cache, 3);
    expect(cache.ancestry(BASE + 2, BASE + 1)).toHaveLength(2);
    cache.exit(BASE, BigInt(BASE));
    cache.fork({ tgid: BASE, startTimeTicks: 5n, ppid: 0, parentStartTimeTicks: null });
    // The grandparent's pid now names another process, which is not an ancestor.
    expect(cache.ancestry(BASE + 2, BASE + 1).map((ref) => ref.pid)).toEqual([BASE + 1, BASE]);
    expect(cache.ancestry(BASE + 2, BASE + 1)[1].executable).toBe('/bin/p0');
  });

  it('stops at the maximum depth', () => {
    const cache = new ProcessCache();
    chain(cache, 20);
    const ancestry = cache.ancestry(BASE + 19, BASE + 18, 8);
    expect(ancestry).toHaveLength(8);
    expect(ancestry[0].pid).toBe(BASE + 18);
    expect(ancestry[7].pid).toBe(BASE + 11);
  });

  it('keeps an exited parent', () => {
    const cache = new ProcessCache();
    chain(cache, 3);
    cache.exit(BASE + 1, BigInt(BASE + 1));
    const ancestry = cache.ancestry(BASE + 2, BASE + 1);
    expect(ancestry.map((ref) => ref.pid)).toEqual([BASE + 1, BASE]);
  });

  it('stops at a reused parent pid', () => {
    const cache = new ProcessCache();
    chain(cache, 3);
    // BASE+1 exits, then a new process gets its pid with a later start time.
    cache.exit(BASE + 1, BigInt(BASE + 1));
    cache.fork({
      tgid: BASE + 1,
      startTimeTicks: 9_000_000n,
      ppid: BASE,
      parentStartTimeTicks: BigInt(BASE),
    });
    cache.exec({
      tgid: BASE + 1,
      startTimeTicks: 9_000_000n,
      ppid: BASE,
      parentStartTimeTicks: BigInt(BASE),
      executable: '/bin/impostor',
    });
    const ancestry = cache.ancestry(BASE + 2, BASE + 1);
    expect(ancestry.map((ref) => ref.executable)).toEqual(['/bin/p1', '/bin/p0']);
  });

  it('stops at a parent loop', () => {
    const cache = new ProcessCache();
    cache.exec(facts(BASE, BASE + 1));
    cache.exec(facts(BASE + 1, BASE));
    expect(cache.ancestry(BASE, BASE + 1).map((ref) => ref.pid)).toEqual([BASE + 1]);
  });

  it('reads unknown ancestors from /proc', () => {
    const cache = new ProcessCache();
    const ancestry = cache.ancestry(process.pid, process.ppid);
    const parent = readProcessStat(process.ppid);
    expect(ancestry[0].pid).toBe(process.ppid);
    expect(ancestry[0].comm).toBe(parent?.comm);
    // The walk ends at init unless the test runner's chain is deeper than the maximum depth.
    if (ancestry.length < 8) expect(ancestry.at(-1)?.pid).toBe(1);
    expect(cache.find(process.ppid, parent?.startTimeTicks ?? null)).toBeDefined();
  });

  it('learns a running process on attestation', () => {
    const cache = new ProcessCache();
    const start = readProcessStat(process.pid)?.startTimeTicks as bigint;
    cache.attested(process.pid, start, realpathSync(process.execPath), 'spiffe://td/runner');
    const self = cache.find(process.pid, start);
    expect(self?.spiffeId).toBe('spiffe://td/runner');
    expect(self?.ppid).toBe(process.ppid);
  });
});

describe('process cache pruning', () => {
  it('moves processes gone from /proc to exited', () => {
    const cache = new ProcessCache();
    cache.exec(facts(BASE, 0, { executable: '/bin/gone' }));
    const start = readProcessStat(process.pid)?.startTimeTicks as bigint;
    cache.attested(process.pid, start, process.execPath, null);
    expect(cache.pruneGone()).toBe(1);
    expect(cache.find(BASE, BigInt(BASE))?.exited).toBe(true);
    expect(cache.find(process.pid, start)?.exited).toBe(false);
  });
});

describe('process cache bounds', () => {
  it('evicts the least recently used live process', () => {
    const evicted: Array<[CacheState, CachedProcess]> = [];
    const cache = new ProcessCache({
      maxLive: 3,
      onEvict: (state, entry) => evicted.push([state, entry]),
    });
    for (let i = 0; i < 3; i++) cache.exec(facts(BASE + i, 0));
    // An ancestry walk through BASE uses it, so BASE+1 becomes the least recently used.
    expect(cache.ancestry(BASE + 5, BASE).map((ref) => ref.pid)).toEqual([BASE]);
    cache.exec(facts(BASE + 10, 0));
    expect(evicted.map(([state, entry]) => [state, entry.tgid])).toEqual([['live', BASE + 1]]);
    cache.exec(facts(BASE + 11, 0));
    expect(evicted.map(([, entry]) => entry.tgid)).toEqual([BASE + 1, BASE + 2]);
    expect(cache.size.live).toBe(3);
    expect(cache.find(BASE, BigInt(BASE))).toBeDefined();
  });

  it('evicts the oldest exited process', () => {
    const evicted: Array<[CacheState, number]> = [];
    const cache = new ProcessCache({
      maxExited: 2,
      onEvict: (state, entry) => evicted.push([state, entry.tgid]),
    });
    for (let i = 0; i < 3; i++) {
      cache.exec(facts(BASE + i, 0));
      cache.exit(BASE + i, BigInt(BASE + i));
    }
    expect(evicted).toEqual([['exited', BASE]]);
    expect(cache.size).toEqual({ live: 0, exited: 2 });
  });

  it('rejects a zero live bound', () => {
    expect(() => new ProcessCache({ maxLive: 0 })).toThrow(/maxLive 0 must be at least 1/);
  });
});
