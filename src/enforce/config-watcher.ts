import { FSWatcher, statSync, watch } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

/** Quiet time after the last change before a reload, so an editor's several writes count once. */
const DEBOUNCE_MS = 200;

/**
 * Watches configuration files and directories and calls onChange with the
 * paths (as given) that changed. Files are watched through their directory,
 * because editors replace a file by renaming a new one over it.
 */
export class ConfigWatcher {
  private readonly watchers: FSWatcher[] = [];
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    paths: string[],
    private readonly onChange: (changed: string[]) => void,
  ) {
    const byDirectory = new Map<string, { name: string | null; path: string }[]>();
    for (const path of paths) {
      const isDirectory = statSync(path).isDirectory();
      const directory = isDirectory ? resolve(path) : dirname(resolve(path));
      const list = byDirectory.get(directory) ?? [];
      list.push({ name: isDirectory ? null : basename(path), path });
      byDirectory.set(directory, list);
    }
    for (const [directory, targets] of byDirectory) {
      this.watchers.push(
        watch(directory, (_event, filename) => {
          for (const target of targets) {
            if (target.name === null || filename === null || filename === target.name) {
              this.schedule(target.path);
            }
          }
        }),
      );
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
    if (this.timer) clearTimeout(this.timer);
    for (const watcher of this.watchers) watcher.close();
  }
}
