import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigWatcher } from '../../src/enforce/config-watcher';

const roots: string[] = [];
const watchers: ConfigWatcher[] = [];

afterEach(() => {
  for (const watcher of watchers.splice(0)) watcher.close();
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

function scratch(): string {
  const root = mkdtempSync(join(tmpdir(), 'sigil-watch-'));
  roots.push(root);
  return root;
}

/** Starts a watcher; next() waits for its next onChange call and returns the paths, or null on timeout. */
function watchPaths(paths: string[]): { next(timeoutMs?: number): Promise<string[] | null> } {
  const calls: string[][] = [];
  let wake: (() => void) | null = null;
  watchers.push(
    new ConfigWatcher(paths, (changed) => {
      calls.push(changed);
      wake?.();
    }),
  );
  return {
    async next(timeoutMs = 2000) {
      if (calls.length === 0) {
        await new Promise<void>((done) => {
          const timer = setTimeout(done, timeoutMs);
          wake = () => {
            clearTimeout(timer);
            done();
          };
        });
        wake = null;
      }
      return calls.shift() ?? null;
    },
  };
}

/** Lays out a directory the way the kubelet projects a ConfigMap: file -> ..data/file, ..data -> ..<version>. */
function projectConfigMap(root: string, version: string, content: string): void {
  const versionDirectory = join(root, `..${version}`);
  mkdirSync(versionDirectory);
  writeFileSync(join(versionDirectory, 'policy.yaml'), content);
  symlinkSync(`..${version}`, join(root, '..data_tmp'));
  renameSync(join(root, '..data_tmp'), join(root, '..data'));
}

describe('ConfigWatcher', () => {
  it('reports a file written in place', async () => {
    const root = scratch();
    const file = join(root, 'policy.yaml');
    writeFileSync(file, 'a: 1\n');
    const watcher = watchPaths([file]);
    writeFileSync(file, 'a: 2\n');
    expect(await watcher.next()).toEqual([file]);
  });

  it('reports a file replaced by a rename, as editors save', async () => {
    const root = scratch();
    const file = join(root, 'policy.yaml');
    writeFileSync(file, 'a: 1\n');
    const watcher = watchPaths([file]);
    writeFileSync(join(root, '.policy.yaml.swp'), 'a: 2\n');
    renameSync(join(root, '.policy.yaml.swp'), file);
    expect(await watcher.next()).toEqual([file]);
  });

  it('ignores other files of the same directory', async () => {
    const root = scratch();
    const file = join(root, 'policy.yaml');
    writeFileSync(file, 'a: 1\n');
    const watcher = watchPaths([file]);
    writeFileSync(join(root, 'notes.txt'), 'unrelated\n');
    expect(await watcher.next(800)).toBeNull();
  });

  it('reports a ConfigMap update, which swaps the ..data symlink', async () => {
    const root = scratch();
    projectConfigMap(root, '2026_12_04_1', 'a: 1\n');
    const file = join(root, 'policy.yaml');
    symlinkSync('..data/policy.yaml', file);
    const watcher = watchPaths([file]);
    // The new version is a new directory; the old one is removed after the swap.
    rmSync(join(root, '..data'));
    projectConfigMap(root, '2026_12_04_2', 'a: 2\n');
    rmSync(join(root, '..2026_12_04_1'), { recursive: true });
    expect(await watcher.next()).toEqual([file]);
  });

  it('reports an edit of the file a symlink points to in another directory', async () => {
    const root = scratch();
    mkdirSync(join(root, 'etc'));
    mkdirSync(join(root, 'srv'));
    const real = join(root, 'srv', 'policy.yaml');
    writeFileSync(real, 'a: 1\n');
    const link = join(root, 'etc', 'policy.yaml');
    symlinkSync(real, link);
    const watcher = watchPaths([link]);
    writeFileSync(real, 'a: 22\n');
    expect(await watcher.next()).toEqual([link]);
  });

  it('reports any change in a watched directory', async () => {
    const root = scratch();
    const watcher = watchPaths([root]);
    writeFileSync(join(root, 'new.yaml'), 'a: 1\n');
    expect(await watcher.next()).toEqual([root]);
  });
});
