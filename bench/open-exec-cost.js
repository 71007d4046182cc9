#!/usr/bin/env node
// Cost of open() and execve() with Sigil's tracepoint-kill programs enforcing
// 10,000 exec and file rules over 1,000 identities, against the same loops
// with no programs attached, in the same run. Rounds alternate baseline and
// enforced runs, so drift in machine speed affects both; the ratio of
// medians is the figure to quote.
// Two subjects: `subject`, a process whose identity has rules that match the
// opened file and the executed program (each operation is decided and
// reported), and `other`, a process whose identity has no rules (the
// programs return after the subject lookup).
// Usage (root, after `make`): node bench/open-exec-cost.js [ROUNDS] [OPENS] [EXECS]
// With --floor it times only the open loop, against what the attachments cost alone. It runs it
// under programs that return at once (bench/noop-tracepoints.bpf.c) on the same tracepoints,
// with and without the raw sys_exit tracepoint, and under the i386 and accept programs alone.
// Then it runs it under the agent's programs for a process whose identity has no rules and for
// one without an identity.
//   node bench/open-exec-cost.js --floor [ROUNDS] [OPENS]
'use strict';
const { execFileSync, spawn } = require('node:child_process');
const { mkdtempSync, rmSync, statSync, writeFileSync } = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Datapath, removePinnedState } = require('../dist/kernel/datapath');
const { kernelDeviceNumber } = require('../dist/kernel/lsm-maps');
const { openTpObject, publishTpRuleSet, TP_PROGRAMS } = require('../dist/kernel/tp-maps');
const { BpfObject } = require('../dist/kernel/native');

const FLOOR = process.argv.includes('--floor');
const positional = process.argv.slice(2).filter((arg) => arg !== '--floor');
const ROUNDS = Number(positional[0] ?? 7);
const OPENS = Number(positional[1] ?? 200000);
const EXECS = Number(positional[2] ?? 2000);
const IDENTITIES = 1000;
const RULES_PER_IDENTITY = 10;
const SUBJECT = 1;
const OTHER = IDENTITIES + 1;
const ALLOW = 1;
const AUDIT = 2;
const BLOCK = 3;

function inodeOf(file) {
  const stats = statSync(file, { bigint: true });
  return { dev: kernelDeviceNumber(stats.dev), ino: stats.ino };
}

// Every identity gets 4 exact-file rules, 3 exec rules and 3 directory rules
// on inodes that no file here has. The measured subject also gets an Allow
// rule on the loop binary and a recursive Allow rule on the opened file's
// directory, so its operations are allowed by rule. Its postures are Audit,
// because this process and the loader's library opens share its identity.
function ruleSet(binary, directory) {
  const subjects = [];
  const inodeRules = [];
  const directoryRules = [];
  let ruleIndex = 0;
  for (let id = 1; id <= IDENTITIES; id++) {
    const posture = id === SUBJECT ? AUDIT : BLOCK;
    subjects.push({ id, execPosture: posture, filePosture: posture });
    for (let r = 0; r < RULES_PER_IDENTITY; r++) {
      const rule = {
        subject: id,
        dev: 1,
        ino: BigInt(1_000_000 + id * 100 + r),
        ruleIndex: ruleIndex++,
      };
      if (r < 4) inodeRules.push({ ...rule, kind: 'file', action: BLOCK });
      else if (r < 7) inodeRules.push({ ...rule, kind: 'exec', action: BLOCK });
      else directoryRules.push({ ...rule, kind: 'file', action: AUDIT, recursive: r === 9 });
    }
  }
  inodeRules.push({
    subject: SUBJECT,
    kind: 'exec',
    action: ALLOW,
    ruleIndex: ruleIndex++,
    ...inodeOf(binary),
  });
  directoryRules.push({
    subject: SUBJECT,
    kind: 'file',
    action: ALLOW,
    recursive: true,
    ruleIndex: ruleIndex++,
    ...inodeOf(directory),
  });
  return { ruleSet: { subjects, inodeRules, directoryRules }, ruleCount: ruleIndex };
}

