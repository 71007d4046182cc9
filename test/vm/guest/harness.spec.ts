import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const PROJECT_ROOT = path.join(__dirname, '..', '..', '..');

function mountedFileSystems(): Map<string, string> {
  const mounts = new Map<string, string>();
  for (const line of readFileSync('/proc/mounts', 'utf8').trim().split('\n')) {
    const [, mountPoint, type] = line.split(' ');
    mounts.set(mountPoint, type);
  }
  return mounts;
}

describe('VM guest', () => {
  it('runs inside the harness VM', () => {
    expect(process.env.SIGIL_VM_GUEST).toBe('1');
    expect(process.getuid?.()).toBe(0);
  });

  it('runs the Debian 6.1 cloud kernel', () => {
    expect(readFileSync('/proc/sys/kernel/osrelease', 'utf8')).toMatch(/^6\.1\.0-\d+-cloud-amd64/);
  });

  it('enables the bpf and apparmor LSMs', () => {
    const lsms = readFileSync('/sys/kernel/security/lsm', 'utf8').split(',');
    expect(lsms).toContain('bpf');
    expect(lsms).toContain('apparmor');
  });

  it('exposes the kernel BTF', () => {
    expect(existsSync('/sys/kernel/btf/vmlinux')).toBe(true);
  });

  it('mounts the kernel file systems', () => {
    const mounts = mountedFileSystems();
    expect(mounts.get('/sys/fs/bpf')).toBe('bpf');
    expect(mounts.get('/sys/fs/cgroup')).toBe('cgroup2');
    expect(mounts.get('/sys/kernel/security')).toBe('securityfs');
    expect(mounts.get('/sys/kernel/tracing')).toBe('tracefs');
  });

  it('loads the native addon with its libraries', () => {
    const addon = { exports: {} as Record<string, unknown> };
    process.dlopen(addon, path.join(PROJECT_ROOT, 'build', 'Release', 'sigil_native.node'));
    expect(Object.keys(addon.exports).length).toBeGreaterThan(0);
  });
});
