import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentProcess, SIGIL } from '../helpers/agent-process';
import { TestCgroups } from '../helpers/cgroups';
import {
  Workload,
  clientArgv,
  connectFrom,
  listenerArgv,
  spawnInCgroup,
  spawnWorkload,
} from '../helpers/workloads';

// The real agent on the running kernel: identities from a registration file
// (cgroup and uid selectors), a policy keyed by SPIFFE ID, and connects
// between real processes decided by the cgroup connect4 program.

const TD = 'spiffe://sigil-test.example';
const A = `${TD}/workload/a`;
const B = `${TD}/workload/b`;
const C = `${TD}/workload/c`;
const D = `${TD}/workload/d`;
const D_UID = 4243;
const BASE_PORT = 20000 + (process.pid % 20000);
const PORT_B = BASE_PORT;
const PORT_C = BASE_PORT + 1;
const PORT_D = BASE_PORT + 2;
const PORT_REUSE = BASE_PORT + 3;

let work: string;
let cgroups: TestCgroups;
let agent: AgentProcess;
let policyFile: string;
const workloads: Workload[] = [];
let a: Workload;

function registration(): string {
  return [
    'apiVersion: sigil.dev/v1alpha1',
    'kind: Registration',
    'entries:',
    ...['a', 'b', 'c'].flatMap((name) => [
      `  - spiffeId: ${TD}/workload/${name}`,
      `    selectors: [cgroup:path:${cgroups.relative}/${name}]`,
    ]),
    `  - spiffeId: ${D}`,
    `    selectors: [unix:uid:${D_UID}]`,
  ].join('\n');
}

function policy(extraAllow = ''): string {
  return `apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata:
  name: a-egress
spec:
  subject:
    spiffeId: ${A}
  egressPosture: Block
  egress:
    - name: a-to-b
      action: Allow
      to:
        spiffeId: ${B}
      ports: [${PORT_B}, ${PORT_REUSE}]
      protocol: TCP
${extraAllow}`;
}

const ALLOW_C = `    - name: a-to-c
      action: Allow
      to:
        spiffeId: ${C}
`;

function connectEventsFrom(pid: number, port: number) {
  return agent.events.filter(
    (event) => event.type === 'connect' && event.process?.pid === pid && event.connection?.port === port,
  );
}

async function startWorkload(workload: Workload, expectedId: string): Promise<Workload> {
  workloads.push(workload);
  expect(await agent.identityOf(workload.pid)).toBe(expectedId);
  return workload;
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'sigil-agent-'));
  cgroups = new TestCgroups('sigil-test');
  for (const name of ['a', 'b', 'c']) cgroups.create(name);
  writeFileSync(join(work, 'registration.yaml'), registration());
  policyFile = join(work, 'policy.yaml');
  writeFileSync(policyFile, policy());

  agent = AgentProcess.spawn(
    ['--registration', join(work, 'registration.yaml'), '--policy', policyFile],
    join(work, 'sigil.sock'),
  );
  await agent.ready();

  const b = await startWorkload(spawnInCgroup(cgroups.path('b'), listenerArgv(PORT_B)), B);
  const c = await startWorkload(spawnInCgroup(cgroups.path('c'), listenerArgv(PORT_C)), C);
  const d = await startWorkload(spawnWorkload(listenerArgv(PORT_D), { uid: D_UID, gid: D_UID }), D);
  for (const listener of [b, c, d]) await listener.waitForLine('listening', (l) => l.startsWith('listening'));
  a = await startWorkload(spawnInCgroup(cgroups.path('a'), clientArgv()), A);
});

afterAll(async () => {
  for (const workload of workloads) workload.kill();
  await agent?.stop();
  cgroups?.remove(['a', 'b', 'c']);
  rmSync(work, { recursive: true, force: true });
});

