#!/usr/bin/env node
// Cost of connect() with Sigil's cgroup programs enforcing 10,000 rules over
// 1,000 identities, against the same loop with no programs attached, in the
// same run. UDP connect() finds no listener, so it measures the rule lookups without the
// TCP handshake. Rounds alternate baseline and enforced runs, so drift in machine
// speed affects both; the ratio of medians is the figure to quote.
// Usage (root, after `make`):
//   node bench/connect-cost.js [ROUNDS] [CONNECTS] [--consumer] [--compare OBJECT]
// --consumer runs the agent's ring-buffer consumer thread during enforced runs, as the agent
// does, so the cost of waking it is counted. --compare OBJECT adds a second enforced run per
// round with another build of sigil.bpf.o (for example one built from the main branch).
// The compared object must have the rule-map layouts of this build (src/kernel/layout.ts),
// because this build's Datapath writes its rules.
// The kernel's own accounting (kernel.bpf_stats_enabled) gives the mean run time of the connect4
// program attached to the loop's cgroup. It is on only in a second, untimed loop after each
// enforced run, because it adds two clock reads to every program run, which the agent does not
// pay.
const { execFileSync, spawn } = require('node:child_process');
const { mkdirSync, readFileSync, rmdirSync, writeFileSync, mkdtempSync } = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Datapath } = require('../dist/kernel/datapath');
const { encodeAddress } = require('../dist/kernel/codec');
const { findCgroup2Root } = require('../dist/kernel/mounts');

const flags = process.argv.slice(2);
const compareIndex = flags.indexOf('--compare');
const COMPARE_OBJECT = compareIndex >= 0 ? flags.splice(compareIndex, 2)[1] : undefined;
const consumerIndex = flags.indexOf('--consumer');
const CONSUMER = consumerIndex >= 0 && flags.splice(consumerIndex, 1).length === 1;
const ROUNDS = Number(flags[0] ?? 7);
const CONNECTS = Number(flags[1] ?? 20000);
const STATS_SWITCH = '/proc/sys/kernel/bpf_stats_enabled';
const IDENTITIES = 1000;
const RULES_PER_IDENTITY = 10;
const SUBJECT = 1;
const ALLOW = 1;
const BLOCK = 3;

function buildLoop() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sigil-bench-'));
  const binary = path.join(dir, 'connect_loop');
  execFileSync('cc', ['-O2', '-o', binary, path.join(__dirname, 'connect_loop.c')]);
  return binary;
}

// 10,000 CIDR rules: every identity gets ten /24s of 10.0.0.0/8 on its own ports, and the
// measured subject also gets an Allow for the loopback listener, with a Block posture.
function ruleSet(port) {
  const subjects = [];
  const cidrRules = [];
  let index = 0;
  for (let id = 1; id <= IDENTITIES; id++) {
    // As the compiler writes them: no peer rules, and CIDR rules of the lengths below.
    subjects.push({
      id,
      hasEgressAllow: true,
      egressPosture: BLOCK,
      hasPeerRules: false,
      cidrPrefixLengths: id === SUBJECT ? [128, 96 + 24] : [96 + 24],
    });
    for (let r = 0; r < RULES_PER_IDENTITY; r++) {
      const addr = encodeAddress(`10.${id % 256}.${(id * RULES_PER_IDENTITY + r) % 256}.0`);
      const rule = {
        portLo: 1000 + r,
        portHi: 1000 + r,
        protocol: 6,
        action: ALLOW,
        ruleIndex: index++,
      };
      cidrRules.push({ subject: id, prefixLen: 96 + 24, addr, rules: [rule] });
    }
  }
  const loopback = { portLo: port, portHi: port, protocol: 0, action: ALLOW, ruleIndex: index++ };
  cidrRules.push({
    subject: SUBJECT,
    prefixLen: 128,
    addr: encodeAddress('127.0.0.1'),
    rules: [loopback],
  });
  return { subjects, peerRules: [], cidrRules, ruleCount: index };
}

// The loop runs as a child process without blocking this one, whose event loop hands the
// consumer's batches over while --consumer is set.
function runLoop(binary, cgroup, protocol, port) {
  // The shell moves itself into the cgroup, then execs the loop, which inherits the identity.
  const script = 'echo $$ > "$0/cgroup.procs" && exec "$@"';
  const child = spawn('sh', [
    '-c',
    script,
    cgroup,
    binary,
    protocol,
    String(port),
    String(CONNECTS),
  ]);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.on('close', (status) => {
      if (status !== 0) return reject(new Error(`connect_loop failed: ${stderr}`));
      const [nsPerOp, failures] = stdout.trim().split(' ').map(Number);
      if (failures !== 0) {
        return reject(new Error(`${failures} connects failed; the rules must allow the loop`));
      }
      resolve(nsPerOp);
    });
  });
}

/**
 * Returns how many BPF programs of other processes are attached to system call tracepoints
 * (syscalls/sys_*, raw_syscalls sys_enter and sys_exit). Any of them switches every process to
 * the traced system call path, which slows baseline and enforced runs alike.
 */
function foreignSyscallPrograms() {
  const attached = JSON.parse(
    execFileSync('bpftool', ['perf', 'list', '--json'], { encoding: 'utf8' }),
  );
  return attached.filter(
    (entry) => entry.pid !== process.pid && /^sys_/.test(entry.tracepoint ?? ''),
  ).length;
}

