import { createHash } from 'node:crypto';
import {
  appendFileSync,
  copyFileSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentProcess } from '../helpers/agent-process';
import { Workload, spawnWorkload } from '../helpers/workloads';

// The real agent identifies processes by the SHA-256 of their executable (`unix:sha256`). The
// digest is computed on the agent's hashing thread, so this runs that thread from the built
// agent, not only from the sources.

const TD = 'spiffe://sigil-test.example';
const HASHED = `${TD}/workload/hashed`;
const SLEEP = '/usr/bin/sleep';

let work: string;
let agent: AgentProcess;
const workloads: Workload[] = [];

function sha256Of(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'sigil-sha256-'));
  // Two copies of sleep: one as it is, and one with a byte appended. No entry selects by path,
  // so only the digest separates them.
  copyFileSync(SLEEP, join(work, 'same'));
  copyFileSync(SLEEP, join(work, 'changed'));
  appendFileSync(join(work, 'changed'), Buffer.from([0]));
  writeFileSync(
    join(work, 'registration.yaml'),
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: Registration',
      'entries:',
      `  - spiffeId: ${HASHED}`,
      `    selectors: ['unix:sha256:${sha256Of(SLEEP)}']`,
    ].join('\n'),
  );
  // Exec events of processes without an identity are opt-in; the second test needs them.
  agent = AgentProcess.spawn(
    ['--registration', join(work, 'registration.yaml'), '--audit-unidentified-exec'],
    join(work, 'sigil.sock'),
  );
  await agent.ready();
});

afterAll(async () => {
  for (const workload of workloads) workload.kill();
  await agent?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe('agent with a unix:sha256 selector', () => {
  it('gives the SPIFFE ID to a copy of the hashed program', async () => {
    const path = join(work, 'same');
    const workload = spawnWorkload([path, '30']);
    workloads.push(workload);
    expect(await agent.identityOf(workload.pid, path)).toBe(HASHED);
  });

  it('gives no SPIFFE ID to a program whose bytes differ', async () => {
    const path = join(work, 'changed');
    const workload = spawnWorkload([path, '30']);
    workloads.push(workload);
    expect(await agent.identityOf(workload.pid, path)).toBe('');
  });
});
