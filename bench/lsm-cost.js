#!/usr/bin/env node
// Cost of open() and execve() with the agent enforcing 10,000 process and file
// rules over 1,000 identities through BPF LSM, against the same loops with no
// agent, in the same run. Runs inside the test VM (Linux 6.1 with BPF LSM),
// started from the host by bench/lsm-cost-vm.sh. The VM is emulated (TCG),
// so only the ratios mean anything. Two open loops run: one opens the same file again and
// again, and one opens OPENS different files of one directory once each. lsm/file_open walks
// the directory once and then finds its verdict in its decision cache, which is kept per
// directory, not per file. While the agent runs, kernel.bpf_stats_enabled is on, and the
// bench reports the mean run time of the LSM program that ran most often during each open
// loop (lsm/file_open), read from the agent's program descriptors in /proc/PID/fdinfo.
// Usage (guest, root, in /sigil): node bench/lsm-cost.js LOOP_BINARY [ROUNDS] [OPENS] [EXECS]
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');

const [LOOP, ROUNDS = '3', OPENS = '20000', EXECS = '300'] = process.argv.slice(2);
const IDENTITIES = 1000;
const RULES_PER_KIND = 5;
const TD = 'spiffe://bench.example';
const ROOT = '/tmp/sigil-lsm-bench';
const CGROUP = '/sys/fs/cgroup/sigil-bench';
const PIN_DIR = '/sys/fs/bpf/sigil-bench';
const EVENTS_LOG = `${ROOT}/events.jsonl`;
const AGENT_LOG = `${ROOT}/agent.log`;
const OPENED = '/bench/data/w0/0/file';
// OPENS files named 0, 1, ..., in a directory that the same rule allows.
const OPENED_EACH = '/bench/data/w0/0/each';
const STATS_SWITCH = '/proc/sys/kernel/bpf_stats_enabled';
const BPF_PROG_TYPE_LSM = 29;
const EXECUTED = '/bench/bin/w0/0/true';

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Writes the registration and 1,000 policies of 5 process and 5 file rules each (10,000 rules). */
function writeFixtures() {
  fs.rmSync(ROOT, { recursive: true, force: true });
  fs.mkdirSync(ROOT, { recursive: true });
  fs.mkdirSync('/bench/data/w0/0', { recursive: true });
  fs.mkdirSync('/bench/bin/w0/0', { recursive: true });
  fs.writeFileSync(OPENED, 'bench\n');
  fs.mkdirSync(OPENED_EACH, { recursive: true });
  for (let i = 0; i < Number(OPENS); i++) fs.writeFileSync(`${OPENED_EACH}/${i}`, 'bench\n');
  fs.copyFileSync(fs.realpathSync('/bin/true'), EXECUTED);
  fs.chmodSync(EXECUTED, 0o755);
  fs.mkdirSync(CGROUP, { recursive: true });

  const entries = [`  - spiffeId: ${TD}/w0`, `    selectors: [cgroup:path:/sigil-bench]`];
  for (let i = 1; i < IDENTITIES; i++) {
    entries.push(`  - spiffeId: ${TD}/w${i}`, `    selectors: [unix:uid:${20000 + i}]`);
  }
  fs.writeFileSync(
    `${ROOT}/registration.yaml`,
    ['apiVersion: sigil.dev/v1alpha1', 'kind: Registration', 'entries:', ...entries, ''].join('\n'),
  );

  const documents = [];
  for (let i = 0; i < IDENTITIES; i++) {
    const lines = [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: IdentityPolicy',
      `metadata: {name: w${i}}`,
      'spec:',
      `  subject: {spiffeId: ${TD}/w${i}}`,
      '  processPosture: Audit',
      '  filePosture: Audit',
      '  process:',
    ];
    for (let k = 0; k < RULES_PER_KIND; k++) {
      lines.push(`    - {action: Allow, directories: [/bench/bin/w${i}/${k}], recursive: true}`);
    }
    lines.push('  file:');
    for (let k = 0; k < RULES_PER_KIND; k++) {
      lines.push(`    - {action: Allow, directories: [/bench/data/w${i}/${k}], recursive: true}`);
    }
    documents.push(lines.join('\n'));
  }
  fs.writeFileSync(`${ROOT}/policies.yaml`, `${documents.join('\n---\n')}\n`);
}

/**
 * Runs the loop in the bench cgroup. The shell joins the cgroup and execs a second shell, which
 * the agent (when it runs) attests before the loop starts. The loop inherits that identity.
 */
function runLoop(operation, path, count) {
  const script = `echo $$ > ${CGROUP}/cgroup.procs && exec sh -c 'sleep 2; exec "$0" "$@"' "$@"`;
  const result = spawnSync('sh', ['-c', script, 'sh', LOOP, operation, path, String(count)], {
    encoding: 'utf8',
  });
  if (result.status !== 0) throw new Error(`${operation} loop failed: ${result.stderr}`);
  const [nsPerOp, failures] = result.stdout.trim().split(' ').map(Number);
  if (failures !== 0) throw new Error(`${failures} of ${count} ${operation} operations failed`);
  return nsPerOp;
}

