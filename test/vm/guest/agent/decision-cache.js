// Runs in the test VM (Linux 6.1 with BPF LSM), as root in /sigil. Starts the
// real agent (`node bin/sigil run`) with two identities keyed by cgroup, whose
// file rules allow one directory and block another. Then it makes each change
// that gives a file another path or the process another verdict: a rename of a
// parent directory, a bind mount, a moved mount, a chroot, a rule reload and an
// identity change. Before each change the subject opens the file until its
// allow is cached, and right after it the next open must fail with EPERM. It
// also checks that exact-file rules and Block records still apply in a
// directory whose verdict is cached.
// Writes every check to $SIGIL_VM_RESULTS/checks.json for
// test/vm/decision-cache.test.ts.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { SubjectChannel, createChecks, readJsonLines, sleep, waitFor } = require('./guest-common');

const RESULTS = process.env.SIGIL_VM_RESULTS;
const ROOT = '/tmp/sigil-cache';
const ALLOWED = `${ROOT}/allow`;
const BLOCKED = `${ROOT}/block`;
const JAIL = `${ROOT}/jail`;
// A directory that A's directory rule allows, containing a file that A's exact-file rule blocks.
const EXACT = `${ALLOWED}/exact`;
const EXACT_BLOCKED = `${EXACT}/blocked`;
const REGISTRATION = `${ROOT}/registration.yaml`;
const POLICY_DIRECTORY = `${ROOT}/policies`;
const POLICY = `${POLICY_DIRECTORY}/cache.yaml`;
const CGROUP_ROOT = '/sys/fs/cgroup';
const CGROUP_A = 'sigil-cache-a';
const CGROUP_B = 'sigil-cache-b';
const SPIFFE_A = 'spiffe://example.org/cache-a';
const SPIFFE_B = 'spiffe://example.org/cache-b';
const EVENTS_LOG = '/tmp/cache-events.jsonl';
const AGENT_LOG = '/tmp/cache-agent.log';
const SUBJECT_SCRIPT = path.join(__dirname, 'subject.js');
const WAIT_MS = 60_000;
// Opens before a change: the first two are decided (the second stores the allow), the third hits the cache.
const OPENS_BEFORE_CHANGE = 3;

const { checks, check } = createChecks();

function readEvents() {
  return readJsonLines(EVENTS_LOG);
}

/** Runs a command and returns { status, stderr }; throws when it cannot start. */
function run(command, args) {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.error) throw result.error;
  return { status: result.status, stderr: result.stderr.trim() };
}

/** Writes file, creating its directory. */
function writeFile(file) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `contents of ${file}\n`);
}

/** Writes the policy: A allows ALLOWED and blocks BLOCKED and /sub (a path inside the jail); B blocks ALLOWED. */
function writePolicy(extraBlockedDirectories = []) {
  const blockedOfA = [BLOCKED, '/sub', ...extraBlockedDirectories];
  fs.writeFileSync(
    POLICY,
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: IdentityPolicy',
      'metadata: {name: cache-a}',
      'spec:',
      `  subject: {spiffeId: ${SPIFFE_A}}`,
      '  filePosture: Audit',
      '  file:',
      `    - {name: allowed, action: Allow, directories: [${ALLOWED}, ${JAIL}], recursive: true}`,
      `    - {name: blocked, action: Block, directories: [${blockedOfA.join(', ')}], recursive: true}`,
      `    - {name: exact-blocked, action: Block, paths: [${EXACT_BLOCKED}]}`,
      '---',
      'apiVersion: sigil.dev/v1alpha1',
      'kind: IdentityPolicy',
      'metadata: {name: cache-b}',
      'spec:',
      `  subject: {spiffeId: ${SPIFFE_B}}`,
      '  file:',
      `    - {name: blocked, action: Block, directories: [${ALLOWED}], recursive: true}`,
      '',
    ].join('\n'),
  );
}

