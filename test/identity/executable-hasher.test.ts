import { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ExecutableHasher } from '../../src/identity/executable-hasher';
import { copySleep, makeSharedTempDir, spawnRunning, stopChild } from './process-helpers';

const directory = makeSharedTempDir('sigil-hasher-');
const children: ChildProcess[] = [];

afterAll(async () => {
  await Promise.all(children.map(stopChild));
  rmSync(directory, { recursive: true, force: true });
});

function sha256Of(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

describe('ExecutableHasher on real processes', () => {
  it('hashes the executable of a process', async () => {
    const exe = copySleep(directory, 'hashed');
    const child = await spawnRunning(exe, ['30'], exe);
    children.push(child);

    const hasher = new ExecutableHasher();
    expect(await hasher.hashExecutable(child.pid)).toBe(sha256Of(exe));
    expect(hasher.size).toBe(1);
  });

  it('shares one cache entry between processes of one file', async () => {
    const exe = copySleep(directory, 'shared');
    const first = await spawnRunning(exe, ['30'], exe);
    const second = await spawnRunning(exe, ['30'], exe);
    children.push(first, second);

    const hasher = new ExecutableHasher();
    const digest = await hasher.hashExecutable(first.pid);
    expect(await hasher.hashExecutable(second.pid)).toBe(digest);
    expect(hasher.size).toBe(1);
  });

  it('hashes an unlinked executable', async () => {
    const exe = copySleep(directory, 'unlinked');
    const expected = sha256Of(exe);
    const child = await spawnRunning(exe, ['30'], exe);
    children.push(child);
    unlinkSync(exe);

    expect(await new ExecutableHasher().hashExecutable(child.pid)).toBe(expected);
  });

  it('skips files over the size limit', async () => {
    const exe = copySleep(directory, 'sized');
    const child = await spawnRunning(exe, ['30'], exe);
    children.push(child);
    const size = statSync(exe).size;

    expect(
      await new ExecutableHasher({ maxSizeBytes: size - 1 }).hashExecutable(child.pid),
    ).toBeNull();
    expect(await new ExecutableHasher({ maxSizeBytes: size }).hashExecutable(child.pid)).toBe(
      sha256Of(exe),
    );
  });

  it('returns null for a process that exited', async () => {
    const exe = copySleep(directory, 'exited');
    const child = await spawnRunning(exe, ['30'], exe);
    await stopChild(child);
    expect(await new ExecutableHasher().hashExecutable(child.pid)).toBeNull();
  });
});

describe('ExecutableHasher cache', () => {
  const procRoot = join(directory, 'proc');
  const file = join(directory, 'program');

  /** Makes the fake /proc/<pid>/exe a symlink to `target`. */
  function linkExe(pid: number, target: string): void {
    mkdirSync(join(procRoot, String(pid)), { recursive: true });
    symlinkSync(target, join(procRoot, String(pid), 'exe'));
  }

  it('hashes again after the file changes', async () => {
    linkExe(10, file);
    const hasher = new ExecutableHasher({ procRoot });

    writeFileSync(file, 'version 1');
    expect(await hasher.hashExecutable(10)).toBe(sha256Of(file));

    // Same size, so only the timestamps tell the two versions apart.
    writeFileSync(file, 'version 2');
    const later = new Date(Date.now() + 5000);
    utimesSync(file, later, later);
    expect(await hasher.hashExecutable(10)).toBe(sha256Of(file));
    expect(hasher.size).toBe(2);
  });

  it('drops the least recently used digest', async () => {
    const first = join(directory, 'first');
    const second = join(directory, 'second');
    writeFileSync(first, 'first');
    writeFileSync(second, 'second');
    linkExe(21, first);
    linkExe(22, second);

    const hasher = new ExecutableHasher({ procRoot, maxEntries: 1 });
    await hasher.hashExecutable(21);
    await hasher.hashExecutable(22);
    expect(hasher.size).toBe(1);
    // Replacing `first` by a copy with the same content gives a new inode and a new cache key.
    copyFileSync(second, first);
    expect(await hasher.hashExecutable(21)).toBe(sha256Of(second));
  });

  it('returns null when the exe link has no target', async () => {
    linkExe(30, join(directory, 'missing'));
    expect(await new ExecutableHasher({ procRoot }).hashExecutable(30)).toBeNull();
  });

  it('keeps the event loop turning while a large file is hashed', async () => {
    const large = join(directory, 'large');
    // 256 MiB of zeros, written without holding the data in memory.
    writeFileSync(large, '');
    truncateSync(large, 256 * 1024 * 1024);
    linkExe(40, large);

    let turns = 0;
    let hashing = true;
    const turn = (): void => {
      turns++;
      if (hashing) setImmediate(turn);
    };
    setImmediate(turn);
    const digest = await new ExecutableHasher({ procRoot }).hashExecutable(40);
    hashing = false;

    expect(digest).toBe(
      createHash('sha256')
        .update(Buffer.alloc(256 * 1024 * 1024))
        .digest('hex'),
    );
    // Hashing 256 MiB on the main thread would leave no turn in between.
    expect(turns).toBeGreaterThan(10);
    unlinkSync(large);
  });

  it('rejects with the read error when the link names a directory', async () => {
    linkExe(41, directory);
    await expect(new ExecutableHasher({ procRoot }).hashExecutable(41)).rejects.toMatchObject({
      code: 'EISDIR',
    });
  });

  it.each([
    [{ maxSizeBytes: -1 }, 'invalid maxSizeBytes -1'],
    [{ maxSizeBytes: 1.5 }, 'invalid maxSizeBytes 1.5'],
    [{ maxEntries: 0 }, 'invalid maxEntries 0'],
  ])('rejects options %j', (options, message) => {
    expect(() => new ExecutableHasher(options)).toThrow(message);
  });
});