describe('agent enforcing by SPIFFE ID', () => {
  it('allows A to connect to the listener of B', async () => {
    expect(await connectFrom(a, '127.0.0.1', PORT_B)).toBe(`connect 127.0.0.1:${PORT_B} ok`);
    const event = await agent.waitForEvent('connect event a->b', (e) => connectEventsFrom(a.pid, PORT_B).includes(e));
    expect(event.subject?.spiffeId).toBe(A);
    expect(event.connection?.peerSpiffeId).toBe(B);
    expect(event.result).toBe('allowed');
    expect(event.action).toBe('allow');
    expect(event.policy?.name).toBe('a-egress');
    expect(event.policy?.rule).toBe('a-to-b');
    expect(event.enforcer).toBe('cgroup-sock');
  });

  it('denies A to C with EPERM and reports both SPIFFE IDs', async () => {
    expect(await connectFrom(a, '127.0.0.1', PORT_C)).toBe(`connect 127.0.0.1:${PORT_C} failed EPERM`);
    const event = await agent.waitForEvent('connect event a->c', (e) => connectEventsFrom(a.pid, PORT_C).includes(e));
    expect(event.subject?.spiffeId).toBe(A);
    expect(event.connection?.peerSpiffeId).toBe(C);
    expect(event.connection?.address).toBe('127.0.0.1');
    expect(event.result).toBe('denied');
    expect(event.errno).toBe(1);
    expect(event.action).toBe('block');
    expect(event.policy?.name).toBe('a-egress');
    expect(event.policy?.reason).toBe('posture');
    expect(event.enforcer).toBe('cgroup-sock');
    expect(event.process?.executable).toBe(process.execPath);
  });

  it('denies A to the uid-identified listener D', async () => {
    expect(await connectFrom(a, '127.0.0.1', PORT_D)).toBe(`connect 127.0.0.1:${PORT_D} failed EPERM`);
    const event = await agent.waitForEvent('connect event a->d', (e) => connectEventsFrom(a.pid, PORT_D).includes(e));
    expect(event.connection?.peerSpiffeId).toBe(D);
  });

  it('gives a forked child of A the identity of A in the kernel', async () => {
    // bash forks a subshell for ( ... ) without exec, so the subshell's only
    // identity is the one the fork program copied from its parent.
    const script = `read go; ( exec 3<>/dev/tcp/127.0.0.1/${PORT_C} && echo "child $BASHPID ok" || echo "child $BASHPID failed" )`;
    const shell = spawnInCgroup(cgroups.path('a'), ['/bin/bash', '-c', script]);
    workloads.push(shell);
    expect(await agent.identityOf(shell.pid, realpathSync('/bin/bash'))).toBe(A);
    shell.send('go');
    const line = await shell.waitForLine('subshell result', (l) => l.startsWith('child '));
    const childPid = Number(line.split(' ')[1]);
    expect(childPid).not.toBe(shell.pid);
    expect(line).toBe(`child ${childPid} failed`);
    const event = await agent.waitForEvent('connect event of the subshell', (e) => e.type === 'connect' && e.process?.pid === childPid);
    expect(event.subject?.spiffeId).toBe(A);
    expect(event.result).toBe('denied');
    expect(agent.events.some((e) => e.type === 'exec' && e.process?.pid === childPid)).toBe(false);
  });

  it('applies an edited policy file without a restart', async () => {
    const seen = agent.events.length;
    writeFileSync(policyFile, policy(ALLOW_C));
    await agent.waitForEvent('reload event', (e) => agent.events.indexOf(e) >= seen && e.type === 'agent' && /reloaded/.test(e.message ?? ''));
    expect(await connectFrom(a, '127.0.0.1', PORT_C)).toBe(`connect 127.0.0.1:${PORT_C} ok`);
  });

  it("keeps a listener owner's SPIFFE ID when the owner exits and its pid is reused", async () => {
    // The owner binds and listens, forks a child that keeps the socket, and exits.
    const owner = spawnInCgroup(cgroups.path('b'), [
      'python3',
      '-c',
      HANDOFF_LISTENER,
      String(PORT_REUSE),
    ]);
    workloads.push(owner);
    const ownerPid = Number(
      (await owner.waitForLine('owner pid', (l) => l.startsWith('owner '))).split(' ')[1],
    );
    await owner.waitForLine('holder', (l) => l.startsWith('holder '));
    if (owner.child.exitCode === null) await new Promise((done) => owner.child.once('exit', done));

    // A process of another identity (C, which A may not reach) takes the owner's pid.
    const reuser = await spawnWithPid(ownerPid, () =>
      spawnInCgroup(cgroups.path('c'), ['sleep', '60']),
    );
    workloads.push(reuser);
    expect(await agent.identityOf(ownerPid, realpathSync('/bin/sleep'))).toBe(C);

    expect(await connectFrom(a, '127.0.0.1', PORT_REUSE)).toBe(
      `connect 127.0.0.1:${PORT_REUSE} ok`,
    );
    const event = await agent.waitForEvent('connect event a->reused', (e) =>
      connectEventsFrom(a.pid, PORT_REUSE).includes(e),
    );
    expect(event.connection?.peerSpiffeId).toBe(B);
    expect(event.connection?.peerPid).toBe(ownerPid);
  });

  it('attests a process again when it moves to another cgroup', async () => {
    // Starts as C, which no policy restricts, then moves into A's cgroup; A may not reach D.
    const mover = await startWorkload(spawnInCgroup(cgroups.path('c'), clientArgv()), C);
    expect(await connectFrom(mover, '127.0.0.1', PORT_D)).toBe(`connect 127.0.0.1:${PORT_D} ok`);
    writeFileSync(join(cgroups.path('a'), 'cgroup.procs'), String(mover.pid));
    const changed = `identity of pid ${mover.pid} changed to ${A} after a move to cgroup ${cgroupId('a')}`;
    await agent.waitForEvent('identity change after the move', (e) => e.type === 'agent' && e.message === changed);
    expect(await connectFrom(mover, '127.0.0.1', PORT_D)).toBe(`connect 127.0.0.1:${PORT_D} failed EPERM`);
    const event = await agent.waitForEvent('connect event after the move', (e) =>
      connectEventsFrom(mover.pid, PORT_D).includes(e) && e.result === 'denied',
    );
    expect(event.subject?.spiffeId).toBe(A);
  });

  it('decides a connect to 0.0.0.0 as one to 127.0.0.1', async () => {
    // The kernel sends it to the loopback listener, so the peer rule a-to-c must match.
    expect(await connectFrom(a, '0.0.0.0', PORT_C)).toBe(`connect 0.0.0.0:${PORT_C} ok`);
    const event = await agent.waitForEvent(
      'connect event to 0.0.0.0',
      (e) => e.type === 'connect' && e.process?.pid === a.pid && e.connection?.port === PORT_C && e.policy?.rule === 'a-to-c',
    );
    expect(event.connection?.address).toBe('127.0.0.1');
    expect(event.connection?.peerSpiffeId).toBe(C);
  });

  it('rejects an invalid edit and keeps the last good policy', async () => {
    const seen = agent.events.length;
    writeFileSync(policyFile, policy(ALLOW_C).replace('action: Allow', 'action: Permit'));
    const rejected = await agent.waitForEvent('reject event', (e) => agent.events.indexOf(e) >= seen && e.type === 'agent' && /rejected/.test(e.message ?? ''));
    expect(rejected.message).toContain(`${policyFile}:`);
    expect(rejected.message).toContain('Permit');
    expect(await connectFrom(a, '127.0.0.1', PORT_C)).toBe(`connect 127.0.0.1:${PORT_C} ok`);
    expect(await connectFrom(a, '127.0.0.1', PORT_D)).toBe(`connect 127.0.0.1:${PORT_D} failed EPERM`);
  });
});