function makeFixtures() {
  spawnSync('umount', ['-l', `${BLOCKED}/moved`]);
  spawnSync('umount', ['-l', `${BLOCKED}/bound`]);
  spawnSync('umount', ['-l', `${ALLOWED}/mount`]);

  fs.rmSync(ROOT, { recursive: true, force: true });
  for (const directory of [
    ROOT,
    ALLOWED,
    BLOCKED,
    POLICY_DIRECTORY,
    `${BLOCKED}/bound`,
    `${BLOCKED}/moved`,
  ]) {
    fs.mkdirSync(directory, { recursive: true });
  }
  for (const file of [
    'renamed/file',
    'bound/file',
    'reload/file',
    'identity/file',
    'exact/file',
    'exact/blocked',
  ]) {
    writeFile(`${ALLOWED}/${file}`);
  }

  writeFile(`${JAIL}/sub/file`);
  // busybox-static runs inside the jail without shared libraries
  fs.mkdirSync(`${JAIL}/bin`);
  fs.copyFileSync(fs.realpathSync('/bin/busybox'), `${JAIL}/bin/busybox`);
  fs.chmodSync(`${JAIL}/bin/busybox`, 0o755);

  for (const cgroup of [CGROUP_A, CGROUP_B]) {
    fs.mkdirSync(`${CGROUP_ROOT}/${cgroup}`, { recursive: true });
  }
  fs.writeFileSync(
    REGISTRATION,
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: Registration',
      'trustDomain: example.org',
      'entries:',
      `  - spiffeId: ${SPIFFE_A}`,
      `    selectors: [cgroup:path:/${CGROUP_A}]`,
      `  - spiffeId: ${SPIFFE_B}`,
      `    selectors: [cgroup:path:/${CGROUP_B}]`,
      '',
    ].join('\n'),
  );
  writePolicy();
}

/** subject.js as root in cgroup A, with a request channel. */
class Subject extends SubjectChannel {
  constructor() {
    const script = `echo $$ > ${CGROUP_ROOT}/${CGROUP_A}/cgroup.procs && exec "$0" "$@"`;
    super(
      spawn('sh', ['-c', script, process.execPath, SUBJECT_SCRIPT], {
        cwd: '/',
        stdio: ['pipe', 'pipe', 'pipe'],
      }),
    );
  }

  /** Opens file for reading OPENS_BEFORE_CHANGE times and returns the replies that were not ok. */
  async openRepeatedly(file) {
    const failures = [];
    for (let i = 0; i < OPENS_BEFORE_CHANGE; i++) {
      const reply = await this.request({ op: 'open', path: file, flags: 'r' });
      if (!reply.ok) failures.push(reply);
    }
    return failures;
  }
}

/**
 * Opens before, makes the change, and opens after: before must succeed every time, after must
 * fail with EPERM. name is the change, as it reads in the check names.
 */
async function checkChange(subject, name, before, change, after) {
  const failures = await subject.openRepeatedly(before);
  check(`opens succeed before ${name}`, failures.length === 0, failures);
  const changed = await change();
  check(`${name} succeeds`, changed.status === 0, changed);
  const reply = await subject.request({ op: 'open', path: after, flags: 'r' });
  check(`open fails with EPERM right after ${name}`, reply.code === 'EPERM', reply);
}

/** Starts `sigil run`, which watches its files, and waits until it logs that it started or it exits. */
async function startAgent() {
  const output = fs.openSync(AGENT_LOG, 'w');
  const agent = {
    child: spawn(
      process.execPath,
      [
        'bin/sigil',
        'run',
        '--registration',
        REGISTRATION,
        '--policy',
        POLICY_DIRECTORY,
        '--bpffs-dir',
        '/sys/fs/bpf/sigil-cache',
        '--state-dir',
        '/tmp/sigil-cache-state',
        '--socket',
        '/tmp/sigil-cache.sock',
        '--events-log',
        EVENTS_LOG,
      ],
      { stdio: ['ignore', output, output] },
    ),
    exit: null,
  };
  agent.child.once('exit', (code, signal) => (agent.exit = { code, signal }));
  const started = await waitFor(
    () => agent.exit || fs.readFileSync(AGENT_LOG, 'utf8').includes('"msg":"agent started"'),
  );
  agent.ready = started === true;
  return agent;
}

