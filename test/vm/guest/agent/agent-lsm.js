// Runs in the test VM (Linux 6.1 with BPF LSM), as root in /sigil. Starts the
// real agent (`node bin/sigil run`) with a registration that gives uid 4300 a
// SPIFFE ID and a policy with process and file rules for it. Then checks what
// the kernel lets that uid do, what the events log records, and that the
// denials stay after the agent is killed with SIGKILL and after a restart.
// Writes every check to $SIGIL_VM_RESULTS/checks.json, with the agent logs
// and the events log, for test/vm/agent-lsm.test.ts to assert on. Exits 0
// once the results are written.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { SubjectChannel, createChecks, readJsonLines, sleep, waitFor } = require('./guest-common');

const RESULTS = process.env.SIGIL_VM_RESULTS;
const SUBJECT_UID = 4300;
const OTHER_UID = 4301;
const SPIFFE_ID = 'spiffe://example.org/lsm-subject';
const ROOT = '/tmp/sigil-agent-lsm';
const FILES = {
  registration: `${ROOT}/registration.yaml`,
  policy: `${ROOT}/policy.yaml`,
  blockedBinary: '/tmp/blocked/true',
  hardlinkBinary: '/tmp/blocked-links/hardlink-true',
  symlinkBinary: '/tmp/blocked-links/symlink-true',
  freeBinary: '/tmp/free/true',
  secret: `${ROOT}/files/secret.txt`,
  readOnly: `${ROOT}/files/read-only.txt`,
};
const EVENTS_LOG = '/tmp/events.jsonl';
const AGENT_LOG = '/tmp/agent.log';
const RESTART_LOG = '/tmp/agent-restart.log';
const SUBJECT_SCRIPT = path.join(__dirname, 'subject.js');
const WAIT_MS = 60_000;
// Listeners of the guest script (root, no SPIFFE ID); the policy blocks the subject's connects to the first.
const BLOCKED_PORT = 7101;
const OPEN_PORT = 7102;

const { checks, check } = createChecks();
const timings = {};

function readEvents() {
  return readJsonLines(EVENTS_LOG);
}

function makeFixtures() {
  for (const directory of [ROOT, `${ROOT}/files`, '/tmp/blocked', '/tmp/blocked-links', '/tmp/free']) {
    fs.rmSync(directory, { recursive: true, force: true });
    fs.mkdirSync(directory, { recursive: true, mode: 0o755 });
    fs.chmodSync(directory, 0o755);
  }
  for (const binary of [FILES.blockedBinary, FILES.freeBinary]) {
    fs.copyFileSync('/bin/true', binary);
    fs.chmodSync(binary, 0o755);
  }
  fs.linkSync(FILES.blockedBinary, FILES.hardlinkBinary);
  fs.symlinkSync(FILES.blockedBinary, FILES.symlinkBinary);
  for (const file of [FILES.secret, FILES.readOnly]) {
    fs.writeFileSync(file, `contents of ${path.basename(file)}\n`);
    fs.chmodSync(file, 0o666);
  }
  fs.writeFileSync(
    FILES.registration,
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: Registration',
      'trustDomain: example.org',
      'entries:',
      `  - spiffeId: ${SPIFFE_ID}`,
      '    selectors:',
      `      - unix:uid:${SUBJECT_UID}`,
      '',
    ].join('\n'),
  );
  fs.writeFileSync(
    FILES.policy,
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: IdentityPolicy',
      'metadata:',
      '  name: lsm-subject',
      'spec:',
      '  subject:',
      `    spiffeId: ${SPIFFE_ID}`,
      '  process:',
      '    - name: no-blocked-true',
      '      action: Block',
      `      paths: [${FILES.blockedBinary}]`,
      '  file:',
      '    - name: no-secret',
      '      action: Block',
      `      paths: [${FILES.secret}]`,
      '    - name: read-only',
      '      action: Audit',
      '      readOnly: true',
      `      paths: [${FILES.readOnly}]`,
      '  egress:',
      '    - name: no-blocked-port',
      '      action: Block',
      '      to: {cidrs: [127.0.0.1]}',
      `      ports: [${BLOCKED_PORT}]`,
      '      protocol: TCP',
      '',
    ].join('\n'),
  );
}

/** The subject process (subject.js) running as SUBJECT_UID, with a request channel. */
class Subject extends SubjectChannel {
  constructor() {
    super(
      spawn(process.execPath, [SUBJECT_SCRIPT], {
        uid: SUBJECT_UID,
        gid: SUBJECT_UID,
        cwd: '/',
        stdio: ['pipe', 'pipe', 'pipe'],
      }),
    );
  }
}

