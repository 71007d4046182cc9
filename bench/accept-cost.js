#!/usr/bin/env node
// Cost of Sigil's accept programs on a loopback TCP connection: the TCP
// state tracepoint at the client's state changes and the sys_exit tracepoint
// of the server's accept(). One process connects to its own listener and accepts,
// so each iteration pays both. Rounds alternate four runs. The first has no
// programs. The second has only a syscalls tracepoint on getppid(), which
// the loop never calls, to show what the kernel's traced system call path
// alone costs. The third has the accept programs and an unidentified
// process, so no record is written. The fourth has an identified process:
// a record per accept, and a client entry written and removed per connection.
// The figure is the ratio of medians of the loop process's CPU time, because
// it is steadier than wall-clock time when other work competes for the CPUs.
// Usage (root, after `make`): node bench/accept-cost.js [ROUNDS] [CONNECTIONS]
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const { mkdirSync, mkdtempSync, rmdirSync } = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Datapath, defaultBpfObjectPath } = require('../dist/kernel/datapath');
const { BpfObject } = require('../dist/kernel/native');
const { ensureKernelFilesystems, findCgroup2Root } = require('../dist/kernel/mounts');

const ROUNDS = Number(process.argv[2] ?? 7);
const CONNECTIONS = Number(process.argv[3] ?? 20000);
const SUBJECT = 1;

function buildLoop() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sigil-bench-'));
  const binary = path.join(dir, 'accept_loop');
  execFileSync('cc', ['-O2', '-o', binary, path.join(__dirname, 'accept_loop.c')]);
  return binary;
}

function runLoop(binary, cgroup, port) {
  // The shell moves itself into the cgroup, then execs the loop, which inherits any identity.
  const argv = ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, binary, String(port), String(CONNECTIONS)];
  const result = spawnSync('sh', argv, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`accept_loop failed: ${result.stderr}`);
  const [wallNs, cpuNs, failures] = result.stdout.trim().split(' ').map(Number);
  if (failures !== 0) throw new Error(`${failures} connections failed`);
  return { wallNs, cpuNs };
}

/** Runs the loop with the accept programs attached; identified gives the loop an identity. */
function runWithPrograms(binary, cgroup, port, identified) {
  const datapath = Datapath.load();
  try {
    datapath.applyRuleSet({ subjects: [], peerRules: [], cidrRules: [] });
    datapath.attachProcessTracking();
    datapath.attachAcceptTracking();
    // The loop's shell is forked from this process, so it inherits this identity at fork.
    if (identified) datapath.setIdentity(process.pid, SUBJECT);
    const times = runLoop(binary, cgroup, port);
    if (identified && datapath.readDrops().some((count) => count > 0n)) {
      throw new Error('records were dropped: the ring buffer is too small for this many connections');
    }
    return times;
  } finally {
    datapath.close();
  }
}

/** Runs the loop while one syscalls tracepoint is attached to a system call the loop never makes. */
function runWithSyscallTracepoint(binary, cgroup, port) {
  const object = new BpfObject(defaultBpfObjectPath());
  try {
    object.load();
    const link = object.attachTracepoint('sigil_accept', 'syscalls', 'sys_exit_getppid');
    try {
      return runLoop(binary, cgroup, port);
    } finally {
      link.destroy();
    }
  } finally {
    object.close();
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function main() {
  ensureKernelFilesystems();
  const binary = buildLoop();
  const port = 40000 + (process.pid % 10000);
  const cgroup = path.join(findCgroup2Root(), `sigil-bench-accept-${process.pid}`);
  mkdirSync(cgroup);
  const results = { baseline: [], 'syscall-tracepoint': [], unidentified: [], identified: [] };
  try {
    for (let round = 0; round < ROUNDS; round++) {
      results.baseline.push(runLoop(binary, cgroup, port));
      results['syscall-tracepoint'].push(runWithSyscallTracepoint(binary, cgroup, port));
      results.unidentified.push(runWithPrograms(binary, cgroup, port, false));
      results.identified.push(runWithPrograms(binary, cgroup, port, true));
    }
  } finally {
    rmdirSync(cgroup);
  }

  console.log(`accept cost, ${ROUNDS} rounds of ${CONNECTIONS} loopback connections`);
  console.log(`kernel ${os.release()}, ${os.cpus().length} CPUs (${os.cpus()[0].model}), load ${os.loadavg()[0].toFixed(2)}`);
  for (const clock of ['wallNs', 'cpuNs']) {
    const baselineValues = results.baseline.map((times) => times[clock]);
    const baseline = median(baselineValues);
    console.log(`${clock === 'wallNs' ? 'wall-clock' : 'CPU'} time: baseline ${baseline.toFixed(0)} ns/connection`);
    for (const variant of ['syscall-tracepoint', 'unidentified', 'identified']) {
      const values = results[variant].map((times) => times[clock]);
      const value = median(values);
      const ratios = values.map((v, i) => (v / baselineValues[i]).toFixed(3));
      console.log(
        `  ${variant}: ${value.toFixed(0)} ns/connection, ratio of medians ${(value / baseline).toFixed(3)}, ` +
          `per-round ratios ${ratios.join(' ')}`,
      );
    }
  }
}

main();
