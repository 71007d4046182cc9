import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { ClientReadableStream } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditEvent } from '../../src/events/audit-event';
import { watchEvents } from '../../src/events/grpc-client';
import { AgentProcess, waitFor } from '../helpers/agent-process';
import { TestCgroups } from '../helpers/cgroups';
import { spawnInCgroup, Workload } from '../helpers/workloads';

// The real agent on the running kernel: ancestry from its process cache,
// exit and bind events, and kernel-side loss counted per ring buffer while
// process records keep flowing.

const TD = 'spiffe://sigil-test.example';
const A = `${TD}/workload/a`;
const BASH = realpathSync('/bin/bash');
const PYTHON = realpathSync('/usr/bin/python3');
// A port nothing listens on: connects to it fail, but the connect program runs for each one.
const CLOSED_PORT = 21000 + (process.pid % 20000);
const BIND_PORT = CLOSED_PORT + 1;
const FLOOD_CONNECTS = 200_000;
const FLOOD_EXECS = 200;

let work: string;
let cgroups: TestCgroups;
let agent: AgentProcess;
let metricsUrl: string;
/** A second stream of exit and loss events only, which the connect flood cannot crowd out. */
let quiet: ClientReadableStream<AuditEvent>;
const quietEvents: AuditEvent[] = [];
const workloads: Workload[] = [];

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'sigil-process-events-'));
  cgroups = new TestCgroups('sigil-proc');
  cgroups.create('a');
  writeFileSync(
    join(work, 'registration.yaml'),
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: Registration',
      'entries:',
      `  - spiffeId: ${A}`,
      `    selectors: [cgroup:path:${cgroups.relative}/a]`,
    ].join('\n'),
  );
  writeFileSync(
    join(work, 'policy.yaml'),
    `apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata:
  name: unrelated
spec:
  subject:
    spiffeId: ${TD}/workload/unrelated
  egress:
    - name: loopback
      action: Allow
      to:
        cidrs: [127.0.0.1/32]
`,
  );
  agent = AgentProcess.spawn(
    [
      '--registration',
      join(work, 'registration.yaml'),
      '--policy',
      join(work, 'policy.yaml'),
      '--metrics-address',
      '127.0.0.1:0',
    ],
    join(work, 'sigil.sock'),
  );
  await agent.ready();
  const address = await waitFor(
    'the metrics address in the agent log',
    () => /"address":"(127\.0\.0\.1:\d+)","msg":"metrics listening/.exec(agent.stderr)?.[1],
  );
  metricsUrl = `http://${address}/metrics`;

  let live = false;
  quiet = watchEvents({ socketPath: agent.socketPath, types: ['exit', 'loss'] }, (event) =>
    quietEvents.push(event),
  );
  quiet.on('error', () => undefined);
  quiet.once('metadata', () => (live = true));
  await waitFor('the exit and loss stream', () => (live ? true : undefined));
}, 60_000);

afterAll(async () => {
  quiet?.cancel();
  for (const workload of workloads) workload.kill();
  await agent?.stop();
  cgroups?.remove(['a']);
  rmSync(work, { recursive: true, force: true });
});

/** Starts bash with a script in cgroup a and waits until the agent attested it as A. */
async function identifiedBash(script: string): Promise<Workload> {
  const shell = spawnInCgroup(cgroups.path('a'), [BASH, '-c', script]);
  workloads.push(shell);
  expect(await agent.identityOf(shell.pid, BASH)).toBe(A);
  return shell;
}