/** Runs the loop without blocking the event loop, so the ring-buffer consumer keeps draining. */
function runLoop(binary, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.once('exit', (code) =>
      code === 0
        ? resolve(Number(out.trim()))
        : reject(new Error(`${args[0]} loop exited ${code}`)),
    );
  });
}

/**
 * Loads the main and tracepoint-kill objects under a scratch pin directory and publishes the
 * rules. attach selects the programs: 'tracepoint-kill' (the default), 'agent' (those and the
 * accept programs, as the agent attaches them), or 'i386-accept' (only the raw sys_exit program
 * of i386 system calls and the accept programs).
 */
function enforce(pinDir, rules, attach = 'tracepoint-kill') {
  const datapath = Datapath.load(undefined, pinDir);
  const object = openTpObject(path.join(pinDir, 'maps'));
  const maps = {
    subjects: object.mapFd('sigil_tp_subjects'),
    inodes: object.mapFd('sigil_tp_inodes'),
    directories: object.mapFd('sigil_tp_directories'),
  };
  datapath.applyRuleSet({ subjects: [], peerRules: [], cidrRules: [] }, 0, {
    beforeSwitch: (generation) => publishTpRuleSet(maps, generation, rules),
  });
  datapath.attachProcessTracking();
  if (attach !== 'tracepoint-kill') datapath.attachAcceptTracking();
  const programs =
    attach === 'i386-accept'
      ? TP_PROGRAMS.filter(({ program }) => program === 'sigil_tp_sys_exit_ia32')
      : TP_PROGRAMS;
  const links = programs.map(({ program, kind, target }) =>
    kind === 'raw_tp'
      ? object.attachRawTracepoint(program, target)
      : object.attachTracepoint(program, ...target.split('/')),
  );
  let records = 0;
  datapath.startEvents((_batch, count) => (records += count));
  return {
    datapath,
    records: () => records,
    close() {
      for (const link of links) link.destroy();
      object.close();
      datapath.close();
    },
  };
}

const STATS_SWITCH = '/proc/sys/kernel/bpf_stats_enabled';

/**
 * Returns the mean run time of each tracepoint-kill program in ns, from the
 * kernel's own accounting (kernel.bpf_stats_enabled), which machine noise
 * disturbs less than the loop's wall time. Runs of every process count.
 */