describe('agent restart and uninstall', () => {
  it('leaves enforcement in place when killed with SIGKILL', async () => {
    await agent.kill();
    expect(readdirSync(join(agent.pinDir, 'links')).length).toBeGreaterThan(0);
    expect(await connectFrom(a, '127.0.0.1', PORT_D)).toBe(`connect 127.0.0.1:${PORT_D} failed EPERM`);
    expect(await connectFrom(a, '127.0.0.1', PORT_B)).toBe(`connect 127.0.0.1:${PORT_B} ok`);
  });

  it('adopts the pinned state when restarted', async () => {
    const killed = agent;
    // The last edit left the policy invalid; the restarted agent gets the last good one.
    writeFileSync(policyFile, policy(ALLOW_C));
    // SIGKILL left the socket file behind; a client must not mistake it for the new agent's.
    rmSync(killed.socketPath, { force: true });
    agent = AgentProcess.spawn(killed.args, killed.socketPath, killed.pinDir);
    await agent.ready();
    const pins = readdirSync(join(agent.pinDir, 'links'));
    expect(pins.every((name) => name.endsWith(`-${agent.child.pid}`))).toBe(true);
    expect(agent.stderr).toContain('adopted the pinned programs and maps');
    expect(await connectFrom(a, '127.0.0.1', PORT_D)).toBe(`connect 127.0.0.1:${PORT_D} failed EPERM`);
    expect(await connectFrom(a, '127.0.0.1', PORT_C)).toBe(`connect 127.0.0.1:${PORT_C} ok`);
    const event = await agent.waitForEvent('connect event after restart', (e) => e.type === 'connect' && e.process?.pid === a.pid);
    expect(event.subject?.spiffeId).toBe(A);
  });

  it('reports the pinned state with sigil status', () => {
    const output = execFileSync(process.execPath, [SIGIL, 'status', '--bpffs-dir', agent.pinDir, '--json'], {
      encoding: 'utf8',
    });
    const status = JSON.parse(output);
    const programs = status.pinned.links.map((link: { program: string }) => link.program);
    expect(programs).toContain('sigil_connect4');
    expect(programs).toContain('sigil_process_fork');
    expect(status.pinned.links.every((link: { agentPid: number }) => link.agentPid === agent.child.pid)).toBe(true);
    expect(status.pinned.generation).toBeGreaterThanOrEqual(1);
    expect(status.pinned.identifiedProcesses).toBeGreaterThanOrEqual(3);
  });

  it('stops enforcing after uninstall once the agent exits', async () => {
    await agent.stop();
    expect(existsSync(agent.pinDir)).toBe(false);
    // The kernel releases a link when its last reference goes, which can trail the agent's exit.
    let result = '';
    for (let attempt = 0; attempt < 50 && result !== `connect 127.0.0.1:${PORT_D} ok`; attempt++) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 100));
      result = await connectFrom(a, '127.0.0.1', PORT_D);
    }
    expect(result).toBe(`connect 127.0.0.1:${PORT_D} ok`);
    const status = spawnSync(process.execPath, [SIGIL, 'status', '--bpffs-dir', agent.pinDir], { encoding: 'utf8' });
    expect(status.status).toBe(1);
    expect(status.stdout).toContain('nothing pinned');
  });
});

