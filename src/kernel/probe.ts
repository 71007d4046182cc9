import { probeHelper, probeMapType, probeProgramType } from './native';
import { readActiveLsms } from './mounts';

/** Whether one enforcer can run on this kernel, and why not when it cannot. */
export interface EnforcerReport {
  enforcer: 'cgroup-sock' | 'process-tracking' | 'bpf-lsm' | 'tracepoint-kill';
  purpose: string;
  available: boolean;
  used: boolean;
  missing: string[];
}

function missingProgramTypes(types: string[]): string[] {
  return types
    .map((type) => ({ type, result: probeProgramType(type) }))
    .filter(({ result }) => !result.supported)
    .map(({ type, result }) => `program type ${type} (${result.error ?? 'not supported'})`);
}

function missingMapTypes(types: string[]): string[] {
  return types
    .map((type) => ({ type, result: probeMapType(type) }))
    .filter(({ result }) => !result.supported)
    .map(({ type, result }) => `map type ${type} (${result.error ?? 'not supported'})`);
}

function missingHelpers(programType: string, helpers: string[]): string[] {
  return helpers
    .map((helper) => ({ helper, result: probeHelper(programType, helper) }))
    .filter(({ result }) => !result.supported)
    .map(({ helper }) => `helper bpf_${helper} in ${programType} programs`);
}

/** Probes the running kernel for what each enforcer needs. Probe results do not change while it runs. */
export function probeEnforcers(): EnforcerReport[] {
  const cgroupSock = [
    ...missingProgramTypes(['cgroup_sock_addr', 'cgroup_sock']),
    ...missingMapTypes(['ringbuf', 'hash_of_maps', 'lpm_trie', 'sk_storage']),
    ...missingHelpers('cgroup_sock_addr', ['sk_lookup_tcp', 'sk_storage_get', 'get_current_pid_tgid']),
  ];
  const tracking = [
    ...missingProgramTypes(['tracepoint', 'raw_tracepoint']),
    ...missingMapTypes(['ringbuf']),
  ];
  // A kernel may load and even attach lsm programs while the bpf LSM is not active, and then
  // the hooks never run: only the active LSM list proves that they do.
  const lsms = readActiveLsms();
  const lsm = [...missingProgramTypes(['lsm'])];
  if (lsms === null) lsm.push('a readable /sys/kernel/security/lsm (securityfs mounted)');
  else if (!lsms.includes('bpf')) lsm.push(`"bpf" in the active LSMs (${lsms.join(',')})`);
  // bpf_loop walks the directory tree, bpf_task_pt_regs reads the open's arguments at its exit.
  const tracepointKill = [
    ...missingProgramTypes(['tracepoint', 'raw_tracepoint']),
    ...missingHelpers('tracepoint', ['send_signal', 'loop', 'task_pt_regs', 'get_current_task_btf']),
    ...missingHelpers('raw_tracepoint', ['send_signal', 'loop']),
  ];
  return [
    {
      enforcer: 'process-tracking',
      purpose: 'identity inheritance at fork and attestation at exec',
      available: tracking.length === 0,
      used: tracking.length === 0,
      missing: tracking,
    },
    {
      enforcer: 'cgroup-sock',
      purpose: 'connect() enforcement by SPIFFE ID, CIDR and port',
      available: cgroupSock.length === 0,
      used: cgroupSock.length === 0,
      missing: cgroupSock,
    },
    {
      enforcer: 'bpf-lsm',
      purpose: 'exec, file and socket LSM hooks',
      available: lsm.length === 0,
      // The agent uses it only with pinning on (--bpffs-dir), because the LSM object reuses the pinned maps.
      used: lsm.length === 0,
      missing: lsm,
    },
    {
      enforcer: 'tracepoint-kill',
      purpose: 'exec and file rules, by killing the process after the exec or open',
      available: tracepointKill.length === 0,
      // The fallback for exec and file rules: the agent uses it only where BPF LSM is not active.
      used: tracepointKill.length === 0 && lsm.length > 0,
      missing: tracepointKill,
    },
  ];
}
