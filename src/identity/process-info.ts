/**
 * Process facts read from procfs: ids, executable, start time and cgroup v2 path.
 *
 * The executable path in a result is relative to the root of the target's mount namespace, and
 * the cgroup path is relative to the root of the reading process's cgroup namespace.
 */

import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';

/** Facts about one process at the moment it was read. */
export interface ProcessInfo {
  pid: number;
  ppid: number;
  /** Effective uid (second field of the `Uid:` line of /proc/<pid>/status). */
  uid: number;
  /** Effective gid (second field of the `Gid:` line). */
  gid: number;
  /** The `Groups:` line, in kernel order. */
  supplementaryGids: number[];
  /**
   * Target of /proc/<pid>/exe without a ` (deleted)` suffix, or null when the process has no
   * executable (kernel threads and zombies).
   */
  exePath: string | null;
  /** Whether the executable was unlinked or replaced after the process started it. */
  deleted: boolean;
  /**
   * Start time in clock ticks since boot (field 22 of /proc/<pid>/stat). A later process that
   * reuses the pid has a later start time, so pid and start time together name one process.
   */
  startTimeTicks: bigint;
  /**
   * Path from the `0::` line of /proc/<pid>/cgroup, or null without cgroup v2. The kernel appends
   * ` (deleted)` when the cgroup was removed. That suffix is kept, so the path of a removed cgroup
   * matches no selector for a new cgroup of the same name.
   */
  cgroupPath: string | null;
  /**
   * Inode number of the cgroup directory under `cgroup2Mount`, or null when that option is not
   * set or the directory is gone. On 64-bit kernels since Linux 5.5 this equals the cgroup id
   * that `bpf_get_current_cgroup_id()` returns.
   */
  cgroupId: bigint | null;
  /** Command name (field 2 of /proc/<pid>/stat, at most 15 bytes, set by exec or prctl). */
  comm: string;
}

export interface ProcessInfoOptions {
  /** Root of procfs; defaults to /proc. */
  procRoot?: string;
  /** Mount point of the cgroup2 file system, used to find `cgroupId`. */
  cgroup2Mount?: string;
}

const DELETED_SUFFIX = ' (deleted)';

/** Fields of /proc/<pid>/stat that this module uses. */
interface StatFields {
  comm: string;
  ppid: number;
  startTimeTicks: bigint;
}

/**
 * Reads the facts of one process. Returns null when the process does not exist or exits while
 * it is read, and also when its pid is reused during the read. Other failures throw.
 */
export function readProcessInfo(pid: number, options: ProcessInfoOptions = {}): ProcessInfo | null {
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw new RangeError(`invalid pid ${pid}: expected a positive integer`);
  }
  const procRoot = options.procRoot ?? '/proc';
  const directory = `${procRoot}/${pid}`;

  const statText = readProcFile(`${directory}/stat`);
  if (statText === null) {
    return null;
  }
  const stat = parseStat(statText, `${directory}/stat`);

  const statusText = readProcFile(`${directory}/status`);
  if (statusText === null) {
    return null;
  }
  const ids = parseStatus(statusText, `${directory}/status`);

  const executable = readExecutable(`${directory}/exe`);

  const cgroupText = readProcFile(`${directory}/cgroup`);
  if (cgroupText === null) {
    return null;
  }
  const cgroupPath = parseCgroupV2Path(cgroupText, `${directory}/cgroup`);

  // The files above are read one by one. If the pid now has another start time, the process
  // exited and a new one got its pid, so the facts may come from two processes.
  if (readStartTime(pid, procRoot) !== stat.startTimeTicks) {
    return null;
  }

  return {
    pid,
    ppid: stat.ppid,
    uid: ids.uid,
    gid: ids.gid,
    supplementaryGids: ids.supplementaryGids,
    exePath: executable?.path ?? null,
    deleted: executable?.deleted ?? false,
    startTimeTicks: stat.startTimeTicks,
    cgroupPath,
    cgroupId: readCgroupId(options.cgroup2Mount, cgroupPath),
    comm: stat.comm,
  };
}

/** Reads a process's start time in clock ticks, or null when the process does not exist. */
export function readStartTime(pid: number, procRoot = '/proc'): bigint | null {
  const path = `${procRoot}/${pid}/stat`;
  const text = readProcFile(path);
  return text === null ? null : parseStat(text, path).startTimeTicks;
}

/**
 * Reads the command name, parent pid and start time of a process from /proc/<pid>/stat, or
 * returns null when the process does not exist.
 */
export function readProcessStat(
  pid: number,
  procRoot = '/proc',
): { comm: string; ppid: number; startTimeTicks: bigint } | null {
  const path = `${procRoot}/${pid}/stat`;
  const text = readProcFile(path);
  return text === null ? null : parseStat(text, path);
}

/** Lists the pids in procfs in ascending order. */
export function listPids(procRoot = '/proc'): number[] {
  return readdirSync(procRoot)
    .filter((name) => /^[1-9][0-9]*$/.test(name))
    .map(Number)
    .sort((a, b) => a - b);
}

/**
 * Returns the mount point of the cgroup2 file system from /proc/<pid>/mountinfo text, or null
 * when none is mounted. Only a mount of the hierarchy root (root field `/`) counts, because
 * cgroup paths from /proc/<pid>/cgroup are relative to that root.
 */