/** Runs `sigil run` with args until it exits; returns its exit code and stderr. */
/** Returns a test cgroup's id: the inode number of its directory. */
function cgroupId(name: string): string {
  return execFileSync('stat', ['-c', '%i', cgroups.path(name)], { encoding: 'utf8' }).trim();
}

/** Listens on 127.0.0.1:argv[1], hands the socket to a forked child, and exits. */
const HANDOFF_LISTENER = `
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1])))
s.listen(16)
print('owner', os.getpid(), flush=True)
if os.fork() == 0:
    print('holder', os.getpid(), flush=True)
    while True:
        c, _ = s.accept()
        c.close()
os._exit(0)
`;

/**
 * Starts processes until one gets the given pid: the kernel hands out the pid after the one in
 * ns_last_pid, unless another process on the machine takes it first.
 */
async function spawnWithPid(pid: number, start: () => Workload): Promise<Workload> {
  for (let attempt = 0; attempt < 100; attempt += 1) {
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    const workload = start();
    if (workload.pid === pid) return workload;
    workload.kill();
  }
  throw new Error(`no process got pid ${pid} in 100 attempts`);
}

async function runAgentToExit(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [SIGIL, 'run', '--socket', join(work, 'bad.sock'), '--no-pin', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stderr };
}

describe('agent start with bad input', () => {
  it('exits 1 naming the file and line of an invalid policy', async () => {
    const bad = join(work, 'bad-policy.yaml');
    writeFileSync(bad, policy().replace(`spiffeId: ${A}`, 'spiffeId: spiffe://Bad_Domain/x'));
    const { code, stderr } = await runAgentToExit(['--registration', join(work, 'registration.yaml'), '--policy', bad]);
    expect(code).toBe(1);
    expect(stderr).toMatch(new RegExp(`${bad}:7:\\d+`));
    expect(stderr).toContain('Bad_Domain');
  });

  it('exits 1 naming the file and line of an invalid registration', async () => {
    const bad = join(work, 'bad-registration.yaml');
    writeFileSync(bad, registration().replace(`unix:uid:${D_UID}`, 'unix:uid:-5'));
    const goodPolicy = join(work, 'good-policy.yaml');
    writeFileSync(goodPolicy, policy());
    const { code, stderr } = await runAgentToExit(['--registration', bad, '--policy', goodPolicy]);
    expect(code).toBe(1);
    expect(stderr).toMatch(new RegExp(`${bad}:\\d+:\\d+`));
    expect(stderr).toContain('unix:uid:-5');
  });
});
