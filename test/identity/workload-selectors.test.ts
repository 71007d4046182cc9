import { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AccountDatabase } from '../../src/identity/account-database';
import { ExecutableHasher } from '../../src/identity/executable-hasher';
import { ProcessInfo, readProcessInfo } from '../../src/identity/process-info';
import { parseSelector } from '../../src/identity/selector';
import { collectSelectors, selectorNeedsOf } from '../../src/identity/workload-selectors';
import { copySleep, makeSharedTempDir, spawnRunning, stopChild } from './process-helpers';

const directory = makeSharedTempDir('sigil-workload-selectors-');
const children: ChildProcess[] = [];

afterAll(async () => {
  await Promise.all(children.map(stopChild));
  rmSync(directory, { recursive: true, force: true });
});

writeFileSync(join(directory, 'passwd'), 'web:x:4242:4242::/:/bin/false\n');
writeFileSync(join(directory, 'group'), 'web:x:4242:\nextra:x:4343:web\n');
const accounts = new AccountDatabase({
  passwdFile: join(directory, 'passwd'),
  groupFile: join(directory, 'group'),
});

/** A hasher that fails the test if it is used. */
const unusedHasher = {
  async hashExecutable(): Promise<string | null> {
    throw new Error('the hasher must not be called');
  },
} as unknown as ExecutableHasher;

function processInfo(fields: Partial<ProcessInfo>): ProcessInfo {
  return {
    pid: 1234,
    ppid: 1,
    uid: 4242,
    gid: 4242,
    supplementaryGids: [4343, 4444, 4343],
    exePath: '/usr/bin/web',
    deleted: false,
    startTimeTicks: 100n,
    cgroupPath: '/sigil-demo/web',
    cgroupId: null,
    comm: 'web',
    ...fields,
  };
}

describe('collectSelectors', () => {
  it('produces SPIRE unix selectors and the cgroup path in order', async () => {
    const selectors = await collectSelectors(
      processInfo({}),
      { sha256: false },
      unusedHasher,
      accounts,
    );
    expect(selectors).toEqual([
      'unix:uid:4242',
      'unix:user:web',
      'unix:gid:4242',
      'unix:group:web',
      'unix:supplementary_gid:4343',
      'unix:supplementary_group:extra',
      'unix:supplementary_gid:4444',
      'unix:path:/usr/bin/web',
      'cgroup:path:/sigil-demo/web',
    ]);
    for (const selector of selectors) {
      expect(parseSelector(selector).text).toBe(selector);
    }
  });

  it.each<[string, Partial<ProcessInfo>, string[], string[]]>([
    [
      'unknown ids',
      { uid: 7, gid: 8, supplementaryGids: [] },
      ['unix:uid:7', 'unix:gid:8'],
      ['unix:user:', 'unix:group:', 'unix:supplementary_gid:'],
    ],
    ['a deleted executable', { deleted: true }, [], ['unix:path:']],
    ['no executable', { exePath: null }, [], ['unix:path:', 'unix:sha256:']],
    ['no cgroup v2', { cgroupPath: null }, [], ['cgroup:path:']],
    ['the root cgroup', { cgroupPath: '/' }, ['cgroup:path:/'], []],
  ])('handles %s', async (_name, fields, present, absentPrefixes) => {
    const selectors = await collectSelectors(
      processInfo(fields),
      { sha256: false },
      unusedHasher,
      accounts,
    );
    for (const selector of present) {
      expect(selectors).toContain(selector);
    }
    for (const prefix of absentPrefixes) {
      expect(selectors.filter((selector) => selector.startsWith(prefix))).toEqual([]);
    }
  });

  it('hashes the executable only when needed', async () => {
    const exe = copySleep(directory, 'needs-hash');
    const child = await spawnRunning(exe, ['30'], exe);
    children.push(child);
    const info = readProcessInfo(child.pid);
    expect(info).not.toBeNull();
    if (info === null) return;

    const digest = createHash('sha256').update(readFileSync(exe)).digest('hex');
    const hasher = new ExecutableHasher();
    const withHash = await collectSelectors(info, { sha256: true }, hasher, accounts);
    expect(withHash).toContain(`unix:sha256:${digest}`);
    expect(withHash).toContain(`unix:path:${exe}`);

    const withoutHash = await collectSelectors(info, { sha256: false }, unusedHasher, accounts);
    expect(withoutHash.some((selector) => selector.startsWith('unix:sha256:'))).toBe(false);
  });

  it('leaves out the digest when the hasher returns null', async () => {
    const nullHasher = { hashExecutable: async () => null } as unknown as ExecutableHasher;
    const selectors = await collectSelectors(
      processInfo({}),
      { sha256: true },
      nullHasher,
      accounts,
    );
    expect(selectors.some((selector) => selector.startsWith('unix:sha256:'))).toBe(false);
  });
});

describe('selectorNeedsOf', () => {
  const sha = `unix:sha256:${'a'.repeat(64)}`;

  it.each([
    [[], false],
    [[['unix:uid:1']], false],
    [[['unix:uid:1'], ['cgroup:path:/x', sha]], true],
  ])('for %j needs sha256 %s', (entrySelectors, expected) => {
    const entries = entrySelectors.map((texts) => ({ selectors: texts.map(parseSelector) }));
    expect(selectorNeedsOf(entries)).toEqual({ sha256: expected });
  });
});
