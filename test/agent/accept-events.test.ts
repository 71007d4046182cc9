import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditEvent } from '../../src/events/audit-event';
import { INGRESS_NOT_ENFORCED } from '../../src/enforce/event-builder';
import { AgentProcess, waitFor } from '../helpers/agent-process';
import { TestCgroups } from '../helpers/cgroups';
import { spawnInCgroup, spawnWorkload, Workload } from '../helpers/workloads';

// The real agent on the running kernel: accept events from the sys_exit
// tracepoints of accept() and accept4(), the client's SPIFFE ID from the
// TCP state tracepoint, and the decision of the ingress rules, which no enforcer
// applies. Listeners and clients are real processes on loopback.

const TD = 'spiffe://sigil-test.example';
const SERVER = `${TD}/workload/server`;
const CLIENT = `${TD}/workload/client`;
const PYTHON = realpathSync('/usr/bin/python3');
const BASE_PORT = 22000 + (process.pid % 20000);
const PORT_ALLOW = BASE_PORT;
const PORT_AUDIT = BASE_PORT + 1;
const PORT_BLOCK = BASE_PORT + 2;
const PORT_POSTURE = BASE_PORT + 3;
const PORT_V6 = BASE_PORT + 4;
const PORT_DUAL = BASE_PORT + 5;
const PORT_UNIDENTIFIED = BASE_PORT + 6;
const PORT_PLAIN_ACCEPT = BASE_PORT + 7;

// Listens on each host:port argument and accepts with accept4() (libuv); the client
// connects to "host port" lines and prints both ends of each connection.
const NODE_WORKLOAD = `
const net = require('node:net');
const [mode, ...specs] = process.argv.slice(2);
if (mode === 'listen') {
  for (const spec of specs) {
    const at = spec.lastIndexOf(':');
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.end('hello\\n');
    });
    server.listen(Number(spec.slice(at + 1)), spec.slice(0, at), () => console.log('listening ' + spec));
  }
} else {
  require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
    const [host, port] = line.trim().split(/\\s+/);
    const socket = net.connect(Number(port), host);
    socket.once('connect', () => {
      console.log('connected ' + host + ' ' + port + ' from ' + socket.localAddress + ' ' + socket.localPort);
      socket.destroy();
    });
    socket.once('error', (error) => console.log('failed ' + host + ' ' + port + ' ' + error.code));
  });
}
`;

// Accepts one connection with the accept() system call (glibc's accept()), not accept4().
const PLAIN_ACCEPT_LISTENER = `
import ctypes, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(('127.0.0.1', int(sys.argv[1])))
listener.listen(4)
print('listening', flush=True)
fd = libc.accept(listener.fileno(), None, None)
print('accepted', fd, flush=True)
sys.stdin.read()
`;

let work: string;
let cgroups: TestCgroups;
let agent: AgentProcess;
let policyFile: string;
const workloads: Workload[] = [];
let client: Workload;
let unidentifiedClient: Workload;

function policy(withUnidentified: boolean): string {
  const server = `apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata:
  name: server-ingress
spec:
  subject:
    spiffeId: ${SERVER}
  ingressPosture: Block
  ingress:
    - name: from-client
      action: Allow
      from:
        spiffeId: ${CLIENT}
      ports: [${PORT_ALLOW}, ${PORT_V6}, ${PORT_DUAL}, ${PORT_PLAIN_ACCEPT}]
      protocol: TCP
    - name: loopback-audit
      action: Audit
      from:
        cidrs: [127.0.0.0/8]
      ports: [${PORT_AUDIT}]
      severity: low
      tags: [lateral]
      message: loopback clients of the audit port are recorded
    - name: no-client-here
      action: Block
      from:
        spiffeId: ${CLIENT}
      ports: [${PORT_BLOCK}]
      severity: high
      tags: [lateral, "mitre:t1021"]
      message: the client never calls this port
`;
  if (!withUnidentified) return server;
  return `${server}---
apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata:
  name: unidentified-ingress
spec:
  subject:
    unidentified: true
  ingress:
    - name: audit-everything
      action: Audit
      from:
        cidrs: [127.0.0.0/8]
`;
}

async function start(workload: Workload, expectedId: string | null, executable = process.execPath): Promise<Workload> {
  workloads.push(workload);
  if (expectedId) expect(await agent.identityOf(workload.pid, executable)).toBe(expectedId);
  return workload;
}

/** Connects from a client workload and returns the client's end: address and port. */
async function connect(from: Workload, host: string, port: number): Promise<{ address: string; port: number }> {
  const before = from.lines.length;
  from.send(`${host} ${port}`);
  const line = await waitFor(`connect result from pid ${from.pid}`, () => from.lines.slice(before).find(Boolean));
  const parts = line.split(' ');
  expect(parts.slice(0, 4)).toEqual(['connected', host, String(port), 'from']);
  return { address: parts[4], port: Number(parts[5]) };
}