/** Runs a command outside the test cgroups (so without an identity) until it exits. */
async function runUnidentified(argv: string[]): Promise<number> {
  const child = spawn(argv[0], argv.slice(1), { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid as number;
}

async function scrape(): Promise<string> {
  const response = await fetch(metricsUrl);
  return response.text();
}

function sample(body: string, series: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function exitEvents(match: (event: AuditEvent) => boolean): AuditEvent[] {
  return quietEvents.filter((event) => event.type === 'exit' && match(event));
}

describe('ancestry', () => {
  it('lists bash and the test runner for a forked child', async () => {
    const script = `read go; ( exec 3<>/dev/tcp/127.0.0.1/${CLOSED_PORT} ); echo "child done"`;
    const shell = await identifiedBash(script);
    shell.send('go');
    await shell.waitForLine('subshell result', (line) => line === 'child done');
    const event = await agent.waitForEvent(
      'connect event of the subshell',
      (e) =>
        e.type === 'connect' && e.connection?.port === CLOSED_PORT && e.process?.ppid === shell.pid,
    );
    expect(event.subject?.spiffeId).toBe(A);
    // The subshell never executed a program: the cache gave it bash's, from the fork record.
    expect(event.process?.executable).toBe(BASH);
    const ancestry = event.process?.ancestry ?? [];
    expect(ancestry[0]).toEqual({ pid: shell.pid, executable: BASH, comm: 'bash', spiffeId: A });
    expect(ancestry[1]).toMatchObject({
      pid: process.pid,
      executable: process.execPath,
      spiffeId: '',
    });
    expect(ancestry[2]?.pid).toBe(process.ppid);
    expect(ancestry.length).toBeLessThanOrEqual(8);
    expect(ancestry.at(-1)?.pid === 1 || ancestry.length === 8).toBe(true);
  });

  it('lists bash and the test runner for an executed child', async () => {
    const connect = `import socket; socket.socket().connect_ex(('127.0.0.1', ${CLOSED_PORT + 2}))`;
    const shell = await identifiedBash(`read go; ${PYTHON} -c "${connect}"; echo "child done"`);
    shell.send('go');
    await shell.waitForLine('python result', (line) => line === 'child done');
    const event = await agent.waitForEvent(
      'connect event of python',
      (e) => e.type === 'connect' && e.connection?.port === CLOSED_PORT + 2,
    );
    expect(event.process?.comm).toBe(basename(PYTHON).slice(0, 15));
    expect(event.process?.executable).toBe(PYTHON);
    const ancestry = event.process?.ancestry ?? [];
    expect(ancestry.map((ref) => ref.pid).slice(0, 3)).toEqual([
      shell.pid,
      process.pid,
      process.ppid,
    ]);
    expect(ancestry[0].spiffeId).toBe(A);
  });
});

describe('exit events', () => {
  it('reports exit status and signal of identified processes', async () => {
    const shell = await identifiedBash(
      "read go; /bin/sh -c 'exit 3'; /bin/sh -c 'kill -TERM $$'; echo done",
    );
    shell.send('go');
    await shell.waitForLine('end of the script', (line) => line === 'done');
    const byShell = (e: AuditEvent) => e.process?.ancestry?.[0]?.pid === shell.pid;
    await waitFor('two exit events', () => (exitEvents(byShell).length >= 2 ? true : undefined));
    const [exited, killed] = exitEvents(byShell);
    expect(exited.subject?.spiffeId).toBe(A);
    // The path given to execve(), or the resolved one when attestation read /proc in time.
    expect(['/bin/sh', realpathSync('/bin/sh')]).toContain(exited.process?.executable);
    expect(exited.process?.exitCode).toBe(3);
    expect(exited.process?.exitSignal).toBe(0);
    expect(killed.process?.exitCode).toBe(128 + 15);
    expect(killed.process?.exitSignal).toBe(15);
    expect(killed.process?.ppid).toBe(shell.pid);
    expect(killed.process?.cgroupId).not.toBe('0');
  });

  it('leaves out exits of unidentified processes', async () => {
    const unidentified = await runUnidentified(['/bin/sh', '-c', 'exit 4']);
    // Exit records arrive in order on one ring buffer, so once this later exit is
    // reported, an exit event of the unidentified process would be there too.
    const shell = await identifiedBash('read go; exit 5');
    shell.send('go');
    await waitFor('exit event of the marker shell', () =>
      exitEvents((e) => e.process?.pid === shell.pid).length > 0 ? true : undefined,
    );
    expect(exitEvents((e) => e.process?.pid === unidentified)).toEqual([]);
    expect(exitEvents((e) => e.process?.pid === shell.pid)[0].process?.exitCode).toBe(5);
  });
});

describe('bind events', () => {
  it('reports a bind by an identified process', async () => {
    const bind = `import socket; s = socket.socket(); s.bind(('127.0.0.1', ${BIND_PORT})); s.listen()`;
    const shell = await identifiedBash(`read go; ${PYTHON} -c "${bind}"; echo done`);
    shell.send('go');
    await shell.waitForLine('bind done', (line) => line === 'done');
    const event = await agent.waitForEvent(
      'bind event',
      (e) => e.type === 'bind' && e.connection?.localPort === BIND_PORT,
    );
    expect(event.subject?.spiffeId).toBe(A);
    expect(event.connection?.localAddress).toBe('127.0.0.1');
    expect(event.connection?.protocol).toBe('tcp');
    expect(event.connection?.family).toBe('ipv4');
    expect(event.process?.ancestry?.[0]?.pid).toBe(shell.pid);
    expect(event.enforcer).toBeUndefined();
  });

  it('leaves out binds of unidentified processes', async () => {
    const bind = `import socket; s = socket.socket(); s.bind(('127.0.0.1', ${BIND_PORT + 1}))`;
    await runUnidentified([PYTHON, '-c', bind]);
    const marker = `import socket; s = socket.socket(); s.bind(('127.0.0.1', ${BIND_PORT + 2}))`;
    const shell = await identifiedBash(`read go; ${PYTHON} -c "${marker}"`);
    shell.send('go');
    // Both binds go through the same ring buffer in order.
    await agent.waitForEvent(
      'marker bind',
      (e) => e.type === 'bind' && e.connection?.localPort === BIND_PORT + 2,
    );
    expect(
      agent.events.some((e) => e.type === 'bind' && e.connection?.localPort === BIND_PORT + 1),
    ).toBe(false);
  });
});

describe('connect flood', () => {
  it('counts the dropped connects and loses no process record', async () => {
    const flood = [
      'import socket',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      `for i in range(${FLOOD_CONNECTS}):`,
      `    s.connect(('127.0.0.1', ${CLOSED_PORT}))`,
    ].join('\n');
    writeFileSync(join(work, 'flood.py'), flood);
    const shell = await identifiedBash(
      [
        'read go',
        `${PYTHON} ${join(work, 'flood.py')}`,
        `i=0; while [ $i -lt ${FLOOD_EXECS} ]; do /bin/true; i=$((i+1)); done`,
        'echo done',
      ].join('\n'),
    );
    // The metrics and the exit and loss stream give every count below, so the test process
    // does not decode the flood's connect events.
    agent.stopCollecting();
    const before = await scrape();
    const connectsBefore =
      sample(before, 'sigil_events_total{type="connect",result="allowed"}') ?? 0;

    // A stopped agent reads nothing, so the flood fills the decision ring buffer for certain.
    agent.child.kill('SIGSTOP');
    try {
      shell.send('go');
      await shell.waitForLine('end of the flood script', (line) => line === 'done', 60_000);
    } finally {
      agent.child.kill('SIGCONT');
    }

    const byShell = (e: AuditEvent) => e.process?.ancestry?.[0]?.pid === shell.pid;
    const trueExits = () => exitEvents((e) => byShell(e) && e.process?.comm === 'true');
    await waitFor(
      'exit events of every /bin/true',
      () => (trueExits().length >= FLOOD_EXECS ? true : undefined),
      60_000,
    );
    expect(trueExits()).toHaveLength(FLOOD_EXECS);
    expect(trueExits().every((e) => e.subject?.spiffeId === A && e.process?.exitCode === 0)).toBe(
      true,
    );

    const losses = () =>
      quietEvents.filter((e) => e.type === 'loss' && e.loss?.where === 'kernel-ringbuf');
    await waitFor('a kernel loss event', () => (losses().length > 0 ? true : undefined), 10_000);
    expect(losses().every((e) => e.loss?.reason === 'events-ringbuf-full')).toBe(true);

    // Every connect became an event or was counted as dropped, in the stream and in the metrics.
    const dropped = () => losses().reduce((sum, e) => sum + (e.loss?.count ?? 0), 0);
    let connects = 0;
    const deadline = Date.now() + 60_000;
    for (;;) {
      const body = await scrape();
      connects =
        (sample(body, 'sigil_events_total{type="connect",result="allowed"}') ?? 0) - connectsBefore;
      const kernelDrops = sample(body, 'sigil_kernel_drops_total{reason="events-ringbuf-full"}');
      if (connects + dropped() >= FLOOD_CONNECTS && kernelDrops === dropped()) break;
      if (Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const body = await scrape();
    expect(dropped()).toBeGreaterThan(0);
    expect(connects + dropped()).toBe(FLOOD_CONNECTS);
    expect(sample(body, 'sigil_kernel_drops_total{reason="events-ringbuf-full"}')).toBe(dropped());
    expect(sample(body, 'sigil_kernel_drops_total{reason="process-ringbuf-full"}')).toBe(0);
    const eventsFill = sample(body, 'sigil_ringbuf_fill_ratio{ring="events"}');
    expect(eventsFill).toBeGreaterThanOrEqual(0);
    expect(eventsFill).toBeLessThanOrEqual(1);
    expect(sample(body, 'sigil_process_cache_entries{state="live"}')).toBeGreaterThan(0);
  }, 120_000);
});
