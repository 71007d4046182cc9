import { FSWatcher, realpathSync, statSync, watch } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

/** Quiet time after the last change before a reload, so an editor's several writes count once. */
const DEBOUNCE_MS = 200;

interface Target {
  /** The path as given, reported to onChange. */
  path: string;
  /** File name inside the watched directory, or null when the target is the directory itself. */
  name: string | null;
  /** Resolved path, inode, size and time when last seen, so a swapped symlink counts as a change. */
  signature: string;
}

/**
 * Watches configuration files and directories and calls onChange with the
 * paths (as given) that changed. Files are watched through their directory,
 * because editors replace a file by renaming a new one over it.
 *
 * A file reached through symlinks is also watched through the directory of
 * the file it resolves to, and any event in a watched directory compares the
 * file's resolved path, inode, size and modification time with the last ones
 * seen. So a Kubernetes ConfigMap update, which swaps a `..data` symlink
 * instead of writing the file, and an edit of a symlink's target elsewhere are
 * both seen.
 */
export class ConfigWatcher {
  private readonly watchers = new Map<string, FSWatcher>();
  private readonly targetsByDirectory = new Map<string, Set<Target>>();
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    paths: string[],
    private readonly onChange: (changed: string[]) => void,
  ) {
    for (const path of paths) {
      const isDirectory = statSync(path).isDirectory();
      const target: Target = {
        path,
        name: isDirectory ? null : basename(path),
        signature: signatureOf(path),
      };
      this.watchDirectory(isDirectory ? resolve(path) : dirname(resolve(path)), target);
      if (!isDirectory) this.watchResolvedDirectory(target);
    }
  }

  private watchDirectory(directory: string, target: Target): void {
    let targets = this.targetsByDirectory.get(directory);
    if (!targets) {
      targets = new Set();
      this.targetsByDirectory.set(directory, targets);
      const list = targets;
      const watcher = watch(directory, (_event, filename) => this.onEvent(list, filename));
      // A watched directory that disappears must not take the agent down; the next reload reports the path.
      watcher.on('error', () => undefined);
      this.watchers.set(directory, watcher);
    }
    targets.add(target);
  }

  /** Watches the directory of the file a symlinked path resolves to. */
  private watchResolvedDirectory(target: Target): void {
    let real: string;
    try {
      real = realpathSync(target.path);
    } catch {
      return;
    }
    const directory = dirname(real);
    if (!this.targetsByDirectory.get(directory)?.has(target)) {
      this.watchDirectory(directory, target);
    }
  }

  private onEvent(targets: Set<Target>, filename: string | Buffer | null): void {
    if (this.closed) return;
    for (const target of targets) {
      const named = target.name === null || filename === null || filename === target.name;
      const signature = target.name === null ? target.signature : signatureOf(target.path);
      if (!named && signature === target.signature) continue;
      target.signature = signature;
      if (target.name !== null) this.watchResolvedDirectory(target);
      this.schedule(target.path);
    }
  }

  private schedule(path: string): void {
    this.pending.add(path);
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      const changed = [...this.pending];
      this.pending.clear();
      this.onChange(changed);
    }, DEBOUNCE_MS);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const watcher of this.watchers.values()) watcher.close();
  }
}

/** Resolved path, device, inode, size and modification time of a file, or a marker when it is gone. */
function signatureOf(path: string): string {
  try {
    const real = realpathSync(path);
    const stat = statSync(real, { bigint: true });
    return `${real}:${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}`;
  } catch {
    return 'missing';
  }
}
