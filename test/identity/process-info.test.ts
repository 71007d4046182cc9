import { ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  findCgroup2Mount,
  listPids,
  readCgroup2Mount,
  readProcessInfo,
  readStartTime,
} from '../../src/identity/process-info';
import { copySleep, makeSharedTempDir, spawnRunning, stopChild } from './process-helpers';

const directory = makeSharedTempDir('sigil-process-info-');
const children: ChildProcess[] = [];

afterAll(async () => {
  await Promise.all(children.map(stopChild));
  rmSync(directory, { recursive: true, force: true });
});

function ownCgroupV2Path(): string {
  const line = readFileSync('/proc/self/cgroup', 'utf8')
    .split('\n')
    .find((candidate) => candidate.startsWith('0::'));
  if (line === undefined) {
    throw new Error('this test needs cgroup v2');
  }
  return line.slice(3);
}

describe('readProcessInfo on real processes', () => {
  it('reads the test process', () => {
    const info = readProcessInfo(process.pid);
    expect(info).not.toBeNull();
    if (info === null) return;
    expect(info.pid).toBe(process.pid);
    expect(info.ppid).toBe(process.ppid);
    expect(info.uid).toBe(process.geteuid?.());
    expect(info.gid).toBe(process.getegid?.());
    // process.getgroups() adds the effective gid, so compare with the kernel's Groups: line.
    const groupsLine = readFileSync('/proc/self/status', 'utf8').match(/^Groups:(.*)$/m)?.[1];
    expect(info.supplementaryGids.join(' ')).toBe(groupsLine?.trim());
    expect(info.exePath).toBe(realpathSync(process.execPath));
    expect(info.deleted).toBe(false);
    expect(info.comm).toBe(readFileSync('/proc/self/comm', 'utf8').replace(/\n$/, ''));
    expect(info.startTimeTicks).toBeGreaterThan(0n);
    expect(info.startTimeTicks).toBe(readStartTime(process.pid));
    expect(info.cgroupPath).toBe(ownCgroupV2Path());
    expect(info.cgroupId).toBeNull();
  });

  it('reads a child whose name contains spaces and parentheses', async () => {
    // A parser that ends the name at the first ')' would read state S and ppid 1 here.
    const exe = copySleep(directory, 'odd name) S 1');
    const child = await spawnRunning(exe, ['30'], exe);
    children.push(child);

    const info = readProcessInfo(child.pid);
    expect(info).not.toBeNull();
    if (info === null) return;
    expect(info.comm).toBe('odd name) S 1');
    expect(info.ppid).toBe(process.pid);
    expect(info.exePath).toBe(exe);
    expect(info.deleted).toBe(false);
    expect(info.uid).toBe(0);
    expect(info.startTimeTicks).toBeGreaterThanOrEqual(readStartTime(process.pid) ?? 0n);
  });

  it('reads the uid and gid of a child started with other ids', async () => {
    const exe = copySleep(directory, 'as-4242');
    const child = await spawnRunning(exe, ['30'], exe, { uid: 4242, gid: 4242 });
    children.push(child);

    const info = readProcessInfo(child.pid);
    expect(info?.uid).toBe(4242);
    expect(info?.gid).toBe(4242);
    expect(info?.supplementaryGids).toEqual([]);
  });

  it('reads the supplementary groups that setpriv sets', async () => {
    const exe = copySleep(directory, 'with-groups');
    const args = ['--reuid=4242', '--regid=4343', '--groups=4344,4345', exe, '30'];
    const child = await spawnRunning('setpriv', args, exe);
    children.push(child);

    const info = readProcessInfo(child.pid);
    expect(info?.uid).toBe(4242);
    expect(info?.gid).toBe(4343);
    expect(info?.supplementaryGids).toEqual([4344, 4345]);
    expect(info?.comm).toBe('with-groups');
  });

  it('marks an unlinked executable as deleted', async () => {
    const exe = copySleep(directory, 'to-be-deleted');
    const child = await spawnRunning(exe, ['30'], exe);
    children.push(child);
    unlinkSync(exe);

    const info = readProcessInfo(child.pid);
    expect(info?.exePath).toBe(exe);
    expect(info?.deleted).toBe(true);
  });

  it('keeps a file name that ends in " (deleted)"', async () => {
    const exe = copySleep(directory, 'prog (deleted)');
    const child = await spawnRunning(exe, ['30'], exe);
    children.push(child);

    const info = readProcessInfo(child.pid);
    expect(info?.exePath).toBe(exe);
    expect(info?.deleted).toBe(false);
  });

  it('reads a zombie without an executable', async () => {
    // The shell forks true and then becomes sleep, which never reaps true.
    const exe = copySleep(directory, 'zombie-parent');
    const child = await spawnRunning('/bin/sh', ['-c', `/bin/true & exec '${exe}' 30`], exe);
    children.push(child);

    let zombiePid: number | undefined;
    const deadline = Date.now() + 5000;
    while (zombiePid === undefined && Date.now() < deadline) {
      // Once true has exited, it stays a zombie child of sleep with no executable link target.
      const childPids = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8')
        .trim()
        .split(' ')
        .filter((text) => text !== '')
        .map(Number);
      zombiePid = childPids.find((pid) => readProcessInfo(pid)?.exePath === null);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(zombiePid).toBeDefined();
    if (zombiePid === undefined) return;

    const info = readProcessInfo(zombiePid);
    expect(info).not.toBeNull();
    expect(info?.exePath).toBeNull();
    expect(info?.deleted).toBe(false);
    expect(info?.comm).toBe('true');
  });

  const kernelThreadPresent =
    existsSync('/proc/2/comm') && readFileSync('/proc/2/comm', 'utf8').trim() === 'kthreadd';

  it.skipIf(!kernelThreadPresent)('reads a kernel thread without an executable', () => {
    const info = readProcessInfo(2);
    expect(info?.comm).toBe('kthreadd');
    expect(info?.exePath).toBeNull();
    expect(info?.deleted).toBe(false);
  });

  it('returns null for a process that exited', async () => {
    const exe = copySleep(directory, 'short-lived');
    const child = await spawnRunning(exe, ['30'], exe);
    await stopChild(child);
    expect(readProcessInfo(child.pid)).toBeNull();
    expect(readStartTime(child.pid)).toBeNull();
  });

  it('returns null for a pid above pid_max', () => {
    const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
    expect(readProcessInfo(pidMax + 1)).toBeNull();
  });

  it.each([0, -1, 1.5, Number.NaN])('rejects pid %s', (pid) => {
    expect(() => readProcessInfo(pid)).toThrow(RangeError);
  });

  it('finds the cgroup id under the cgroup2 mount', () => {
    const mount = readCgroup2Mount();
    expect(mount).not.toBeNull();
    if (mount === null) return;
    const info = readProcessInfo(process.pid, { cgroup2Mount: mount });
    const cgroupPath = ownCgroupV2Path();
    const directoryPath = cgroupPath === '/' ? mount : `${mount}${cgroupPath}`;
    expect(info?.cgroupId).toBe(statSync(directoryPath, { bigint: true }).ino);
  });
});

describe('readProcessInfo on a fake procfs', () => {
  const procRoot = join(directory, 'proc');

  /** Writes /proc/<pid>/{stat,status,cgroup,exe} files under the fake root. */
  function writeFakeProcess(
    pid: number,
    files: { stat: string; status?: string; cgroup?: string; exeTarget?: string },
  ): void {
    const processDirectory = join(procRoot, String(pid));
    mkdirSync(processDirectory, { recursive: true });
    writeFileSync(join(processDirectory, 'stat'), files.stat);
    writeFileSync(
      join(processDirectory, 'status'),
      files.status ?? 'Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t9 10 \n',
    );
    writeFileSync(join(processDirectory, 'cgroup'), files.cgroup ?? '0::/a\n');
    if (files.exeTarget !== undefined) {
      symlinkSync(files.exeTarget, join(processDirectory, 'exe'));
    }
  }

  /** Builds a stat line with the given name, ppid 7 and start time 12345. */
  function statLine(pid: number, comm: string): string {
    const after = ['S', '7', ...Array.from({ length: 17 }, () => '0'), '12345', '0', '0'];
    return `${pid} (${comm}) ${after.join(' ')}\n`;
  }

  it('parses a name containing a newline and ") ("', () => {
    writeFakeProcess(101, { stat: statLine(101, 'a) (b\nc) 9'), exeTarget: '/usr/bin/x' });
    const info = readProcessInfo(101, { procRoot });
    expect(info).toEqual({
      pid: 101,
      ppid: 7,
      uid: 2,
      gid: 6,
      supplementaryGids: [9, 10],
      exePath: '/usr/bin/x',
      deleted: false,
      startTimeTicks: 12345n,
      cgroupPath: '/a',
      cgroupId: null,
      comm: 'a) (b\nc) 9',
    });
  });

  it('strips the suffix of a deleted executable', () => {
    writeFakeProcess(102, { stat: statLine(102, 'x'), exeTarget: '/gone/prog (deleted)' });
    const info = readProcessInfo(102, { procRoot });
    expect(info?.exePath).toBe('/gone/prog');
    expect(info?.deleted).toBe(true);
  });

  it.each([
    [
      201,
      'a hybrid layout',
      '12:pids:/x\n1:name=systemd:/y\n0::/sigil-demo/web\n',
      '/sigil-demo/web',
    ],
    [202, 'a path with colons', '0::/system.slice/a:b:c.service\n', '/system.slice/a:b:c.service'],
    [203, 'a removed cgroup', '0::/old (deleted)\n', '/old (deleted)'],
    [204, 'cgroup v1 only', '3:cpu:/x\n1:name=systemd:/y\n', null],
  ])('reads the cgroup path of pid %i with %s', (pid, _name, cgroup, expected) => {
    writeFakeProcess(pid, { stat: statLine(pid, 'x'), cgroup });
    expect(readProcessInfo(pid, { procRoot })?.cgroupPath).toBe(expected);
  });

  it.each([
    [301, 'a stat line without parentheses', { stat: '301 x S 1\n' }, 'no command name'],
    [302, 'a short stat line', { stat: '302 (x) S 1 2 3\n' }, 'expected at least 22 fields'],
    [303, 'a missing Groups line', { status: 'Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\n' }, 'Groups'],
    [304, 'a short Uid line', { status: 'Uid:\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\n' }, '2 values'],
    [305, 'two cgroup v2 lines', { cgroup: '0::/a\n0::/b\n' }, "2 cgroup v2 ('0::') lines"],
  ])('throws on pid %i with %s', (pid, _name, files, messagePart) => {
    writeFakeProcess(pid, { stat: statLine(pid, 'x'), ...files });
    expect(() => readProcessInfo(pid, { procRoot })).toThrow(messagePart);
    expect(() => readProcessInfo(pid, { procRoot })).toThrow(join(procRoot, String(pid)));
  });

  it('lists only numeric entries in order', () => {
    mkdirSync(join(procRoot, 'self'), { recursive: true });
    const pids = listPids(procRoot);
    expect(pids.length).toBeGreaterThan(3);
    expect(pids).toEqual([...pids].sort((a, b) => a - b));
    expect(pids).toContain(101);
  });
});

describe('listPids', () => {
  it('includes the test process', () => {
    const pids = listPids();
    expect(pids).toContain(process.pid);
    expect(pids).toEqual([...pids].sort((a, b) => a - b));
  });
});

describe('findCgroup2Mount', () => {
  it.each([
    [
      'a hybrid layout',
      '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n' +
        '40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n' +
        '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n',
      '/sys/fs/cgroup/unified',
    ],
    [
      'a unified layout with optional fields',
      '35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 master:2 - cgroup2 cgroup2 rw,nsdelegate\n',
      '/sys/fs/cgroup',
    ],
    [
      'an escaped space',
      '41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 none rw\n',
      '/mnt/my cgroups',
    ],
    [
      'only a bind mount of a subtree',
      '41 31 0:38 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n',
      null,
    ],
    ['no cgroup2 mount', '32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n', null],
    ['empty text', '', null],
  ])('handles %s', (_name, text, expected) => {
    expect(findCgroup2Mount(text)).toBe(expected);
  });

  it('finds the mount of this machine', () => {
    const mount = readCgroup2Mount();
    expect(mount).toBe(findCgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8')));
    expect(mount).not.toBeNull();
    expect(statSync(`${mount}/cgroup.procs`).isFile()).toBe(true);
  });
});