export function findCgroup2Mount(mountinfoText: string): string | null {
  for (const line of mountinfoText.split('\n')) {
    // Format: id parent major:minor root mount-point options [optional...] - fstype source super
    const separator = line.indexOf(' - ');
    if (separator < 0) {
      continue;
    }
    const fields = line.slice(0, separator).split(' ');
    const fileSystemType = line.slice(separator + 3).split(' ')[0];
    if (fileSystemType === 'cgroup2' && fields.length >= 5 && fields[3] === '/') {
      return unescapeMountField(fields[4]);
    }
  }
  return null;
}

/** Reads /proc/self/mountinfo and returns the cgroup2 mount point, or null. */
export function readCgroup2Mount(procRoot = '/proc'): string | null {
  return findCgroup2Mount(readFileSync(`${procRoot}/self/mountinfo`, 'utf8'));
}

/** Reads a procfs file, or returns null when the process is gone (ENOENT or ESRCH). */
function readProcFile(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    if (isProcessGoneError(error)) {
      return null;
    }
    throw error;
  }
}

function isProcessGoneError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/**
 * Parses /proc/<pid>/stat. The command name sits in parentheses and may itself contain spaces,
 * parentheses and newlines, so it ends at the last ')' of the text.
 */
function parseStat(text: string, path: string): StatFields {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) {
    throw new Error(`parse ${path}: no command name in parentheses`);
  }
  // After ") " come the fields from 3 (state) on, so field n is at index n - 3.
  const fields = text
    .slice(close + 2)
    .trimEnd()
    .split(' ');
  if (fields.length < 20 || !/^[0-9]+$/.test(fields[1]) || !/^[0-9]+$/.test(fields[19])) {
    throw new Error(`parse ${path}: expected at least 22 fields with numeric ppid and start time`);
  }
  return {
    comm: text.slice(open + 1, close),
    ppid: Number(fields[1]),
    startTimeTicks: BigInt(fields[19]),
  };
}

function parseStatus(
  text: string,
  path: string,
): { uid: number; gid: number; supplementaryGids: number[] } {
  let uid: number | undefined;
  let gid: number | undefined;
  let supplementaryGids: number[] | undefined;
  // The kernel escapes newlines in the Name: line, so each line is one field.
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    const key = line.slice(0, colon);
    const values = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter((value) => value !== '');
    if (key === 'Uid') {
      uid = parseIdList(values, path, key)[1];
    } else if (key === 'Gid') {
      gid = parseIdList(values, path, key)[1];
    } else if (key === 'Groups') {
      supplementaryGids = parseIdList(values, path, key);
    }
  }
  if (uid === undefined || gid === undefined || supplementaryGids === undefined) {
    throw new Error(`parse ${path}: missing Uid:, Gid: or Groups: line`);
  }
  return { uid, gid, supplementaryGids };
}

function parseIdList(values: string[], path: string, key: string): number[] {
  if (!values.every((value) => /^[0-9]+$/.test(value))) {
    throw new Error(`parse ${path}: ${key}: line has a non-numeric value`);
  }
  if (key !== 'Groups' && values.length !== 4) {
    throw new Error(`parse ${path}: ${key}: line has ${values.length} values, expected 4`);
  }
  return values.map(Number);
}

/**
 * Returns the path from the `0::` line of /proc/<pid>/cgroup. Lines are
 * `hierarchy-id:controllers:path`, and the path may contain ':'. The kernel rejects '\n' in
 * cgroup names, so a second `0::` line means the file is not what this parser expects.
 */
function parseCgroupV2Path(text: string, path: string): string | null {
  const paths = text
    .split('\n')
    .filter((line) => line.startsWith('0::'))
    .map((line) => line.slice(3));
  if (paths.length > 1) {
    throw new Error(`parse ${path}: found ${paths.length} cgroup v2 ('0::') lines, expected one`);
  }
  return paths[0] ?? null;
}

/** Reads the executable link, or returns null when the process has no executable or is gone. */
function readExecutable(linkPath: string): { path: string; deleted: boolean } | null {
  let target: string;
  try {
    target = readlinkSync(linkPath);
  } catch (error) {
    // Kernel threads and zombies have an exe link that fails with ENOENT. The caller detects a
    // process that is gone by reading its start time again.
    if (isProcessGoneError(error)) {
      return null;
    }
    throw error;
  }
  if (!target.endsWith(DELETED_SUFFIX) || isSameFile(target, linkPath)) {
    return { path: target, deleted: false };
  }
  return { path: target.slice(0, -DELETED_SUFFIX.length), deleted: true };
}

/**
 * Returns whether a path names the running executable. This distinguishes a file whose name
 * really ends in " (deleted)" from the suffix that the kernel adds to an unlinked executable.
 */
function isSameFile(path: string, linkPath: string): boolean {
  try {
    const file = statSync(path, { bigint: true });
    const executable = statSync(linkPath, { bigint: true });
    return file.dev === executable.dev && file.ino === executable.ino;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ESRCH') {
      return false;
    }
    throw error;
  }
}

function readCgroupId(cgroup2Mount: string | undefined, cgroupPath: string | null): bigint | null {
  if (cgroup2Mount === undefined || cgroupPath === null || cgroupPath.endsWith(DELETED_SUFFIX)) {
    return null;
  }
  const directory = cgroupPath === '/' ? cgroup2Mount : `${cgroup2Mount}${cgroupPath}`;
  try {
    return statSync(directory, { bigint: true }).ino;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return null;
    }
    throw error;
  }
}

/** Decodes the octal escapes (`\040` for a space) that mountinfo uses in paths. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_match, octal: string) =>
    String.fromCharCode(parseInt(octal, 8)),
  );
}