/** Runs the exec and open checks as the subject; suffix names the phase (with the agent, or after SIGKILL). */
async function checkDenials(subject, suffix) {
  const blocked = await subject.request({ op: 'exec', path: FILES.blockedBinary });
  check(`exec of the blocked binary fails with EPERM ${suffix}`, blocked.code === 'EPERM', blocked);
  const hardlink = await subject.request({ op: 'exec', path: FILES.hardlinkBinary });
  check(`exec of a hard link fails with EPERM ${suffix}`, hardlink.code === 'EPERM', hardlink);
  const symlink = await subject.request({ op: 'exec', path: FILES.symlinkBinary });
  check(`exec of a symlink fails with EPERM ${suffix}`, symlink.code === 'EPERM', symlink);
  const free = await subject.request({ op: 'exec', path: FILES.freeBinary });
  check(`exec of a copy in another file runs ${suffix}`, free.ok === true, free);
  const secret = await subject.request({ op: 'open', path: FILES.secret, flags: 'r' });
  check(`open of the blocked file fails with EPERM ${suffix}`, secret.code === 'EPERM', secret);
  const read = await subject.request({ op: 'open', path: FILES.readOnly, flags: 'r' });
  check(`read of the readOnly file succeeds ${suffix}`, read.ok === true, read);
  const write = await subject.request({ op: 'open', path: FILES.readOnly, flags: 'r+' });
  check(`write open of the readOnly file fails with EPERM ${suffix}`, write.code === 'EPERM', write);
  const blockedConnect = await subject.request({ op: 'connect', host: '127.0.0.1', port: BLOCKED_PORT });
  check(`connect to the blocked port fails with EPERM ${suffix}`, blockedConnect.code === 'EPERM', blockedConnect);
  const openConnect = await subject.request({ op: 'connect', host: '127.0.0.1', port: OPEN_PORT });
  check(`connect to another port succeeds ${suffix}`, openConnect.ok === true, openConnect);
  const other = spawnSync(FILES.blockedBinary, [], { uid: OTHER_UID, gid: OTHER_UID, stdio: 'ignore' });
  check(`another uid runs the blocked binary ${suffix}`, !other.error && other.status === 0, {
    status: other.status,
    error: other.error && other.error.code,
  });
}

/** Starts `sigil run` with its log in logFile and waits until it logs that it started or it exits. */
async function startAgent(logFile) {
  const output = fs.openSync(logFile, 'w');
  const agent = {
    child: spawn(
      process.execPath,
      [
        'bin/sigil', 'run',
        '--registration', FILES.registration,
        '--policy', FILES.policy,
        '--bpffs-dir', '/sys/fs/bpf/sigil',
        '--state-dir', '/tmp/sigil-state',
        '--socket', '/tmp/sigil.sock',
        '--events-log', EVENTS_LOG,
        '--no-watch',
      ],
      { stdio: ['ignore', output, output] },
    ),
    exit: null,
    ready: false,
  };
  agent.child.once('exit', (code, signal) => (agent.exit = { code, signal }));
  const started = await waitFor(() => agent.exit || fs.readFileSync(logFile, 'utf8').includes('"msg":"agent started"'));
  agent.ready = started === true;
  return agent;
}

