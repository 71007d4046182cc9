#!/usr/bin/env node
// Cost of connect() with Sigil's cgroup programs enforcing 10,000 rules over
// 1,000 identities, against the same loop with no programs attached, in the
// same run. UDP connect() finds no listener, so it measures the rule lookups without the
// TCP handshake. Rounds alternate baseline and enforced runs, so drift in machine
// speed affects both; the ratio of medians is the figure to quote.
// Usage (root, after `make`): node bench/connect-cost.js [ROUNDS] [CONNECTS]
'use strict';
const { execFileSync, spawn, spawnSync } = require('node:child_process');
const { mkdirSync, rmdirSync, writeFileSync, mkdtempSync } = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Datapath } = require('../dist/kernel/datapath');
const { encodeAddress } = require('../dist/kernel/codec');
const { findCgroup2Root } = require('../dist/kernel/mounts');

const ROUNDS = Number(process.argv[2] ?? 7);
const CONNECTS = Number(process.argv[3] ?? 20000);
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
    subjects.push({ id, hasEgressAllow: true, egressPosture: BLOCK });
    for (let r = 0; r < RULES_PER_IDENTITY; r++) {
      const addr = encodeAddress(`10.${id % 256}.${(id * RULES_PER_IDENTITY + r) % 256}.0`);
      const rule = { portLo: 1000 + r, portHi: 1000 + r, protocol: 6, action: ALLOW, ruleIndex: index++ };
      cidrRules.push({ subject: id, prefixLen: 96 + 24, addr, rules: [rule] });
    }
  }
  const loopback = { portLo: port, portHi: port, protocol: 0, action: ALLOW, ruleIndex: index++ };
  cidrRules.push({ subject: SUBJECT, prefixLen: 128, addr: encodeAddress('127.0.0.1'), rules: [loopback] });
  return { subjects, peerRules: [], cidrRules, ruleCount: index };
}

function runLoop(binary, cgroup, protocol, port) {
  // The shell moves itself into the cgroup, then execs the loop, which inherits the identity.
  const result = spawnSync('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, binary, protocol, String(port), String(CONNECTS)], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`connect_loop failed: ${result.stderr}`);
  const [nsPerOp, failures] = result.stdout.trim().split(' ').map(Number);
  if (failures !== 0) throw new Error(`${failures} connects failed; the rules must allow the loop`);
  return nsPerOp;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main() {
  const binary = buildLoop();
  // The listener runs in its own process: the loop runs with spawnSync, which blocks this one.
  const port = 30000 + (process.pid % 10000);
  const listener = spawn(binary, ['listen', String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve) => listener.stdout.once('data', resolve));
  const cgroup = path.join(findCgroup2Root(), `sigil-bench-${process.pid}`);
  mkdirSync(cgroup);
  const rules = ruleSet(port);
  const results = { tcp: { baseline: [], enforced: [] }, udp: { baseline: [], enforced: [] } };

  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const protocol of ['tcp', 'udp']) {
        results[protocol].baseline.push(runLoop(binary, cgroup, protocol, port));
        const datapath = Datapath.load();
        try {
          datapath.applyRuleSet(rules);
          datapath.attachProcessTracking();
          datapath.attachSocketPrograms(cgroup);
          datapath.setIdentity(process.pid, SUBJECT);
          results[protocol].enforced.push(runLoop(binary, cgroup, protocol, port));
        } finally {
          datapath.close();
        }
      }
    }
  } finally {
    listener.kill();
    rmdirSync(cgroup);
  }

  console.log(`connect() cost, ${rules.ruleCount} rules over ${IDENTITIES} identities, ${ROUNDS} rounds of ${CONNECTS} connects`);
  console.log(`kernel ${os.release()}, ${os.cpus().length} CPUs (${os.cpus()[0].model})`);
  for (const protocol of ['tcp', 'udp']) {
    const baseline = median(results[protocol].baseline);
    const enforced = median(results[protocol].enforced);
    const ratios = results[protocol].enforced.map((e, i) => e / results[protocol].baseline[i]);
    console.log(
      `${protocol}: baseline ${baseline.toFixed(0)} ns/connect, enforced ${enforced.toFixed(0)} ns/connect, ` +
        `ratio of medians ${(enforced / baseline).toFixed(3)}, per-round ratios ${ratios.map((r) => r.toFixed(3)).join(' ')}`,
    );
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
