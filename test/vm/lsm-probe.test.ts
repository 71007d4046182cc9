// Self-check of the VM harness: builds the kernel, image and the BPF LSM
// probe (bpf/lsm-probe/), boots the VM and checks in it that BPF LSM
// enforcement with bpf_d_path works. Fails, and never skips, when any piece
// is missing: qemu, busybox-static, the project build, or the kernel package.
import { beforeAll, describe, expect, it } from 'vitest';
import {
  ScriptResult,
  buildLsmProbe,
  describeRun,
  parseFacts,
  prepareVm,
  runInVm,
} from './vm-harness';

const SETUP_TIMEOUT_MS = 900_000;

describe('BPF LSM probe in the test VM', () => {
  let run: ScriptResult;
  let facts: Map<string, string>;

  beforeAll(async () => {
    const image = await prepareVm();
    const probeDir = await buildLsmProbe();
    run = await runInVm(image, ['sh', 'test/vm/lsm-probe-guest.sh'], {
      add: [`${probeDir}/lsm-probe:/opt/lsm-probe/lsm-probe`],
    });
    facts = parseFacts(run.stdout);
    console.log(`lsm-probe guest run took ${run.seconds.toFixed(1)} s`);
  }, SETUP_TIMEOUT_MS);

  function fact(name: string): string | undefined {
    return facts.get(name);
  }

  it('returns the guest exit status', () => {
    expect(run.exitCode, describeRun(run)).toBe(0);
  });

  it('runs the Debian 6.1 cloud kernel', () => {
    expect(fact('kernel'), describeRun(run)).toMatch(/^6\.1\.0-\d+-cloud-amd64$/);
  });

  it('lists bpf and apparmor as active LSMs', () => {
    const lsms = fact('lsm')?.split(',');
    expect(lsms, describeRun(run)).toContain('bpf');
    expect(lsms, describeRun(run)).toContain('apparmor');
  });

  it('opens the file before the probe loads', () => {
    expect(fact('before_probe_status'), describeRun(run)).toBe('0');
    expect(fact('before_probe_output')).toBe('first denied file ');
  });

  it('loads and attaches the probe', () => {
    expect(fact('first_probe_status'), describeRun(run)).toBe('0');
    expect(run.stderr).toContain('lsm-probe: denying open of /tmp/lsm-probe/first.txt');
  });

  it('denies the configured path with EPERM', () => {
    expect(fact('first_denied_status'), describeRun(run)).toBe('1');
    expect(fact('first_denied_output')).toContain('Operation not permitted');
  });

  it('opens other files', () => {
    expect(fact('allowed_status'), describeRun(run)).toBe('0');
    expect(fact('allowed_output')).toBe('allowed file ');
    expect(fact('second_before_its_probe_status')).toBe('0');
  });

  it('stacked probes each deny their path', () => {
    expect(fact('second_probe_status'), describeRun(run)).toBe('0');
    expect(fact('first_with_both_output'), describeRun(run)).toContain('Operation not permitted');
    expect(fact('second_with_both_output')).toContain('Operation not permitted');
    expect(fact('allowed_with_both_status')).toBe('0');
  });

  it('allows the paths after the links are unpinned', () => {
    expect(fact('first_after_unpin_status'), describeRun(run)).toBe('0');
    expect(fact('first_after_unpin_output')).toBe('first denied file ');
    expect(fact('second_after_unpin_status')).toBe('0');
  });
});
