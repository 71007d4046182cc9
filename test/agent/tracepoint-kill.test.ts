import { execFileSync } from 'node:child_process';
import {
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditEvent } from '../../src/events/audit-event';
import { AgentProcess, SIGIL } from '../helpers/agent-process';
import { TestCgroups } from '../helpers/cgroups';
import { spawnInCgroup, Workload } from '../helpers/workloads';

// The real agent on this kernel, which refuses BPF LSM programs: exec and
// file rules are enforced by the tracepoint-kill programs, which end a
// process of the subject with SIGKILL after a blocked exec or open.

const TD = 'spiffe://sigil-test.example';
const A = `${TD}/tp/a`;
const B = `${TD}/tp/b`;
const BASH = realpathSync('/bin/bash');
// 128 + SIGKILL, the status bash reports for a child killed by SIGKILL.
const KILLED = 137;

let work: string;
let cgroups: TestCgroups;
let agent: AgentProcess;
let a: Workload;
let b: Workload;
const shells: Workload[] = [];

const path = (name: string) => join(work, name);

function registration(): string {
  return [
    'apiVersion: sigil.dev/v1alpha1',
    'kind: Registration',
    'entries:',
    `  - spiffeId: ${A}`,
    `    selectors: [cgroup:path:${cgroups.relative}/a]`,
    `  - spiffeId: ${B}`,
    `    selectors: [cgroup:path:${cgroups.relative}/b]`,
  ].join('\n');
}

function policy(): string {
  return `apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata:
  name: tp-a
spec:
  subject:
    spiffeId: ${A}
  filePosture: Audit
  process:
    - name: no-blocked
      action: Block
      paths: [${path('bin/blocked')}, ${path('bin/blocked-touch')}]
  file:
    - name: no-secret
      action: Block
      paths: [${path('secret.txt')}]
    - name: ro
      action: Allow
      readOnly: true
      paths: [${path('ro.txt')}]
    - name: no-tree
      action: Block
      directories: [${path('tree')}]
      recursive: true
    - name: no-flat
      action: Block
      directories: [${path('flat')}]
`;
}

/** Starts a bash in a cgroup that runs each line it reads in a subshell and prints its status. */
async function startShell(cgroup: string, expectedId: string): Promise<Workload> {
  const script = 'while read -r line; do ( eval "$line" ) >/dev/null 2>&1; echo "status $?"; done';
  const shell = spawnInCgroup(cgroups.path(cgroup), [BASH, '-c', script]);
  shells.push(shell);
  expect(await agent.identityOf(shell.pid, BASH)).toBe(expectedId);
  return shell;
}

/** Runs a command line in a shell's subshell and returns its exit status. */
async function run(shell: Workload, line: string): Promise<number> {
  const before = shell.lines.length;
  shell.send(line);
  const result = await shell.waitForLine(`status of ${line}`, (l) => shell.lines.indexOf(l) >= before && l.startsWith('status '));
  shell.lines.splice(0, shell.lines.length);
  return Number(result.split(' ')[1]);
}

function killedEvent(rule: string, objectPath: string) {
  return (event: AuditEvent) =>
    event.enforcer === 'tracepoint-kill' &&
    event.result === 'killed' &&
    event.policy?.rule === rule &&
    (event.object?.path === objectPath || (event.type === 'exec' && event.process?.executable === objectPath));
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'sigil-tp-'));
  mkdirSync(path('bin'));
  execFileSync('cp', [realpathSync('/bin/true'), path('bin/blocked')]);
  symlinkSync(path('bin/blocked'), path('bin/symlink'));
  linkSync(path('bin/blocked'), path('bin/hardlink'));
  execFileSync('cp', [realpathSync('/bin/true'), path('bin/allowed')]);
  execFileSync('cp', [realpathSync('/usr/bin/touch'), path('bin/blocked-touch')]);
  execFileSync('cc', ['-O2', '-Wall', '-Werror', '-o', path('bin/ia32_open'), join(__dirname, 'fixtures', 'ia32_open.c')]);
  writeFileSync(path('secret.txt'), 'secret\n');
  writeFileSync(path('ro.txt'), 'read me\n');
  writeFileSync(path('open.txt'), 'anyone\n');
  mkdirSync(path('tree/deep'), { recursive: true });
  writeFileSync(path('tree/top.txt'), 'x\n');
  writeFileSync(path('tree/deep/inner.txt'), 'x\n');
  mkdirSync(path('flat/sub'), { recursive: true });
  writeFileSync(path('flat/direct.txt'), 'x\n');
  writeFileSync(path('flat/sub/nested.txt'), 'x\n');

  cgroups = new TestCgroups('sigil-tp');
  for (const name of ['a', 'b']) cgroups.create(name);
  writeFileSync(path('registration.yaml'), registration());
  writeFileSync(path('policy.yaml'), policy());
  agent = AgentProcess.spawn(['--registration', path('registration.yaml'), '--policy', path('policy.yaml')], path('sigil.sock'));
  await agent.ready();
  a = await startShell('a', A);
  b = await startShell('b', B);
});