function acceptOf(clientPort: number, localPort: number): (event: AuditEvent) => boolean {
  return (event) =>
    event.type === 'accept' && event.connection?.port === clientPort && event.connection?.localPort === localPort;
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'sigil-accept-'));
  cgroups = new TestCgroups('sigil-accept');
  for (const name of ['server', 'client']) cgroups.create(name);
  writeFileSync(join(work, 'workload.js'), NODE_WORKLOAD);
  writeFileSync(
    join(work, 'registration.yaml'),
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: Registration',
      'entries:',
      `  - spiffeId: ${SERVER}`,
      `    selectors: [cgroup:path:${cgroups.relative}/server]`,
      `  - spiffeId: ${CLIENT}`,
      `    selectors: [cgroup:path:${cgroups.relative}/client]`,
    ].join('\n'),
  );
  policyFile = join(work, 'policy.yaml');
  writeFileSync(policyFile, policy(false));
  agent = AgentProcess.spawn(
    ['--registration', join(work, 'registration.yaml'), '--policy', policyFile],
    join(work, 'sigil.sock'),
  );
  await agent.ready();

  const script = join(work, 'workload.js');
  const listenSpecs = [PORT_ALLOW, PORT_AUDIT, PORT_BLOCK, PORT_POSTURE].map((port) => `127.0.0.1:${port}`);
  listenSpecs.push(`::1:${PORT_V6}`, `:::${PORT_DUAL}`);
  const server = await start(spawnInCgroup(cgroups.path('server'), [process.execPath, script, 'listen', ...listenSpecs]), SERVER);
  const unidentifiedServer = await start(
    spawnWorkload([process.execPath, script, 'listen', `127.0.0.1:${PORT_UNIDENTIFIED}`]),
    null,
  );
  client = await start(spawnInCgroup(cgroups.path('client'), [process.execPath, script, 'client']), CLIENT);
  unidentifiedClient = await start(spawnWorkload([process.execPath, script, 'client']), null);
  await waitFor('listeners', () => (server.lines.length === listenSpecs.length ? true : undefined));
  await unidentifiedServer.waitForLine('listening', (line) => line.startsWith('listening'));
});

afterAll(async () => {
  for (const workload of workloads) workload.kill();
  await agent?.stop();
  cgroups?.remove(['server', 'client']);
  rmSync(work, { recursive: true, force: true });
});

