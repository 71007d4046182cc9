import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decodeBatch,
  ExecRecord,
  ExitRecord,
  ForkRecord,
  KernelRecord,
} from '../../src/kernel/codec';
import { Datapath } from '../../src/kernel/datapath';
import {
  connectRecordLayout,
  DropReason,
  SETTINGS_EMIT_ALL_CONNECTS,
} from '../../src/kernel/layout';
import { ensureKernelFilesystems } from '../../src/kernel/mounts';
import { waitFor } from '../helpers/agent-process';
import { TestCgroups } from '../helpers/cgroups';
import { spawnInCgroup, Workload } from '../helpers/workloads';

// The real BPF programs on the running kernel: a connect flood fills the
// decision ring buffer, which nothing consumes here, while the process ring
// buffer is consumed and must receive every fork, exec and exit record.

const FLOOD_CONNECTS = 200_000;
const EXECS = 200;
// Each connect record takes its size plus the ring buffer's 8-byte record header.
const CONNECT_RECORD_BYTES = BigInt(connectRecordLayout.size + 8);

const FLOOD = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(${FLOOD_CONNECTS}):
    s.connect(('127.0.0.1', 9))
`;
// The flood, then ${EXECS} execs of /bin/true, one exit with status 3 and one death by SIGTERM.
const SCRIPT = [
  'read go',
  `python3 -c "${FLOOD}"`,
  `i=0; while [ $i -lt ${EXECS} ]; do /bin/true; i=$((i+1)); done`,
  "/bin/sh -c 'exit 3'",
  "/bin/sh -c 'kill -TERM $$'",
  'echo done',
].join('\n');

let cgroups: TestCgroups;
let datapath: Datapath;
const records: KernelRecord[] = [];
let shell: Workload;

beforeAll(async () => {
  ensureKernelFilesystems();
  cgroups = new TestCgroups('sigil-ring');
  cgroups.create('flood');
  datapath = Datapath.load();
  datapath.applyRuleSet({ subjects: [], peerRules: [], cidrRules: [] }, SETTINGS_EMIT_ALL_CONNECTS);
  datapath.attachProcessTracking();
  datapath.attachSocketPrograms(cgroups.path('flood'));
  datapath.startEvents(
    (batch) => {
      for (const record of decodeBatch(batch))
        if (record.type !== 'malformed') records.push(record);
    },
    ['process'],
  );

  shell = spawnInCgroup(cgroups.path('flood'), ['/bin/sh', '-c', SCRIPT]);
  // The shell is in the cgroup once it has executed the script's /bin/sh.
  await waitFor(
    'exec of the script shell',
    () =>
      records.some((r) => r.type === 'exec' && r.tgid === shell.pid && r.filename === '/bin/sh') ||
      undefined,
  );
  shell.send('go');
  await shell.waitForLine('end of the script', (line) => line === 'done', 60_000);
  await waitFor(
    'exit records of the script children',
    () =>
      records.filter((r) => r.type === 'exit' && childPids().has(r.tgid)).length >= EXECS + 3
        ? true
        : undefined,
    20_000,
  );
}, 90_000);

afterAll(() => {
  shell?.kill();
  datapath?.close();
  cgroups?.remove(['flood']);
});

function ofType<T extends KernelRecord['type']>(type: T): Extract<KernelRecord, { type: T }>[] {
  return records.filter((r): r is Extract<KernelRecord, { type: T }> => r.type === type);
}

/** Pids of the processes the script shell forked. */
function childPids(): Set<number> {
  return new Set(
    ofType('fork')
      .filter((r) => r.ppid === shell.pid)
      .map((r) => r.tgid),
  );
}

function execsOf(filename: string): ExecRecord[] {
  return ofType('exec').filter((r) => r.filename === filename && r.ppid === shell.pid);
}

function exitOf(pid: number): ExitRecord | undefined {
  return ofType('exit').find((r) => r.tgid === pid);
}

describe('separate process ring buffer', () => {
  it('drops decision records in a connect flood', () => {
    const drops = datapath.readDrops();
    expect(drops[DropReason.EventsRingBufferFull]).toBeGreaterThan(0n);
    expect(datapath.ringFill().events).toBeGreaterThan(0.99);
  });

  it('counts every flooded connect exactly', () => {
    // Nothing consumed the decision ring, so its records plus its drops are all the connects.
    const drops = datapath.readDrops()[DropReason.EventsRingBufferFull];
    const { consumerPosition, producerPosition } = datapathPositions();
    const written = (producerPosition - consumerPosition) / CONNECT_RECORD_BYTES;
    expect(written + drops).toBe(BigInt(FLOOD_CONNECTS));
  });

  it('loses no exec record during the flood', () => {
    expect(datapath.readDrops()[DropReason.ProcessRingBufferFull]).toBe(0n);
    expect(execsOf('/bin/true')).toHaveLength(EXECS);
    expect(execsOf('/bin/sh')).toHaveLength(2);
  });

  it('reports fork with the parent start time', () => {
    const forks: ForkRecord[] = ofType('fork').filter((r) => r.ppid === shell.pid);
    // python3, each /bin/true and the two /bin/sh; `[` and $((...)) are builtins and fork nothing.
    expect(forks.length).toBeGreaterThanOrEqual(EXECS + 3);
    const shellExec = ofType('exec').find((r) => r.tgid === shell.pid) as ExecRecord;
    for (const fork of forks) expect(fork.parentStartBoottimeNs).toBe(shellExec.startBoottimeNs);
    for (const exec of execsOf('/bin/true')) {
      const fork = forks.find((r) => r.tgid === exec.tgid);
      expect(fork?.startBoottimeNs).toBe(exec.startBoottimeNs);
      expect(exec.parentStartBoottimeNs).toBe(shellExec.startBoottimeNs);
    }
  });

  it('reports exit status and signal', () => {
    for (const exec of execsOf('/bin/true')) expect(exitOf(exec.tgid)?.exitCode).toBe(0);
    const [exit3, killed] = execsOf('/bin/sh');
    expect(exitOf(exit3.tgid)?.exitCode).toBe(3 << 8);
    expect(exitOf(killed.tgid)?.exitCode).toBe(15);
  });

  it('leaves the consumed process ring empty', () => {
    expect(datapath.ringFill().process).toBeLessThan(0.01);
  });
});

function datapathPositions() {
  return datapath.ringPositions('events');
}
