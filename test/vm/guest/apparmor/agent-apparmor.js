// Runs in the test VM (Linux 6.1 booted with AppArmor), as root in /sigil.
// Starts the real agent (`node bin/sigil run`) with a registration that ties
// two SPIFFE IDs to two executables (copies of busybox named cat) and a
// policy per ID. The agent must load one AppArmor profile per ID with the
// real apparmor_parser. Then checks what the kernel lets each executable
// open: the enforce-mode profile allows one file and denies others with
// EACCES, and the complain-mode profile allows and logs. Finally changes
// the policies and checks that the agent replaces and removes its profiles
// and leaves a profile it did not create alone. Last, records a workload
// with `sigil apparmor record`, loads the recorded profile, and checks that
// the workload runs again under it while a program it never ran is denied.
// Writes every check to $SIGIL_VM_RESULTS/checks.json, with the agent log
// and the kernel log.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const { createChecks, sleep, waitFor } = require('../agent/guest-common');

const RESULTS = process.env.SIGIL_VM_RESULTS;
const ROOT = '/opt/sigil-aa';
const CONFIG = '/tmp/sigil-aa';
const WEB_ID = 'spiffe://example.org/aa/web';
const AUDIT_ID = 'spiffe://example.org/aa/audit';
const RECORDED_ID = 'spiffe://example.org/aa/recorded';
const RECORDED_PROFILE = 'sigil.example.org.aa.recorded';
const RECORDED_UID = 4400;
const WEB_PROFILE = 'sigil.example.org.aa.web';
const AUDIT_PROFILE = 'sigil.example.org.aa.audit';
const FOREIGN_PROFILE = 'not-sigil-test';
const STALE_PROFILE = 'sigil.example.org.aa.stale';
const FILES = {
  webCat: `${ROOT}/web/cat`,
  webEnv: `${ROOT}/web/env`,
  blocked: `${ROOT}/bin/true`,
  recordedSleep: `${ROOT}/tools/sleep`,
  recordedTrue: `${ROOT}/tools/true`,
  recordedProfile: '/tmp/recorded.profile',
  auditCat: `${ROOT}/audit/cat`,
  auditSleep: `${ROOT}/audit/sleep`,
  allowed: `${ROOT}/data/allowed.txt`,
  secret: `${ROOT}/data/secret.txt`,
  other: `${ROOT}/data/other.txt`,
  sharedOpen: `${ROOT}/data/shared/open.txt`,
  sharedLocked: `${ROOT}/data/shared/locked.txt`,
  registration: `${CONFIG}/registration.yaml`,
  policies: `${CONFIG}/policies`,
};
const AGENT_LOG = '/tmp/agent-apparmor.log';
const PARSER = '/usr/sbin/apparmor_parser';
const WAIT_MS = 60_000;

const { checks, check } = createChecks();
const timings = {};

function agentLog() {
  return fs.existsSync(AGENT_LOG) ? fs.readFileSync(AGENT_LOG, 'utf8') : '';
}

/** Returns the loaded profiles as a map of name to mode. */
function loadedProfiles() {
  const text = fs.readFileSync('/sys/kernel/security/apparmor/profiles', 'utf8');
  const profiles = new Map();
  for (const line of text.split('\n').filter(Boolean)) {
    const end = line.lastIndexOf(' (');
    profiles.set(line.slice(0, end), line.slice(end + 2, -1));
  }
  return profiles;
}