/** Counts the denied file events of path in the events log. */
function countDeniedEvents(file) {
  return readEvents().filter(
    (event) =>
      event.type === 'file' &&
      event.result === 'denied' &&
      event.object &&
      event.object.path === file,
  ).length;
}

/** Counts the agent log lines with message msg (and pid, when given). */
function countLogLines(msg, pid) {
  return fs
    .readFileSync(AGENT_LOG, 'utf8')
    .split('\n')
    .filter(
      (line) =>
        line.includes(`"msg":"${msg}"`) && (pid === undefined || line.includes(`"pid":${pid},`)),
    ).length;
}

async function main() {
  makeFixtures();
  for (const stale of [
    '/tmp/sigil-cache-state',
    EVENTS_LOG,
    '/tmp/sigil-cache.sock',
    '/sys/fs/bpf/sigil-cache',
  ]) {
    fs.rmSync(stale, { recursive: true, force: true });
  }
  const agent = await startAgent();
  check(
    'the agent starts',
    agent.ready,
    agent.exit ?? fs.readFileSync(AGENT_LOG, 'utf8').slice(-2000),
  );
  if (!agent.ready) return;
  check(
    'the agent attaches the BPF LSM programs',
    fs.readFileSync(AGENT_LOG, 'utf8').includes('attached the BPF LSM programs'),
    '',
  );

  const subject = new Subject();
  const hello = await subject.next();
  const attested = await waitFor(() =>
    readEvents().find(
      (event) =>
        event.type === 'exec' &&
        event.process &&
        event.process.pid === hello.pid &&
        event.subject &&
        event.subject.spiffeId === SPIFFE_A,
    ),
  );
  check('the agent attests the subject as identity A', Boolean(attested), { pid: hello.pid });
  writeFile(`${BLOCKED}/control`);
  const control = await subject.request({ op: 'open', path: `${BLOCKED}/control`, flags: 'r' });
  check(
    'a control open in the blocked directory fails with EPERM',
    control.code === 'EPERM',
    control,
  );

  // Each Block decision writes a record, also when the directory's verdict comes from the cache.
  // The control open's record is awaited first, so that the count starts from every earlier one.
  await waitFor(() => countDeniedEvents(`${BLOCKED}/control`) >= 1);
  const blockedBefore = countDeniedEvents(`${BLOCKED}/control`);
  const blockedReplies = [];
  for (let i = 0; i < OPENS_BEFORE_CHANGE; i++) {
    blockedReplies.push(
      await subject.request({ op: 'open', path: `${BLOCKED}/control`, flags: 'r' }),
    );
  }
  check(
    'repeated opens in the blocked directory fail with EPERM',
    blockedReplies.every((reply) => reply.code === 'EPERM'),
    blockedReplies,
  );
  const recorded = await waitFor(
    () => countDeniedEvents(`${BLOCKED}/control`) >= blockedBefore + OPENS_BEFORE_CHANGE,
  );
  check('each repeated blocked open writes a record', recorded === true, {
    before: blockedBefore,
    after: countDeniedEvents(`${BLOCKED}/control`),
  });

  // The directory's Allow verdict is cached by now, and the exact-file rule must still apply.
  const exactFailures = await subject.openRepeatedly(`${EXACT}/file`);
  check(
    'opens succeed next to a file with an exact-file rule',
    exactFailures.length === 0,
    exactFailures,
  );
  const exact = await subject.request({ op: 'open', path: EXACT_BLOCKED, flags: 'r' });
  check('open of the exact-file Block rule fails with EPERM', exact.code === 'EPERM', exact);
  // link() creates a name without a rename or mount change, so the cached verdict stays valid.
  fs.linkSync(EXACT_BLOCKED, `${EXACT}/link`);
  const linkFailures = await subject.openRepeatedly(`${EXACT}/file`);
  check('opens succeed before a hard link is made', linkFailures.length === 0, linkFailures);
  const linked = await subject.request({ op: 'open', path: `${EXACT}/link`, flags: 'r' });
  check('open of a new hard link to that file fails with EPERM', linked.code === 'EPERM', linked);

  await checkChange(
    subject,
    'a rename of the parent directory into the blocked directory',
    `${ALLOWED}/renamed/file`,
    async () => {
      fs.renameSync(`${ALLOWED}/renamed`, `${BLOCKED}/renamed`);
      return { status: 0 };
    },
    `${BLOCKED}/renamed/file`,
  );

  await checkChange(
    subject,
    'a bind mount of the parent directory into the blocked directory',
    `${ALLOWED}/bound/file`,
    async () => run('mount', ['-o', 'bind', `${ALLOWED}/bound`, `${BLOCKED}/bound`]),
    `${BLOCKED}/bound/file`,
  );

  fs.mkdirSync(`${ALLOWED}/mount`);
  const mounted = run('mount', ['-t', 'tmpfs', 'tmpfs', `${ALLOWED}/mount`]);
  check('a tmpfs mounts in the allowed directory', mounted.status === 0, mounted);
  writeFile(`${ALLOWED}/mount/directory/file`);
  await checkChange(
    subject,
    'a move of the mount into the blocked directory',
    `${ALLOWED}/mount/directory/file`,
    async () => run('mount', ['-o', 'move', `${ALLOWED}/mount`, `${BLOCKED}/moved`]),
    `${BLOCKED}/moved/directory/file`,
  );

  // Outside the jail the path is under the allowed JAIL; inside it is /sub/file, which A blocks.
  const outside = [];
  for (let i = 0; i < OPENS_BEFORE_CHANGE; i++) {
    const reply = await subject.request({
      op: 'exec',
      path: '/bin/busybox',
      args: ['cat', `${JAIL}/sub/file`],
    });
    if (reply.status !== 0) outside.push(reply);
  }
  check('opens succeed before a chroot', outside.length === 0, outside);
  const jailed = await subject.request({
    op: 'exec',
    path: '/bin/busybox',
    args: ['chroot', JAIL, '/bin/busybox', 'cat', '/sub/file'],
  });
  check(
    'open fails with EPERM right after a chroot',
    jailed.status === 1 && /Operation not permitted/.test(jailed.stderr ?? ''),
    jailed,
  );

  // NOTE: a reload also renames the agent's status file, which empties the cache on its own, so
  // this check passes even if the cache key lacked the rule-set generation.
  const reloads = countLogLines('configuration reloaded');
  await checkChange(
    subject,
    'a rule reload that blocks the directory',
    `${ALLOWED}/reload/file`,
    async () => {
      writePolicy([`${ALLOWED}/reload`]);
      const reloaded = await waitFor(() => countLogLines('configuration reloaded') > reloads);
      return { status: reloaded ? 0 : 1 };
    },
    `${ALLOWED}/reload/file`,
  );

  await checkChange(
    subject,
    'an identity change to identity B',
    `${ALLOWED}/identity/file`,
    async () => {
      fs.writeFileSync(`${CGROUP_ROOT}/${CGROUP_B}/cgroup.procs`, String(hello.pid));
      const changed = await waitFor(
        () => countLogLines('identity changed after a cgroup move', hello.pid) > 0,
      );
      return { status: changed ? 0 : 1 };
    },
    `${ALLOWED}/identity/file`,
  );

  agent.child.kill('SIGTERM');
  await waitFor(() => agent.exit, 10_000);
  subject.child.stdin.end();
}

main()
  .catch((error) => check('the guest script runs to the end', false, String(error && error.stack)))
  .finally(() => {
    fs.writeFileSync(path.join(RESULTS, 'checks.json'), JSON.stringify({ checks }, null, 2));
    for (const file of [AGENT_LOG, EVENTS_LOG]) {
      if (fs.existsSync(file)) fs.copyFileSync(file, path.join(RESULTS, path.basename(file)));
    }
    process.exit(0);
  });