afterAll(async () => {
  for (const shell of shells) shell.kill();
  await agent?.stop();
  cgroups?.remove(['a', 'b']);
  rmSync(work, { recursive: true, force: true });
});

describe('tracepoint-kill on exec', () => {
  it('is chosen by the agent on this kernel', () => {
    expect(agent.stderr).toContain('attached the tracepoint-kill programs');
    expect(agent.stderr).toContain('process rules: enforced by tracepoint-kill');
    expect(agent.stderr).toContain('file rules: enforced by tracepoint-kill');
  });

  it('kills the subject executing a blocked binary', async () => {
    expect(await run(a, path('bin/blocked'))).toBe(KILLED);
    const event = await agent.waitForEvent('kill event of the exec', killedEvent('no-blocked', path('bin/blocked')));
    expect(event.type).toBe('exec');
    expect(event.result).toBe('killed');
    expect(event.action).toBe('block');
    expect(event.subject?.spiffeId).toBe(A);
    expect(event.policy?.name).toBe('tp-a');
    expect(event.errno).toBeUndefined();
  });

  it('kills the blocked program before it does anything', async () => {
    expect(await run(a, `${path('bin/blocked-touch')} ${path('touched')}`)).toBe(KILLED);
    expect(existsSync(path('touched'))).toBe(false);
    expect(await run(b, `${path('bin/blocked-touch')} ${path('touched')}`)).toBe(0);
    expect(existsSync(path('touched'))).toBe(true);
  });

  it('lets another identity execute it', async () => {
    expect(await run(b, path('bin/blocked'))).toBe(0);
    // The agent handles records in order: the event of a later kill means B's exec was seen.
    const isKill = killedEvent('no-blocked', path('bin/blocked'));
    const before = agent.events.filter(isKill).length;
    expect(await run(a, path('bin/blocked'))).toBe(KILLED);
    await agent.waitForEvent('a later kill event', (e) => isKill(e) && agent.events.filter(isKill).indexOf(e) >= before);
    expect(agent.events.filter((e) => e.subject?.spiffeId === B && e.enforcer === 'tracepoint-kill')).toEqual([]);
  });

  it('lets the subject execute another copy', async () => {
    expect(await run(a, path('bin/allowed'))).toBe(0);
  });

  it('kills through a symlink and a hard link', async () => {
    expect(await run(a, path('bin/symlink'))).toBe(KILLED);
    expect(await run(a, path('bin/hardlink'))).toBe(KILLED);
    await agent.waitForEvent('kill event of the hard link', killedEvent('no-blocked', path('bin/hardlink')));
  });
});

describe('tracepoint-kill on open', () => {
  it('kills the subject opening a blocked file', async () => {
    expect(await run(a, `cat ${path('secret.txt')}`)).toBe(KILLED);
    const event = await agent.waitForEvent('kill event of the open', killedEvent('no-secret', path('secret.txt')));
    expect(event.type).toBe('file');
    expect(event.result).toBe('killed');
    expect(event.object?.operation).toBe('open');
    expect(event.subject?.spiffeId).toBe(A);
  });

  it('kills an open through the i386 system calls', async () => {
    // The syscalls/sys_exit_* tracepoints skip i386 calls, which a 64-bit process can make with int 0x80.
    expect(await run(a, `${path('bin/ia32_open')} ${path('secret.txt')} open`)).toBe(KILLED);
    const event = await agent.waitForEvent(
      'kill event of the i386 open',
      (e) => killedEvent('no-secret', path('secret.txt'))(e) && e.message?.startsWith('open of ') === true,
    );
    expect(event.subject?.spiffeId).toBe(A);
    expect(await run(a, `${path('bin/ia32_open')} ${path('secret.txt')} openat`)).toBe(KILLED);
    await agent.waitForEvent(
      'kill event of the i386 openat',
      (e) => killedEvent('no-secret', path('secret.txt'))(e) && e.message?.startsWith('openat of ') === true,
    );
    expect(await run(b, `${path('bin/ia32_open')} ${path('secret.txt')} open`)).toBe(0);
  });

  it('lets the subject open it with O_PATH', async () => {
    const script = `import os; os.open(${JSON.stringify(path('secret.txt'))}, os.O_PATH)`;
    expect(await run(a, `python3 -c '${script}'`)).toBe(0);
  });

  it('lets another identity open it', async () => {
    expect(await run(b, `cat ${path('secret.txt')}`)).toBe(0);
  });

  it('allows reads of a readOnly file and kills on write', async () => {
    expect(await run(a, `cat ${path('ro.txt')}`)).toBe(0);
    expect(await run(a, `echo more >> ${path('ro.txt')}`)).toBe(KILLED);
    expect(await run(a, `: > ${path('ro.txt')}`)).toBe(KILLED);
    const event = await agent.waitForEvent('kill event of the write', killedEvent('ro', path('ro.txt')));
    expect(event.message).toContain('for write');
    // The open succeeded before the kill: O_TRUNC truncated the file, but nothing was written.
    expect(readFileSync(path('ro.txt'), 'utf8')).toBe('');
  });

  it('reports an unmatched open by the Audit posture without a kill', async () => {
    expect(await run(a, `cat ${path('open.txt')}`)).toBe(0);
    const event = await agent.waitForEvent('posture event', (e) => e.enforcer === 'tracepoint-kill' && e.object?.path === path('open.txt'));
    expect(event.result).toBe('allowed');
    expect(event.action).toBe('audit');
    expect(event.policy?.reason).toBe('posture');
  });

  it('covers a whole subtree with a recursive directory rule', async () => {
    expect(await run(a, `cat ${path('tree/top.txt')}`)).toBe(KILLED);
    expect(await run(a, `cat ${path('tree/deep/inner.txt')}`)).toBe(KILLED);
    expect(await run(a, `ls ${path('tree')}`)).toBe(KILLED);
    expect(await run(b, `cat ${path('tree/deep/inner.txt')}`)).toBe(0);
  });

  it('covers only direct entries with a non-recursive rule', async () => {
    expect(await run(a, `cat ${path('flat/direct.txt')}`)).toBe(KILLED);
    expect(await run(a, `cat ${path('flat/sub/nested.txt')}`)).toBe(0);
  });

  it('matches a relative path by its inode', async () => {
    expect(await run(a, `cd ${path('tree/deep')} && cat ./inner.txt`)).toBe(KILLED);
    await agent.waitForEvent('kill event of the relative open', killedEvent('no-tree', './inner.txt'));
  });
});

