import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findCgroup2Root } from '../../src/kernel/mounts';

/** A directory of child cgroups under the cgroup2 root, standing in for workloads. */
export class TestCgroups {
  readonly root: string;
  /** Path of the directory relative to the cgroup2 mount, as /proc/<pid>/cgroup shows it. */
  readonly relative: string;

  constructor(name: string) {
    this.relative = `/${name}-${process.pid}`;
    this.root = join(findCgroup2Root(), this.relative);
    mkdirSync(this.root, { recursive: true });
  }

  create(child: string): string {
    const path = join(this.root, child);
    mkdirSync(path, { recursive: true });
    return path;
  }

  path(child: string): string {
    return join(this.root, child);
  }

  /** Kills every process left in the children and removes the directories. */
  remove(children: string[]): void {
    for (const child of children) {
      const path = join(this.root, child);
      if (!existsSync(path)) continue;
      for (const pid of readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    const deadline = Date.now() + 5000;
    for (const child of children) {
      const path = join(this.root, child);
      while (existsSync(path)) {
        try {
          rmdirSync(path);
        } catch (error) {
          if (Date.now() > deadline) throw error;
        }
      }
    }
    if (existsSync(this.root)) rmdirSync(this.root);
  }

  /** Moves a process into a child cgroup. */
  move(child: string, pid: number): void {
    writeFileSync(join(this.root, child, 'cgroup.procs'), `${pid}\n`);
  }
}