/** Runs one of the cat copies on a file and returns its status, output and error text. */
function cat(executable, file) {
  const result = spawnSync(executable, [file], { encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr.trim() };
}

function dmesg() {
  return spawnSync('dmesg', [], { encoding: 'utf8' }).stdout;
}

function policyText(name, spiffeId, spec) {
  return [
    'apiVersion: sigil.dev/v1alpha1',
    'kind: IdentityPolicy',
    `metadata: {name: ${name}}`,
    'spec:',
    `  subject: {spiffeId: "${spiffeId}"}`,
    ...spec,
    '',
  ].join('\n');
}

function webPolicy(allowed) {
  return policyText('web', WEB_ID, [
    '  filePosture: Block',
    '  file:',
    `    - {name: data, action: Allow, paths: [${allowed.join(', ')}]}`,
    `    - {name: no-secret, action: Block, paths: [${FILES.secret}]}`,
    `    - {name: shared, action: Allow, directories: [${ROOT}/data/shared]}`,
    `    - {name: no-locked, action: Block, paths: [${FILES.sharedLocked}]}`,
    '  processPosture: Block',
    '  process:',
    `    - {name: audit-tools, action: Allow, directories: [${ROOT}/audit]}`,
    `    - {name: no-true, action: Block, paths: [${FILES.blocked}]}`,
    '  egress:',
    '    - {name: https, action: Allow, protocol: TCP, ports: [443]}',
  ]);
}

function makeFixtures() {
  for (const directory of [ROOT, CONFIG]) fs.rmSync(directory, { recursive: true, force: true });
  for (const directory of [`${ROOT}/web`, `${ROOT}/audit`, `${ROOT}/bin`, `${ROOT}/tools`, `${ROOT}/data/shared`, FILES.policies]) {
    fs.mkdirSync(directory, { recursive: true });
  }
  // busybox runs the applet named by the executable's file name, so each copy is `cat`.
  const executables = [FILES.webCat, FILES.webEnv, FILES.auditCat, FILES.auditSleep, FILES.blocked, FILES.recordedSleep, FILES.recordedTrue];
  for (const executable of executables) {
    fs.copyFileSync('/bin/busybox', executable);
    fs.chmodSync(executable, 0o755);
  }
  for (const file of [FILES.allowed, FILES.secret, FILES.other, FILES.sharedOpen, FILES.sharedLocked]) {
    fs.writeFileSync(file, `contents of ${file}\n`);
  }
  fs.writeFileSync(
    FILES.registration,
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: Registration',
      'entries:',
      `  - {spiffeId: "${WEB_ID}", selectors: ["unix:path:${FILES.webCat}"]}`,
      `  - {spiffeId: "${WEB_ID}", selectors: ["unix:path:${FILES.webEnv}"]}`,
      `  - {spiffeId: "${AUDIT_ID}", selectors: ["unix:path:${FILES.auditCat}"]}`,
      `  - {spiffeId: "${AUDIT_ID}", selectors: ["unix:path:${FILES.auditSleep}"]}`,
      `  - {spiffeId: "${RECORDED_ID}", selectors: ["unix:uid:${RECORDED_UID}"]}`,
      '',
    ].join('\n'),
  );
  fs.writeFileSync(`${FILES.policies}/web.yaml`, webPolicy([FILES.allowed]));
  fs.writeFileSync(
    `${FILES.policies}/audit.yaml`,
    policyText('audit', AUDIT_ID, [
      '  filePosture: Audit',
      '  file:',
      `    - {name: data, action: Allow, paths: [${FILES.allowed}]}`,
      `    - {name: no-secret, action: Block, paths: [${FILES.secret}]}`,
    ]),
  );
}

/** Loads a profile with the parser directly, as another tool on the node would. */
function loadForeignProfile(name) {
  const file = `/tmp/${name}.profile`;
  fs.writeFileSync(file, `profile ${name} {\n  file,\n}\n`);
  return spawnSync(PARSER, ['-r', '-K', file], { encoding: 'utf8' });
}

async function startAgent() {
  const output = fs.openSync(AGENT_LOG, 'w');
  const child = spawn(
    process.execPath,
    [
      'bin/sigil', 'run',
      '--registration', FILES.registration,
      '--policy', FILES.policies,
      // Without pinning the agent does not use BPF LSM, so every file and exec denial here
      // comes from AppArmor, and the BPF rules of the identity before an exec's attestation
      // cannot deny the exec of another identity's executable.
      '--no-pin',
      '--state-dir', '/tmp/sigil-aa-state',
      '--socket', '/tmp/sigil-aa.sock',
      '--events-log', '/tmp/sigil-aa-events.jsonl',
    ],
    { stdio: ['ignore', output, output] },
  );
  const agent = { child, exit: null };
  child.once('exit', (code, signal) => (agent.exit = { code, signal }));
  const started = await waitFor(() => agent.exit || agentLog().includes('"msg":"agent started"'));
  agent.ready = started === true;
  return agent;
}