describe('accept events', () => {
  it('names both ends and both SPIFFE IDs over IPv4', async () => {
    const end = await connect(client, '127.0.0.1', PORT_ALLOW);
    const event = await agent.waitForEvent('accept on the Allow port', acceptOf(end.port, PORT_ALLOW));
    expect(event.subject?.spiffeId).toBe(SERVER);
    expect(event.connection).toEqual({
      family: 'ipv4',
      protocol: 'tcp',
      address: '127.0.0.1',
      port: end.port,
      peerSpiffeId: CLIENT,
      peerPid: client.pid,
      localAddress: '127.0.0.1',
      localPort: PORT_ALLOW,
    });
    expect(event.process?.comm).toBe('node');
    expect(event.process?.executable).toBe(process.execPath);
  });

  it('carries the decision of an Allow rule', async () => {
    const end = await connect(client, '127.0.0.1', PORT_ALLOW);
    const event = await agent.waitForEvent('accept on the Allow port', acceptOf(end.port, PORT_ALLOW));
    expect(event.policy).toEqual({ name: 'server-ingress', rule: 'from-client', reason: 'rule' });
    expect(event.action).toBe('allow');
    expect(event.result).toBe('allowed');
    expect(event.enforcer).toBeUndefined();
    expect(event.severity).toBe('info');
  });

  it('carries the details of an Audit rule', async () => {
    const end = await connect(client, '127.0.0.1', PORT_AUDIT);
    const event = await agent.waitForEvent('accept on the Audit port', acceptOf(end.port, PORT_AUDIT));
    expect(event.policy).toEqual({
      name: 'server-ingress',
      rule: 'loopback-audit',
      reason: 'rule',
      severity: 'low',
      tags: ['lateral'],
      message: 'loopback clients of the audit port are recorded',
    });
    expect(event.action).toBe('audit');
    expect(event.result).toBe('allowed');
    expect(event.severity).toBe('low');
    expect(event.message).toBe(INGRESS_NOT_ENFORCED);
  });

  it('reports a Block rule as not enforced', async () => {
    const end = await connect(client, '127.0.0.1', PORT_BLOCK);
    const event = await agent.waitForEvent('accept on the Block port', acceptOf(end.port, PORT_BLOCK));
    expect(event.policy?.rule).toBe('no-client-here');
    expect(event.policy?.severity).toBe('high');
    expect(event.policy?.tags).toEqual(['lateral', 'mitre:t1021']);
    expect(event.policy?.message).toBe('the client never calls this port');
    expect(event.action).toBe('block');
    expect(event.result).toBe('allowed');
    expect(event.errno).toBeUndefined();
    expect(event.enforcer).toBeUndefined();
    expect(event.severity).toBe('high');
    expect(event.message).toBe(INGRESS_NOT_ENFORCED);
  });

  it('reports the ingress posture when no rule matches', async () => {
    const end = await connect(client, '127.0.0.1', PORT_POSTURE);
    const event = await agent.waitForEvent('accept on the posture port', acceptOf(end.port, PORT_POSTURE));
    expect(event.policy).toEqual({ name: 'server-ingress', rule: 'ingressPosture', reason: 'posture' });
    expect(event.action).toBe('block');
    expect(event.result).toBe('allowed');
  });

  it('names both ends over IPv6 loopback', async () => {
    const end = await connect(client, '::1', PORT_V6);
    expect(end.address).toBe('::1');
    const event = await agent.waitForEvent('accept over IPv6', acceptOf(end.port, PORT_V6));
    expect(event.subject?.spiffeId).toBe(SERVER);
    expect(event.connection).toEqual({
      family: 'ipv6',
      protocol: 'tcp',
      address: '::1',
      port: end.port,
      peerSpiffeId: CLIENT,
      peerPid: client.pid,
      localAddress: '::1',
      localPort: PORT_V6,
    });
    expect(event.policy?.rule).toBe('from-client');
  });

  it('names an IPv4 client of a dual-stack listener', async () => {
    const end = await connect(client, '127.0.0.1', PORT_DUAL);
    const event = await agent.waitForEvent('accept on the dual-stack port', acceptOf(end.port, PORT_DUAL));
    expect(event.connection?.family).toBe('ipv6');
    expect(event.connection?.address).toBe('127.0.0.1');
    expect(event.connection?.localAddress).toBe('127.0.0.1');
    expect(event.connection?.peerSpiffeId).toBe(CLIENT);
    expect(event.policy?.rule).toBe('from-client');
  });

  it('reports an accept() system call', async () => {
    const listener = await start(
      spawnInCgroup(cgroups.path('server'), [PYTHON, '-c', PLAIN_ACCEPT_LISTENER, String(PORT_PLAIN_ACCEPT)]),
      SERVER,
      PYTHON,
    );
    await listener.waitForLine('listening', (line) => line === 'listening');
    const end = await connect(client, '127.0.0.1', PORT_PLAIN_ACCEPT);
    await listener.waitForLine('accepted', (line) => line.startsWith('accepted'));
    const event = await agent.waitForEvent('accept by accept()', acceptOf(end.port, PORT_PLAIN_ACCEPT));
    expect(event.process?.pid).toBe(listener.pid);
    expect(event.subject?.spiffeId).toBe(SERVER);
    expect(event.connection?.peerSpiffeId).toBe(CLIENT);
  });

  it('has no peer SPIFFE ID for an unidentified client', async () => {
    const end = await connect(unidentifiedClient, '127.0.0.1', PORT_AUDIT);
    const event = await agent.waitForEvent('accept from the unidentified client', acceptOf(end.port, PORT_AUDIT));
    expect(event.subject?.spiffeId).toBe(SERVER);
    expect(event.connection?.peerSpiffeId).toBe('');
    expect(event.connection?.peerPid).toBe(0);
    expect(event.policy?.rule).toBe('loopback-audit');
  });

  it('reports an unidentified server when the client has a SPIFFE ID', async () => {
    const end = await connect(client, '127.0.0.1', PORT_UNIDENTIFIED);
    const event = await agent.waitForEvent('accept by the unidentified server', acceptOf(end.port, PORT_UNIDENTIFIED));
    expect(event.subject?.spiffeId).toBe('');
    expect(event.connection?.peerSpiffeId).toBe(CLIENT);
    expect(event.policy).toEqual({ name: '', rule: '', reason: 'no-policy' });
    expect(event.action).toBe('none');
    expect(event.message).toBeUndefined();
  });

  it('skips accepts with no identity at either end', async () => {
    const skipped = await connect(unidentifiedClient, '127.0.0.1', PORT_UNIDENTIFIED);
    // Records of one ring buffer arrive in order: once the next accept is seen, the first was not written.
    const next = await connect(client, '127.0.0.1', PORT_UNIDENTIFIED);
    await agent.waitForEvent('accept after the skipped one', acceptOf(next.port, PORT_UNIDENTIFIED));
    expect(agent.events.filter(acceptOf(skipped.port, PORT_UNIDENTIFIED))).toEqual([]);
  });

  it('reports unidentified ends when a policy asks', async () => {
    const seen = agent.events.length;
    writeFileSync(policyFile, policy(true));
    await agent.waitForEvent(
      'reload event',
      (e) => agent.events.indexOf(e) >= seen && e.type === 'agent' && /reloaded/.test(e.message ?? ''),
    );
    const end = await connect(unidentifiedClient, '127.0.0.1', PORT_UNIDENTIFIED);
    const event = await agent.waitForEvent('accept with no identities', acceptOf(end.port, PORT_UNIDENTIFIED));
    expect(event.subject?.spiffeId).toBe('');
    expect(event.connection?.peerSpiffeId).toBe('');
    expect(event.policy).toEqual({ name: 'unidentified-ingress', rule: 'audit-everything', reason: 'rule' });
    expect(event.action).toBe('audit');
    expect(event.result).toBe('allowed');
  });
});