function programRunTimes() {
  const programs = JSON.parse(
    execFileSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8' }),
  );
  const times = {};
  for (const program of programs) {
    if (!['sigil_tp_openat', 'sigil_tp_exec'].includes(program.name) || !program.run_cnt) continue;
    times[program.name] = program.run_time_ns / program.run_cnt;
  }
  return times;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** System call tracepoints of the tracepoint-kill programs and the accept programs. */
const SYSCALL_TRACEPOINTS = [
  ...TP_PROGRAMS.filter(({ target }) => target.startsWith('syscalls/')).map(({ target }) =>
    target.slice('syscalls/'.length),
  ),
  'sys_exit_accept',
  'sys_exit_accept4',
];

/** Attaches programs that return at once to SYSCALL_TRACEPOINTS and, with rawSysExit, sys_exit. */
function attachNoop(objectPath, rawSysExit) {
  const object = new BpfObject(objectPath);
  object.load();
  const links = SYSCALL_TRACEPOINTS.map((name) =>
    object.attachTracepoint('sigil_bench_noop_tracepoint', 'syscalls', name),
  );
  if (rawSysExit) {
    links.push(object.attachRawTracepoint('sigil_bench_noop_raw_tracepoint', 'sys_exit'));
  }
  return {
    close() {
      for (const link of links) link.destroy();
      object.close();
    },
  };
}

/**
 * Returns how many BPF programs of other processes are attached to system call tracepoints.
 * Any of them switches every process to the traced system call path, baseline runs included.
 */
function foreignSyscallPrograms() {
  const attached = JSON.parse(
    execFileSync('bpftool', ['perf', 'list', '--json'], { encoding: 'utf8' }),
  );
  return attached.filter(
    (entry) => entry.pid !== process.pid && /^sys_/.test(entry.tracepoint ?? ''),
  ).length;
}

/** Returns the mean run time in ns of each program that this process attached, by name. */
function ownProgramRunTimes() {
  const attached = JSON.parse(
    execFileSync('bpftool', ['perf', 'list', '--json'], { encoding: 'utf8' }),
  );
  const own = new Set(attached.filter((e) => e.pid === process.pid).map((e) => e.prog_id));
  const programs = JSON.parse(
    execFileSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8' }),
  );
  const times = {};
  for (const program of programs) {
    if (own.has(program.id) && program.run_cnt) {
      times[program.name] = program.run_time_ns / program.run_cnt;
    }
  }
  return times;
}

/** Times the open loop under each attachment of --floor, against no programs. */
async function floorMain() {
  const work = mkdtempSync(path.join(os.tmpdir(), 'sigil-bench-'));
  const binary = path.join(work, 'open_exec_loop');
  execFileSync('cc', ['-O2', '-o', binary, path.join(__dirname, 'open_exec_loop.c')]);
  const noopObject = path.join(work, 'noop-tracepoints.bpf.o');
  const output = path.join(__dirname, '..', 'bpf', '.output');
  execFileSync('clang', [
    '-g',
    '-O2',
    '-Wall',
    '-target',
    'bpf',
    `-I${output}`,
    '-c',
    path.join(__dirname, 'noop-tracepoints.bpf.c'),
    '-o',
    noopObject,
  ]);
  const file = path.join(work, 'data.txt');
  writeFileSync(file, 'data\n');
  const { ruleSet: rules } = ruleSet(binary, work);
  const pinDir = `/sys/fs/bpf/sigil-bench-${process.pid}`;
  const args = ['open', file, String(OPENS)];
  const variants = [
    { name: 'noop programs', start: () => attachNoop(noopObject, true) },
    { name: 'noop programs, no raw sys_exit', start: () => attachNoop(noopObject, false) },
    {
      name: 'i386 and accept programs',
      start: () => enforce(pinDir, rules, 'i386-accept'),
      id: OTHER,
    },
    {
      name: 'agent, identity without rules',
      start: () => enforce(pinDir, rules, 'agent'),
      id: OTHER,
    },
    { name: 'agent, no identity', start: () => enforce(pinDir, rules, 'agent') },
  ];
  const baseline = [];
  const disturbed = [];
  const results = variants.map(() => ({ ns: [], times: [] }));

  try {
    for (let round = 0; round < ROUNDS; round++) {
      let foreign = foreignSyscallPrograms();
      baseline.push(await runLoop(binary, args));
      // Alternate the order, so no variant always runs right after the baseline.
      const order = variants.map((_, i) => i);
      if (round % 2 === 1) order.reverse();
      for (const i of order) {
        const attached = variants[i].start();
        try {
          if (variants[i].id) attached.datapath.setIdentity(process.pid, variants[i].id);
          foreign += foreignSyscallPrograms();
          results[i].ns.push(await runLoop(binary, args));
          // A second run with the kernel's accounting on gives the program run times.
          writeFileSync(STATS_SWITCH, '1');
          await runLoop(binary, args);
          results[i].times.push(ownProgramRunTimes());
        } finally {
          writeFileSync(STATS_SWITCH, '0');
          attached.close();
          removePinnedState(pinDir);
        }
      }
      disturbed.push(foreign + foreignSyscallPrograms() > 0);
    }
  } finally {
    removePinnedState(pinDir);
    rmSync(work, { recursive: true, force: true });
  }

  console.log(`open() floor, ${ROUNDS} rounds of ${OPENS} opens`);
  console.log(`kernel ${os.release()}, ${os.cpus().length} CPUs (${os.cpus()[0].model})`);
  console.log(
    `load average ${os
      .loadavg()
      .map((value) => value.toFixed(2))
      .join(' ')}`,
  );
  const quiet = disturbed.map((value) => !value);
  const selections = [
    ['all rounds', disturbed.map(() => true)],
    ["rounds without other processes' system call programs", quiet],
  ];
  for (const [label, selected] of selections) {
    const pick = (values) => values.filter((_, round) => selected[round]);
    const base = pick(baseline);
    console.log(
      `${label} (${base.length}): baseline ${base.length ? median(base).toFixed(0) : '-'} ns/open`,
    );
    if (base.length === 0) continue;
    variants.forEach((variant, i) => {
      const ns = pick(results[i].ns);
      const times = pick(results[i].times);
      const ratios = ns.map((value, k) => value / base[k]);
      const programs = ['sigil_tp_openat', 'sigil_tp_sys_exit_ia32']
        .filter((name) => times.some((entry) => name in entry))
        .map((name) => `${name} ${median(times.map((entry) => entry[name])).toFixed(0)} ns`);
      console.log(
        `  ${variant.name}: ${median(ns).toFixed(0)} ns/open, ratio of medians ` +
          `${(median(ns) / median(base)).toFixed(3)}, per-round ratios ` +
          `${ratios.map((ratio) => ratio.toFixed(3)).join(' ')}` +
          (programs.length ? `, run time (median) ${programs.join(', ')}` : ''),
      );
    });
  }
}

async function main() {
  const work = mkdtempSync(path.join(os.tmpdir(), 'sigil-bench-'));
  const binary = path.join(work, 'open_exec_loop');
  execFileSync('cc', ['-O2', '-o', binary, path.join(__dirname, 'open_exec_loop.c')]);
  const file = path.join(work, 'data.txt');
  writeFileSync(file, 'data\n');
  const { ruleSet: rules, ruleCount } = ruleSet(binary, work);
  const pinDir = `/sys/fs/bpf/sigil-bench-${process.pid}`;
  const cases = { open: ['open', file, String(OPENS)], exec: ['exec', String(EXECS)] };
  const results = {};
  for (const operation of Object.keys(cases)) {
    for (const subject of ['subject', 'other'])
      results[`${operation} ${subject}`] = { baseline: [], enforced: [], program: [] };
  }

  let drops = 0n;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const [operation, args] of Object.entries(cases)) {
        for (const [subject, id] of [
          ['subject', SUBJECT],
          ['other', OTHER],
        ]) {
          const result = results[`${operation} ${subject}`];
          result.baseline.push(await runLoop(binary, args));
          const enforcer = enforce(pinDir, rules);
          try {
            // The loop inherits this process's identity at fork.
            enforcer.datapath.setIdentity(process.pid, id);
            writeFileSync(STATS_SWITCH, '1');
            result.enforced.push(await runLoop(binary, args));
            const times = programRunTimes();
            result.program.push(times[operation === 'open' ? 'sigil_tp_openat' : 'sigil_tp_exec']);
            drops += enforcer.datapath.readDrops().reduce((sum, value) => sum + value, 0n);
          } finally {
            writeFileSync(STATS_SWITCH, '0');
            enforcer.close();
            removePinnedState(pinDir);
          }
        }
      }
    }
  } finally {
    removePinnedState(pinDir);
    rmSync(work, { recursive: true, force: true });
  }

  console.log(
    `open() and execve() cost, ${ruleCount} rules over ${IDENTITIES} identities, ` +
      `${ROUNDS} rounds of ${OPENS} opens and ${EXECS} execs; ring-buffer drops ${drops}`,
  );
  console.log(`kernel ${os.release()}, ${os.cpus().length} CPUs (${os.cpus()[0].model})`);
  for (const [name, { baseline, enforced, program }] of Object.entries(results)) {
    const ratios = enforced.map((value, i) => value / baseline[i]);
    console.log(
      `${name}: baseline ${median(baseline).toFixed(0)} ns/op, enforced ${median(enforced).toFixed(0)} ns/op, ` +
        `ratio of medians ${(median(enforced) / median(baseline)).toFixed(3)}, ` +
        `per-round ratios ${ratios.map((ratio) => ratio.toFixed(3)).join(' ')}, ` +
        `program run time (median) ${median(program).toFixed(0)} ns`,
    );
  }
}

(FLOOR ? floorMain() : main()).catch((error) => {
  console.error(error);
  process.exit(1);
});