async function checkConfinement() {
  const allowed = cat(FILES.webCat, FILES.allowed);
  check('the enforce profile lets web open the allowed file', allowed.status === 0 && allowed.stdout.includes('contents of'), allowed);
  const secret = cat(FILES.webCat, FILES.secret);
  check('the deny rule fails the secret with EACCES', secret.status !== 0 && secret.stderr.includes('Permission denied'), secret);
  const other = cat(FILES.webCat, FILES.other);
  check('the allow-list fails another file with EACCES', other.status !== 0 && other.stderr.includes('Permission denied'), other);
  const shared = cat(FILES.webCat, FILES.sharedOpen);
  check('the directory rule lets web open a file in it', shared.status === 0, shared);
  const locked = cat(FILES.webCat, FILES.sharedLocked);
  check('a Block rule inside an allowed directory fails with EACCES', locked.status !== 0 && locked.stderr.includes('Permission denied'), locked);
  const denial = await waitFor(() => dmesg().split('\n').find((line) => line.includes('apparmor="DENIED"') && line.includes(`profile="${WEB_PROFILE}"`) && line.includes(`name="${FILES.secret}"`)), 5000);
  check('the kernel logs the denial of the secret', denial, denial);

  // web/env runs its argument with exec in the same process, so the child's label is the
  // label after the exec. It is read from outside, because until the agent attests the new
  // program the BPF LSM still applies the web identity's file rules to it.
  const sleeper = spawn(FILES.webEnv, [FILES.auditSleep, '30'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let sleeperStderr = '';
  let sleeperExit = null;
  sleeper.stderr.on('data', (chunk) => (sleeperStderr += chunk));
  sleeper.once('exit', (code, signal) => (sleeperExit = { code, signal }));
  const readLabel = () => {
    try {
      return fs.readFileSync(`/proc/${sleeper.pid}/attr/current`, 'utf8').trim();
    } catch (error) {
      return `unreadable: ${error.code}`;
    }
  };
  const label = await waitFor(() => sleeperExit || (readLabel().startsWith(AUDIT_PROFILE) ? readLabel() : null), 5000);
  sleeper.kill('SIGKILL');
  check('exec of the audit executable moves to its profile', label === `${AUDIT_PROFILE} (complain)`, { label, exit: sleeperExit, stderr: sleeperStderr });
  const blockedExec = spawnSync(FILES.webEnv, [FILES.blocked], { encoding: 'utf8' });
  check('the exec deny rule fails with EACCES', blockedExec.status !== 0 && blockedExec.stderr.includes('Permission denied'), { status: blockedExec.status, stderr: blockedExec.stderr });
  const unlisted = spawnSync(FILES.webEnv, ['/bin/busybox', 'true'], { encoding: 'utf8' });
  check('the exec allow-list fails another program with EACCES', unlisted.status !== 0 && unlisted.stderr.includes('Permission denied'), { status: unlisted.status, stderr: unlisted.stderr });

  const logged = cat(FILES.auditCat, FILES.other);
  check('the complain profile lets audit open another file', logged.status === 0 && logged.stdout.includes('contents of'), logged);
  // Linux 6.1 turns every denial of a complain-mode profile into a logged allow, explicit deny
  // rules included, so the generator reports Block rules there as audited.
  const complainDenied = cat(FILES.auditCat, FILES.secret);
  const complainLine = await waitFor(() => dmesg().split('\n').find((line) => line.includes('apparmor="ALLOWED"') && line.includes(`profile="${AUDIT_PROFILE}"`) && line.includes(`name="${FILES.secret}"`)), 5000);
  check('a deny rule only logs in complain mode', complainDenied.status === 0 && complainLine, { complainDenied, complainLine });
  const allowedLine = await waitFor(() => dmesg().split('\n').find((line) => line.includes('apparmor="ALLOWED"') && line.includes(`profile="${AUDIT_PROFILE}"`) && line.includes(`name="${FILES.other}"`)), 5000);
  check('the kernel logs the complain-mode access', allowedLine, allowedLine);
}

/**
 * Runs the workload as RECORDED_UID, which gives it the recorded SPIFFE ID. With `profile`,
 * the shell first requests that profile for its next exec, as a container runtime does.
 */
function runWorkload(command, profile) {
  const prefix = profile ? `echo -n "exec ${profile}" > /proc/self/attr/exec && ` : '';
  const script = `${prefix}exec /bin/busybox sh -c '${command}'`;
  return spawnSync('/bin/busybox', ['sh', '-c', script], { uid: RECORDED_UID, gid: RECORDED_UID, encoding: 'utf8' });
}

/** Records the workload with `sigil apparmor record`, loads the profile and runs the workload again. */
async function checkRecording() {
  const started = Date.now();
  const recorder = spawn(
    process.execPath,
    ['bin/sigil', 'apparmor', 'record', '--subject', RECORDED_ID, '--duration', '8', '--registration', FILES.registration, '--socket', '/tmp/sigil-aa.sock', '--out', FILES.recordedProfile],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let recorderStderr = '';
  recorder.stderr.on('data', (chunk) => (recorderStderr += chunk));
  const recorderExit = new Promise((resolve) => recorder.once('exit', (code) => resolve(code)));
  // node and the gRPC client take seconds to start under TCG, and the stream must be live first.
  const live = await waitFor(() => recorderStderr.includes('recording '), 30_000);
  check('sigil apparmor record subscribes to the agent', live, recorderStderr);
  const recorded = runWorkload(`${FILES.recordedSleep} 0.5`, null);
  const recorderStatus = await recorderExit;
  timings.recordSeconds = (Date.now() - started) / 1000;
  check('sigil apparmor record writes a profile', recorded.status === 0 && recorderStatus === 0 && fs.existsSync(FILES.recordedProfile), { workload: recorded.status, recorder: recorderStatus, stderr: recorderStderr });
  if (!fs.existsSync(FILES.recordedProfile)) return;
  const profile = fs.readFileSync(FILES.recordedProfile, 'utf8');
  fs.writeFileSync(`${RESULTS}/recorded.profile`, profile);
  check('the recorded profile allows the recorded program', profile.includes(`"${FILES.recordedSleep}" mrix,`), profile);
  const load = spawnSync(PARSER, ['-r', '-K', FILES.recordedProfile], { encoding: 'utf8' });
  check('the recorded profile loads', load.status === 0, load.stderr);

  const again = runWorkload(`${FILES.recordedSleep} 0.5`, RECORDED_PROFILE);
  check('the recorded workload runs again under its profile', again.status === 0, { status: again.status, stderr: again.stderr });
  const never = runWorkload(FILES.recordedTrue, RECORDED_PROFILE);
  check('the recorded profile denies a program it never ran', never.status !== 0 && never.stderr.includes('Permission denied'), { status: never.status, stderr: never.stderr });
  const unconfined = runWorkload(FILES.recordedTrue, null);
  check('the same program runs without the profile', unconfined.status === 0, { status: unconfined.status, stderr: unconfined.stderr });
}

async function main() {
  // Without auditd the kernel prints audit lines through printk's rate limit (10 lines per
  // 5 s by default), which would drop the AppArmor lines that the checks look for.
  fs.writeFileSync('/proc/sys/kernel/printk_ratelimit_burst', '10000');
  const lsm = fs.readFileSync('/sys/kernel/security/lsm', 'utf8');
  check('the kernel lists apparmor among the active LSMs', lsm.split(',').includes('apparmor'), lsm);
  makeFixtures();
  for (const stale of ['/tmp/sigil-aa-state', '/tmp/sigil-aa.sock']) fs.rmSync(stale, { recursive: true, force: true });

  const foreign = loadForeignProfile(FOREIGN_PROFILE);
  const stale = loadForeignProfile(STALE_PROFILE);
  check('the test loads a foreign and a stale profile', foreign.status === 0 && stale.status === 0, { foreign: foreign.stderr, stale: stale.stderr });

  const started = Date.now();
  const agent = await startAgent();
  timings.agentStartSeconds = (Date.now() - started) / 1000;
  check('the agent starts', agent.ready === true, agent.exit ?? agentLog().slice(-3000));

  const profiles = loadedProfiles();
  check('the agent loads the web profile in enforce mode', profiles.get(WEB_PROFILE) === 'enforce', [...profiles]);
  check('the agent loads the audit profile in complain mode', profiles.get(AUDIT_PROFILE) === 'complain', [...profiles]);
  check('the agent removes the stale Sigil profile', !profiles.has(STALE_PROFILE), [...profiles]);
  check('the agent keeps the foreign profile', profiles.has(FOREIGN_PROFILE), [...profiles]);
  const log = agentLog();
  check('the agent logs what AppArmor enforces per rule', log.includes('"rule":"no-secret"') && log.includes('AppArmor enforces'), '');
  check('the agent logs what AppArmor cannot express', log.includes('"status":"cannot-express"') && log.includes('cannot express ports 443'), '');

  await checkConfinement();

  // Allowing the other file changes the web profile, so the agent replaces it.
  fs.writeFileSync(`${FILES.policies}/web.yaml`, webPolicy([FILES.allowed, FILES.other]));
  const replaced = await waitFor(() => agentLog().includes('AppArmor profile replaced'));
  check('the agent replaces the changed profile', replaced, agentLog().slice(-3000));
  const otherAfter = cat(FILES.webCat, FILES.other);
  check('the replaced profile allows the other file', otherAfter.status === 0, otherAfter);

  fs.rmSync(`${FILES.policies}/audit.yaml`);
  // The agent also logged a removal at start (the stale profile), so wait for this one by name.
  const removed = await waitFor(() => agentLog().split('\n').some((line) => line.includes('AppArmor profiles removed') && line.includes(`"${AUDIT_PROFILE}"`)));
  const afterRemoval = loadedProfiles();
  check('the agent removes the profile of a deleted policy', removed && !afterRemoval.has(AUDIT_PROFILE), [...afterRemoval]);
  check('the foreign profile stays after removals', afterRemoval.has(FOREIGN_PROFILE), [...afterRemoval]);
  check('the web profile stays loaded', afterRemoval.get(WEB_PROFILE) === 'enforce', [...afterRemoval]);

  await checkRecording();

  agent.child.kill('SIGTERM');
  await waitFor(() => agent.exit, 20_000);
}

main()
  .catch((error) => check('the guest script runs to the end', false, String(error && error.stack)))
  .finally(() => {
    fs.writeFileSync(`${RESULTS}/checks.json`, JSON.stringify({ checks, timings }, null, 2));
    fs.writeFileSync(`${RESULTS}/agent.log`, agentLog());
    fs.writeFileSync(`${RESULTS}/dmesg.txt`, dmesg());
    process.exit(0);
  });
