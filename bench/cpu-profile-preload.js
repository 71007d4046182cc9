'use strict';
// Preloaded into the agent by bench/events-kernel.ts --profile (node --require).
// node --cpu-prof cannot be used there: its SIGPROF sampling interrupts the BPF
// verifier, and program loads fail with EAGAIN. This starts the V8 sampling
// profiler on SIGUSR2, after the agent has loaded its programs, and writes
// the profile to $SIGIL_BENCH_PROFILE_DIR/agent-<pid>.cpuprofile at exit.
const { Session } = require('node:inspector');
const { writeFileSync } = require('node:fs');
const { join } = require('node:path');

const dir = process.env.SIGIL_BENCH_PROFILE_DIR;
const session = new Session();
session.connect();
let started = false;

process.on('SIGUSR2', () => {
  if (started) return;
  started = true;
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 200 });
  session.post('Profiler.start');
});

process.on('exit', () => {
  if (!started) return;
  // Posts of an in-process session complete synchronously, so this runs before the exit.
  session.post('Profiler.stop', (error, result) => {
    if (error) return;
    writeFileSync(join(dir, `agent-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
  });
});
