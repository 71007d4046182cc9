import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistrationAttestor } from '../../src/identity/attestor';
import { parseRegistration } from '../../src/identity/registration';
import { AgentProcess } from '../helpers/agent-process';
import { SpireHarness } from '../helpers/spire';
import { Workload, clientArgv, connectFrom, listenerArgv, spawnWorkload } from '../helpers/workloads';

// The real agent with real SPIRE as its identity source: spire-agent attests
// each process by pid over the Delegated Identity API, and the cgroup connect
// programs enforce a policy keyed by the SPIFFE IDs it issues.

const UID_A = 4251;
const UID_B = 4252;
const UID_C = 4253;
const BASE_PORT = 40000 + (process.pid % 10000);
const PORT_B = BASE_PORT;
const PORT_C = BASE_PORT + 1;

let harness: SpireHarness;
let agent: AgentProcess;
let work: string;
let a: Workload;
let b: Workload;
let c: Workload;
const entryIds: Record<string, string> = {};
const workloads: Workload[] = [];

function id(name: string): string {
  return `spiffe://${harness.trustDomain}/workload/${name}`;
}

function selectorsOf(name: string): string[] {
  const uid = { a: UID_A, b: UID_B, c: UID_C }[name] as number;
  return [`unix:uid:${uid}`];
}

function policyText(): string {
  return `apiVersion: sigil.dev/v1alpha1
kind: IdentityPolicy
metadata:
  name: a-egress
spec:
  subject:
    spiffeId: ${id('a')}
  egressPosture: Block
  egress:
    - name: a-to-b
      action: Allow
      to:
        spiffeId: ${id('b')}
      ports: [${PORT_B}]
`;
}

function agentEventAfter(seen: number, pattern: RegExp) {
  return agent.waitForEvent(
    `agent event ${pattern}`,
    (event) => agent.events.indexOf(event) >= seen && event.type === 'agent' && pattern.test(event.message ?? ''),
    30_000,
  );
}

beforeAll(async () => {
  harness = await SpireHarness.start();
  for (const name of ['a', 'b', 'c']) {
    entryIds[name] = await harness.createEntry({ spiffeId: id(name), selectors: selectorsOf(name) });
  }
  work = mkdtempSync(join(tmpdir(), 'sigil-agent-spire-'));
  writeFileSync(join(work, 'policy.yaml'), policyText());
  agent = AgentProcess.spawn(
    [
      '--spire-admin-socket',
      harness.adminSocketPath,
      '--spire-workload-api',
      harness.workloadApiAddress,
      '--policy',
      join(work, 'policy.yaml'),
    ],
    join(work, 'sigil.sock'),
  );
  await agent.ready();

  b = spawnWorkload(listenerArgv(PORT_B), { uid: UID_B, gid: UID_B });
  c = spawnWorkload(listenerArgv(PORT_C), { uid: UID_C, gid: UID_C });
  a = spawnWorkload(clientArgv(), { uid: UID_A, gid: UID_A });
  workloads.push(a, b, c);
  for (const listener of [b, c]) await listener.waitForLine('listening', (l) => l.startsWith('listening'));
}, 180_000);

afterAll(async () => {
  for (const workload of workloads) workload.kill();
  await agent?.stop();
  await harness?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('agent with SPIRE as identity source', () => {
  it('writes the SPIFFE IDs SPIRE issues to the kernel and events', async () => {
    expect(await agent.identityOf(a.pid)).toBe(id('a'));
    expect(await agent.identityOf(b.pid)).toBe(id('b'));
    expect(await agent.identityOf(c.pid)).toBe(id('c'));
  });

  it('fetches its own X.509-SVID from the Workload API', async () => {
    const event = await agent.waitForEvent(
      'agent SVID event',
      (e) => e.type === 'agent' && /agent X\.509-SVID/.test(e.message ?? ''),
      30_000,
    );
    expect(event.message).toContain(harness.delegateId);
  });

  it('gives the same SPIFFE IDs as a registration file with the same selectors', async () => {
    const registration = parseRegistration(
      [
        'apiVersion: sigil.dev/v1alpha1',
        'kind: Registration',
        'entries:',
        ...['a', 'b', 'c'].flatMap((name) => [`  - spiffeId: ${id(name)}`, `    selectors: [${selectorsOf(name).join(', ')}]`]),
      ].join('\n'),
      'parity.yaml',
    );
    const attestor = new RegistrationAttestor(registration);
    for (const workload of [a, b, c]) {
      const fromSpire = await agent.identityOf(workload.pid);
      expect((await attestor.attest(workload.pid))?.spiffeId).toBe(fromSpire);
    }
  });

  it('allows A to B and denies A to C by the SPIRE-issued IDs', async () => {
    expect(await connectFrom(a, '127.0.0.1', PORT_B)).toBe(`connect 127.0.0.1:${PORT_B} ok`);
    expect(await connectFrom(a, '127.0.0.1', PORT_C)).toBe(`connect 127.0.0.1:${PORT_C} failed EPERM`);
    const denied = await agent.waitForEvent(
      'denied connect event',
      (e) => e.type === 'connect' && e.process?.pid === a.pid && e.connection?.port === PORT_C,
    );
    expect(denied.subject?.spiffeId).toBe(id('a'));
    expect(denied.connection?.peerSpiffeId).toBe(id('c'));
    expect(denied.result).toBe('denied');
  });

  it('keeps enforcing while spire-agent is down', async () => {
    const seen = agent.events.length;
    await harness.stopAgent();
    await agentEventAfter(seen, /SPIRE unavailable/);
    expect(await connectFrom(a, '127.0.0.1', PORT_C)).toBe(`connect 127.0.0.1:${PORT_C} failed EPERM`);
    expect(await connectFrom(a, '127.0.0.1', PORT_B)).toBe(`connect 127.0.0.1:${PORT_B} ok`);
    const restarted = agent.events.length;
    await harness.startAgent();
    await agentEventAfter(restarted, /SPIRE available/);
  }, 120_000);

  it('removes the identity when its entry is deleted', async () => {
    const seen = agent.events.length;
    await harness.deleteEntry(entryIds.a);
    await agentEventAfter(seen, new RegExp(`identity of pid ${a.pid} changed to none`));
    // Unidentified, A falls under no policy, so the connect to C is allowed.
    expect(await connectFrom(a, '127.0.0.1', PORT_C)).toBe(`connect 127.0.0.1:${PORT_C} ok`);
    const event = await agent.waitForEvent(
      'connect event without identity',
      (e) => agent.events.indexOf(e) >= seen && e.type === 'connect' && e.process?.pid === a.pid,
    );
    expect(event.subject?.spiffeId).toBe('');
  }, 120_000);
});
