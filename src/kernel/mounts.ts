import { readFileSync } from 'node:fs';
import { mount } from './native';

/** One line of /proc/self/mountinfo, reduced to what the agent needs. */
export interface MountEntry {
  mountPoint: string;
  fsType: string;
}

// mountinfo escapes space, tab, newline and backslash in paths as octal.
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Parses /proc/self/mountinfo text. */
export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const separator = line.indexOf(' - ');
    if (separator === -1) continue;
    const before = line.slice(0, separator).split(' ');
    const after = line.slice(separator + 3).split(' ');
    entries.push({ mountPoint: unescapeMountPath(before[4]), fsType: after[0] });
  }
  return entries;
}

export function readMounts(): MountEntry[] {
  return parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** The kernel filesystems the agent needs, with where it mounts each when missing. */
export const REQUIRED_FILESYSTEMS = [
  { fsType: 'bpf', mountPoint: '/sys/fs/bpf', purpose: 'pinning BPF objects' },
  { fsType: 'tracefs', mountPoint: '/sys/kernel/tracing', purpose: 'attaching tracepoints' },
  { fsType: 'securityfs', mountPoint: '/sys/kernel/security', purpose: 'reading the active LSMs' },
] as const;

/**
 * Mounts each required filesystem that is not mounted anywhere yet. Returns
 * what it mounted; throws when a mount fails, naming the filesystem and path.
 */
export function ensureKernelFilesystems(): string[] {
  const mounted: string[] = [];
  const present = readMounts();
  for (const required of REQUIRED_FILESYSTEMS) {
    if (present.some((entry) => entry.fsType === required.fsType)) continue;
    try {
      mount(required.fsType, required.mountPoint, required.fsType, 0, '');
    } catch (cause) {
      throw new Error(
        `mount ${required.fsType} at ${required.mountPoint} (needed for ${required.purpose}): ` +
          (cause as Error).message,
        { cause },
      );
    }
    mounted.push(`${required.fsType} at ${required.mountPoint}`);
  }
  return mounted;
}

/** Returns the mount point of the cgroup v2 hierarchy, or throws when there is none. */
export function findCgroup2Root(mounts: MountEntry[] = readMounts()): string {
  const cgroup2 = mounts.find((entry) => entry.fsType === 'cgroup2');
  if (!cgroup2) {
    throw new Error('no cgroup2 filesystem is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup)');
  }
  return cgroup2.mountPoint;
}

/** Returns the active LSMs from securityfs, or null when securityfs is not readable. */
export function readActiveLsms(): string[] | null {
  try {
    return readFileSync('/sys/kernel/security/lsm', 'utf8').trim().split(',').filter(Boolean);
  } catch {
    return null;
  }
}