describe('tracepoint-kill without the agent', () => {
  it('reports the enforced rules with sigil status', () => {
    const output = execFileSync(
      process.execPath,
      [SIGIL, 'status', '--bpffs-dir', agent.pinDir, '--state-dir', agent.stateDir, '--json'],
      { encoding: 'utf8' },
    );
    const status = JSON.parse(output);
    expect(status.enforcement.kinds).toEqual({
      egress: 'cgroup-sock',
      ingress: null,
      process: 'tracepoint-kill',
      file: 'tracepoint-kill',
      capability: null,
    });
    const states = Object.fromEntries(
      status.enforcement.rules.map((rule: { rule: string; state: string }) => [rule.rule, rule.state]),
    );
    expect(states).toEqual({ 'no-blocked': 'enforce', 'no-secret': 'enforce', ro: 'enforce', 'no-tree': 'enforce', 'no-flat': 'enforce' });
    const programs = status.pinned.links.map((link: { program: string }) => link.program);
    expect(programs).toContain('sigil_tp_exec');
    expect(programs).toContain('sigil_tp_openat');
    expect(programs).toContain('sigil_tp_sys_exit_ia32');
    const text = execFileSync(
      process.execPath,
      [SIGIL, 'status', '--bpffs-dir', agent.pinDir, '--state-dir', agent.stateDir],
      { encoding: 'utf8' },
    );
    expect(text).toContain('  process: enforced by tracepoint-kill\n');
    expect(text).toContain(`    tp-a/no-blocked: enforce (${path('policy.yaml')}:`);
  });

  it('keeps killing after the agent is killed with SIGKILL', async () => {
    await agent.kill();
    expect(readdirSync(join(agent.pinDir, 'links')).some((name) => name.startsWith('sigil_tp_exec-'))).toBe(true);
    expect(await run(a, path('bin/blocked'))).toBe(KILLED);
    expect(await run(a, `cat ${path('secret.txt')}`)).toBe(KILLED);
    expect(await run(b, path('bin/blocked'))).toBe(0);
  });

  it('keeps killing after a restarted agent adopts the pins', async () => {
    const killed = agent;
    rmSync(killed.socketPath, { force: true });
    agent = AgentProcess.spawn(killed.args, killed.socketPath, killed.pinDir);
    await agent.ready();
    const pins = readdirSync(join(agent.pinDir, 'links')).filter((name) => name.startsWith('sigil_tp_'));
    expect(pins.length).toBeGreaterThanOrEqual(2);
    expect(pins.every((name) => name.endsWith(`-${agent.child.pid}`))).toBe(true);
    expect(await run(a, path('bin/blocked'))).toBe(KILLED);
    const event = await agent.waitForEvent('kill event after restart', killedEvent('no-blocked', path('bin/blocked')));
    expect(event.subject?.spiffeId).toBe(A);
  });

  it('stops killing after uninstall once the agent exits', async () => {
    await agent.stop();
    expect(existsSync(agent.pinDir)).toBe(false);
    expect(existsSync(join(agent.stateDir, 'enforcement.json'))).toBe(false);
    // The kernel releases a link when its last reference goes, which can trail the agent's exit.
    let status = KILLED;
    for (let attempt = 0; attempt < 50 && status !== 0; attempt++) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 100));
      status = await run(a, path('bin/blocked'));
    }
    expect(status).toBe(0);
  });
});