/** Starts a TCP listener on 127.0.0.1:port that accepts and closes connections. */
function listen(port) {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => socket.destroy());
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  makeFixtures();
  const listeners = [await listen(BLOCKED_PORT), await listen(OPEN_PORT)];
  for (const server of listeners) server.unref();
  for (const stale of ['/tmp/sigil-state', EVENTS_LOG, '/tmp/sigil.sock']) fs.rmSync(stale, { recursive: true, force: true });
  fs.rmSync('/sys/fs/bpf/sigil', { recursive: true, force: true });
  check('the kernel lists bpf among the active LSMs', fs.readFileSync('/sys/kernel/security/lsm', 'utf8').split(',').includes('bpf'), fs.readFileSync('/sys/kernel/security/lsm', 'utf8'));

  const started = Date.now();
  const agent = await startAgent(AGENT_LOG);
  timings.agentStartSeconds = (Date.now() - started) / 1000;
  const ready = agent.ready;
  const log = fs.readFileSync(AGENT_LOG, 'utf8');
  check('the agent starts', ready === true, agent.exit ?? log.slice(-2000));
  check('the agent attaches the BPF LSM programs', log.includes('attached the BPF LSM programs'), '');
  check(
    'the agent does not warn about process and file rules',
    !/(process|file) rule "[^"]+" of policy "[^"]+": no enforcer/.test(log),
    log.split('\n').filter((line) => line.includes('no enforcer')),
  );
  if (ready !== true) return;

  const subject = new Subject();
  const hello = await subject.next();
  check('subject.js starts as the subject uid', hello.ready === true, hello);
  // The agent attests the new process after its exec; its exec event carries the SPIFFE ID.
  const attested = await waitFor(() =>
    readEvents().find((event) => event.type === 'exec' && event.process && event.process.pid === hello.pid && event.subject && event.subject.spiffeId === SPIFFE_ID),
  );
  check('the agent attests the subject', Boolean(attested), { pid: hello.pid });

  const checksStarted = Date.now();
  await checkDenials(subject, 'with the agent running');
  timings.checksSeconds = (Date.now() - checksStarted) / 1000;

  const lsmEvents = await waitFor(() => {
    const events = readEvents().filter((event) => event.enforcer === 'bpf-lsm');
    const exec = events.find((event) => event.type === 'exec' && event.result === 'denied');
    const file = events.find((event) => event.type === 'file' && event.result === 'denied' && event.object && event.object.path === FILES.secret);
    const write = events.find((event) => event.type === 'file' && event.result === 'denied' && event.object && event.object.path === FILES.readOnly);
    const connect = events.find((event) => event.type === 'connect' && event.result === 'denied' && event.connection && event.connection.port === BLOCKED_PORT);
    return exec && file && write && connect ? { exec, file, write, connect } : null;
  }, 10_000);
  const found = lsmEvents || {};
  check('the events log has a denied exec event by bpf-lsm', Boolean(found.exec), found.exec);
  check(
    'the exec event names the subject, rule and program',
    found.exec && found.exec.subject.spiffeId === SPIFFE_ID && found.exec.policy && found.exec.policy.name === 'lsm-subject' &&
      found.exec.policy.rule === 'no-blocked-true' && found.exec.errno === 1 && found.exec.process.uid === SUBJECT_UID,
    found.exec,
  );
  check('the events log has a denied file event by bpf-lsm', Boolean(found.file), found.file);
  check(
    'the file event names the subject, rule and path',
    found.file && found.file.subject.spiffeId === SPIFFE_ID && found.file.policy && found.file.policy.rule === 'no-secret' &&
      found.file.errno === 1 && found.file.action === 'block',
    found.file,
  );
  check('the readOnly write denial names its rule', found.write && found.write.policy && found.write.policy.rule === 'read-only', found.write);
  check(
    'the events log has a denied connect event by the bpf-lsm socket_connect hook',
    found.connect && found.connect.enforcer === 'bpf-lsm' && found.connect.policy && found.connect.policy.rule === 'no-blocked-port' &&
      found.connect.subject.spiffeId === SPIFFE_ID && found.connect.errno === 1,
    found.connect,
  );
  const connectEnforcers = new Set(readEvents().filter((event) => event.type === 'connect').map((event) => event.enforcer));
  check('no connect is decided by the cgroup programs', !connectEnforcers.has('cgroup-sock'), [...connectEnforcers]);
  // This script's listener (no SPIFFE ID) accepted the subject's connect to the open port.
  const accept = await waitFor(
    () => readEvents().find((event) => event.type === 'accept' && event.connection && event.connection.localPort === OPEN_PORT),
    10_000,
  );
  check(
    'the events log has an accept event naming the subject as the client',
    accept && accept.subject.spiffeId === '' && accept.connection.peerSpiffeId === SPIFFE_ID &&
      accept.connection.peerPid === hello.pid && accept.connection.address === '127.0.0.1' && accept.result === 'allowed',
    accept,
  );

  agent.child.kill('SIGKILL');
  const killed = await waitFor(() => agent.exit);
  check('the agent dies from SIGKILL', killed && killed.signal === 'SIGKILL', killed);
  await checkDenials(subject, 'after the agent was killed');

  // A restarted agent adopts the pinned state and replaces the LSM link pins with its own.
  const restarted = await startAgent(RESTART_LOG);
  check('a restarted agent starts', restarted.ready === true, restarted.exit ?? fs.readFileSync(RESTART_LOG, 'utf8').slice(-2000));
  const lsmPins = fs.readdirSync('/sys/fs/bpf/sigil/links').filter((name) => name.startsWith('sigil_lsm_'));
  check(
    'a restarted agent replaces the LSM link pins',
    lsmPins.length === 4 && lsmPins.every((name) => name.endsWith(`-${restarted.child.pid}`)),
    lsmPins,
  );
  await checkDenials(subject, 'after an agent restart');
  restarted.child.kill('SIGTERM');
  await waitFor(() => restarted.exit, 10_000);
  subject.child.stdin.end();
}

main()
  .catch((error) => check('the guest script runs to the end', false, String(error && error.stack)))
  .finally(() => {
    fs.writeFileSync(path.join(RESULTS, 'checks.json'), JSON.stringify({ checks, timings }, null, 2));
    for (const file of [AGENT_LOG, RESTART_LOG, EVENTS_LOG]) {
      if (fs.existsSync(file)) fs.copyFileSync(file, path.join(RESULTS, path.basename(file)));
    }
    process.exit(0);
  });