async function startAgent() {
  fs.rmSync(PIN_DIR, { recursive: true, force: true });
  const log = fs.openSync(AGENT_LOG, 'w');
  const child = spawn(
    process.execPath,
    [
      'bin/sigil',
      'run',
      '--registration',
      `${ROOT}/registration.yaml`,
      '--policy',
      `${ROOT}/policies.yaml`,
      '--bpffs-dir',
      PIN_DIR,
      '--state-dir',
      `${ROOT}/state`,
      '--socket',
      `${ROOT}/sigil.sock`,
      '--events-log',
      EVENTS_LOG,
      '--no-watch',
    ],
    { stdio: ['ignore', log, log] },
  );
  let exited = null;
  child.once('exit', (code, signal) => (exited = { code, signal }));
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline && exited === null) {
    if (fs.readFileSync(AGENT_LOG, 'utf8').includes('"msg":"agent started"')) return child;
    await sleep(200);
  }
  throw new Error(
    `the agent did not start: ${JSON.stringify(exited)}\n${fs.readFileSync(AGENT_LOG, 'utf8').slice(-3000)}`,
  );
}

async function stopAgent(child) {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
  const result = spawnSync(process.execPath, ['bin/sigil', 'uninstall', '--bpffs-dir', PIN_DIR], {
    encoding: 'utf8',
  });
  if (result.status !== 0) throw new Error(`uninstall failed: ${result.stderr}`);
}

/** Returns run_cnt and run_time_ns of each BPF LSM program that process pid has open, by id. */
function lsmProgramStats(pid) {
  const stats = new Map();
  const directory = `/proc/${pid}/fdinfo`;
  for (const fd of fs.readdirSync(directory)) {
    let text;
    try {
      text = fs.readFileSync(`${directory}/${fd}`, 'utf8');
    } catch {
      continue;
    }
    const fields = Object.fromEntries(
      text
        .split('\n')
        .map((line) => line.split(':\t'))
        .filter((pair) => pair.length === 2),
    );
    if (Number(fields.prog_type) !== BPF_PROG_TYPE_LSM) continue;
    stats.set(fields.prog_id, { runs: Number(fields.run_cnt), ns: Number(fields.run_time_ns) });
  }
  return stats;
}

/** Returns the mean run time in ns of the program with the most runs between two snapshots. */
function busiestProgramRunTime(before, after) {
  let best = { runs: 0, ns: 0 };
  for (const [id, end] of after) {
    const start = before.get(id) ?? { runs: 0, ns: 0 };
    const runs = end.runs - start.runs;
    if (runs > best.runs) best = { runs, ns: end.ns - start.ns };
  }
  return best.runs ? best.ns / best.runs : NaN;
}

/** Counts the loop's exec events that carry the bench identity, to show the loops ran as w0. */
function identifiedLoopExecs() {
  if (!fs.existsSync(EVENTS_LOG)) return 0;
  return fs
    .readFileSync(EVENTS_LOG, 'utf8')
    .split('\n')
    .filter((line) => line.includes(LOOP) && line.includes(`"${TD}/w0"`)).length;
}

async function main() {
  if (!LOOP) throw new Error('usage: node bench/lsm-cost.js LOOP_BINARY [ROUNDS] [OPENS] [EXECS]');
  if (!fs.readFileSync('/sys/kernel/security/lsm', 'utf8').split(',').includes('bpf')) {
    throw new Error(
      'BPF LSM is not active in this kernel; run this in the VM (bench/lsm-cost-vm.sh)',
    );
  }
  writeFixtures();
  // loop name -> lsm_loop operation, its path and count
  const loops = {
    'open, same file': ['open', OPENED, Number(OPENS)],
    'open, each file once': ['open-each', OPENED_EACH, Number(OPENS)],
    exec: ['exec', EXECUTED, Number(EXECS)],
  };
  const results = {};
  const fileOpenRunTimes = {};
  for (const name of Object.keys(loops)) {
    results[name] = { baseline: [], enforced: [] };
    fileOpenRunTimes[name] = [];
  }
  const rounds = Number(ROUNDS);
  for (let round = 0; round < rounds; round++) {
    for (const [name, loop] of Object.entries(loops)) results[name].baseline.push(runLoop(...loop));
    const agent = await startAgent();
    try {
      fs.writeFileSync(STATS_SWITCH, '1');
      for (const [name, loop] of Object.entries(loops)) {
        const before = lsmProgramStats(agent.pid);
        results[name].enforced.push(runLoop(...loop));
        fileOpenRunTimes[name].push(busiestProgramRunTime(before, lsmProgramStats(agent.pid)));
      }
    } finally {
      fs.writeFileSync(STATS_SWITCH, '0');
      await stopAgent(agent);
    }
  }

  console.log(
    `open() and execve() cost, ${IDENTITIES * RULES_PER_KIND * 2} rules over ${IDENTITIES} identities, ` +
      `${rounds} rounds of ${OPENS} opens and ${EXECS} execs`,
  );
  console.log(
    `kernel ${os.release()}, ${os.cpus().length} CPUs, LSMs ${fs.readFileSync('/sys/kernel/security/lsm', 'utf8').trim()}`,
  );
  console.log(`exec events of the loop with the bench SPIFFE ID: ${identifiedLoopExecs()}`);
  for (const name of Object.keys(loops)) {
    const { baseline, enforced } = results[name];
    const ratios = enforced.map((value, index) => value / baseline[index]);
    console.log(
      `${name}: baseline ${median(baseline).toFixed(0)} ns, enforced ${median(enforced).toFixed(0)} ns, ` +
        `ratio of medians ${(median(enforced) / median(baseline)).toFixed(3)}, ` +
        `per-round ratios ${ratios.map((ratio) => ratio.toFixed(3)).join(' ')}`,
    );
    if (name === 'exec') continue;
    const runTimes = fileOpenRunTimes[name];
    console.log(
      `  lsm/file_open run time: median ${median(runTimes).toFixed(0)} ns, ` +
        `per round ${runTimes.map((value) => value.toFixed(0)).join(' ')}`,
    );
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