/** Returns the mean run time in ns of the connect4 program attached to cgroup, or NaN. */
function connect4RunTime(cgroup) {
  const attached = JSON.parse(
    execFileSync('bpftool', ['cgroup', 'show', cgroup, '--json'], { encoding: 'utf8' }),
  );
  const program = attached.find((entry) => entry.attach_type === 'cgroup_inet4_connect');
  if (!program) return NaN;
  const info = JSON.parse(
    execFileSync('bpftool', ['prog', 'show', 'id', String(program.id), '--json'], {
      encoding: 'utf8',
    }),
  );
  return info.run_cnt ? info.run_time_ns / info.run_cnt : NaN;
}

/** Loads objectPath with the rule set, runs the loop under it and returns its timings. */
async function runEnforced(objectPath, binary, cgroup, protocol, port, rules) {
  const datapath = Datapath.load(objectPath);
  const statsBefore = readFileSync(STATS_SWITCH, 'utf8').trim();
  let records = 0;
  try {
    datapath.applyRuleSet(rules);
    datapath.attachProcessTracking();
    datapath.attachSocketPrograms(cgroup);
    datapath.setIdentity(process.pid, SUBJECT);
    if (CONSUMER) datapath.startEvents((_batch, count) => (records += count), ['events']);
    writeFileSync(STATS_SWITCH, '0');
    const nsPerOp = await runLoop(binary, cgroup, protocol, port);
    writeFileSync(STATS_SWITCH, '1');
    await runLoop(binary, cgroup, protocol, port);
    const programNs = connect4RunTime(cgroup);
    const drops = datapath.readDrops().reduce((sum, value) => sum + value, 0n);
    return { nsPerOp, programNs, drops, records };
  } finally {
    writeFileSync(STATS_SWITCH, statsBefore);
    datapath.close();
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main() {
  const binary = buildLoop();
  // The listener runs in its own process: the loop runs with spawnSync, which blocks this one.
  const port = 30000 + (process.pid % 10000);
  const listener = spawn(binary, ['listen', String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve) => listener.stdout.once('data', resolve));
  const cgroup = path.join(findCgroup2Root(), `sigil-bench-${process.pid}`);
  mkdirSync(cgroup);
  const rules = ruleSet(port);
  const variants = ['enforced', ...(COMPARE_OBJECT ? ['compared'] : [])];
  const objects = { enforced: undefined, compared: COMPARE_OBJECT };
  const results = {};
  for (const protocol of ['tcp', 'udp']) {
    results[protocol] = { baseline: [] };
    for (const variant of variants) results[protocol][variant] = { ns: [], program: [] };
  }
  let drops = 0n;
  let records = 0;
  let disturbedRounds = 0;

  try {
    for (let round = 0; round < ROUNDS; round++) {
      const foreignBefore = foreignSyscallPrograms();
      for (const protocol of ['tcp', 'udp']) {
        results[protocol].baseline.push(await runLoop(binary, cgroup, protocol, port));
        // Alternate the order of the variants, so neither always runs right after the baseline.
        const order = round % 2 === 0 ? variants : [...variants].reverse();
        for (const variant of order) {
          const run = await runEnforced(objects[variant], binary, cgroup, protocol, port, rules);
          results[protocol][variant].ns.push(run.nsPerOp);
          results[protocol][variant].program.push(run.programNs);
          drops += run.drops;
          records += run.records;
        }
      }
      if (foreignBefore + foreignSyscallPrograms() > 0) disturbedRounds++;
    }
  } finally {
    listener.kill();
    rmdirSync(cgroup);
  }

  console.log(
    `connect() cost, ${rules.ruleCount} rules over ${IDENTITIES} identities, ` +
      `${ROUNDS} rounds of ${CONNECTS} connects, consumer ${CONSUMER ? 'on' : 'off'}, ` +
      `records consumed ${records}, ring-buffer drops ${drops}`,
  );
  console.log(`kernel ${os.release()}, ${os.cpus().length} CPUs (${os.cpus()[0].model})`);
  console.log(
    `load average ${os
      .loadavg()
      .map((value) => value.toFixed(2))
      .join(' ')}`,
  );
  console.log(
    `rounds that began or ended with other processes' programs on system call tracepoints: ` +
      `${disturbedRounds}`,
  );
  if (COMPARE_OBJECT) console.log(`compared: ${COMPARE_OBJECT}`);
  for (const protocol of ['tcp', 'udp']) {
    const baseline = median(results[protocol].baseline);
    console.log(`${protocol}: baseline ${baseline.toFixed(0)} ns/connect`);
    for (const variant of variants) {
      const { ns, program } = results[protocol][variant];
      const ratios = ns.map((value, i) => value / results[protocol].baseline[i]);
      console.log(
        `  ${variant}: ${median(ns).toFixed(0)} ns/connect, ` +
          `ratio of medians ${(median(ns) / baseline).toFixed(3)}, ` +
          `per-round ratios ${ratios.map((ratio) => ratio.toFixed(3)).join(' ')}, ` +
          `connect4 run time (median) ${median(program).toFixed(0)} ns`,
      );
    }
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
