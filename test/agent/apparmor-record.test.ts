import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compileProfile } from '../../src/apparmor/parser';
import { runAppArmorRecord } from '../../src/cli/apparmor-record';
import { CommandOutput } from '../../src/cli/policy-commands';
import { AgentProcess, waitFor } from '../helpers/agent-process';
import { TestCgroups } from '../helpers/cgroups';
import { spawnInCgroup } from '../helpers/workloads';

// `sigil apparmor record` against the real agent on the running kernel: a workload in a cgroup
// with a SPIFFE ID runs programs and connects to a local listener while the command records
// the agent's event stream. This kernel has no BPF LSM for this agent, so only exec and
// connect events exist here.

const SUBJECT = 'spiffe://sigil-test.example/recorded';
const PORT = 21000 + (process.pid % 20000);

let work: string;
let cgroups: TestCgroups;
let agent: AgentProcess;
let listener: Server;

function capture(): CommandOutput & { stdout: string; stderr: string } {
  return {
    stdout: '',
    stderr: '',
    out(text) {
      this.stdout += text;
    },
    err(text) {
      this.stderr += text;
    },
  };
}

/** Starts the workload once the recording has subscribed, and records for 6 s. */
async function record(format: 'policy' | 'profile') {
  const output = capture();
  const recording = runAppArmorRecord(
    { subject: SUBJECT, duration: 6, format, socket: agent.socketPath },
    output,
  );
  await waitFor('the recording to start', () =>
    output.stderr.includes('recording ') ? true : undefined,
  );
  const script =
    // Each program runs for a while, because the agent reports the exec of a process only once
    // it has attested it, and a process that exits first is not reported.
    `sleep 0.5; /bin/sleep 0.3 | /bin/cat > /dev/null; ` +
    `exec ${process.execPath} -e "require('net').connect(${PORT}, '127.0.0.1')` +
    `.on('connect', function () { this.end(); }).on('error', function () {})"`;
  const workload = spawnInCgroup(cgroups.path('w'), ['/bin/sh', '-c', script]);
  const code = await recording;
  workload.kill();
  return { code, output };
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'sigil-record-'));
  cgroups = new TestCgroups('sigil-record');
  cgroups.create('w');
  writeFileSync(
    join(work, 'registration.yaml'),
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: Registration',
      'entries:',
      `  - spiffeId: ${SUBJECT}`,
      `    selectors: [cgroup:path:${cgroups.relative}/w]`,
      '',
    ].join('\n'),
  );
  // A policy without rules: recording needs the agent's events, not its enforcement.
  writeFileSync(
    join(work, 'policy.yaml'),
    'apiVersion: sigil.dev/v1alpha1\nkind: IdentityPolicy\nmetadata: {name: no-rules}\n' +
      'spec: {subject: {spiffeId: spiffe://example.org/nobody}}\n',
  );
  listener = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => listener.listen(PORT, '127.0.0.1', resolve));
  agent = AgentProcess.spawn(
    ['--registration', join(work, 'registration.yaml'), '--policy', join(work, 'policy.yaml')],
    join(work, 'sigil.sock'),
  );
  await agent.ready();
});

afterAll(async () => {
  await agent?.stop();
  listener?.close();
  cgroups?.remove(['w']);
  rmSync(work, { recursive: true, force: true });
});

describe('sigil apparmor record', () => {
  it('records execs and connects as a policy', async () => {
    const { code, output } = await record('policy');
    expect(code, output.stderr).toBe(0);
    const spec = parse(output.stdout).spec;
    expect(spec.subject.spiffeId).toBe(SUBJECT);
    expect(spec.process[0].paths).toContain(realpathSync('/bin/sleep'));
    expect(spec.process[0].paths).toContain(realpathSync('/bin/cat'));
    expect(spec.process[0].paths).toContain(realpathSync(process.execPath));
    expect(spec.egress).toContainEqual({
      name: expect.stringMatching(/^recorded-connect-\d+$/),
      action: 'Allow',
      to: { cidrs: ['127.0.0.1/32'] },
      ports: [PORT],
      protocol: 'TCP',
    });
    expect(output.stderr).toMatch(/recorded \d+ executables, 1 connect destinations/);
  });

  it('records a profile that compiles', async () => {
    const { code, output } = await record('profile');
    expect(code, output.stderr).toBe(0);
    expect(output.stdout).toContain('profile sigil.sigil-test.example.recorded {');
    expect(output.stdout).toContain(`"${realpathSync('/bin/cat')}" mrix,`);
    expect(output.stdout).toContain('ports');
    expect(await compileProfile(output.stdout)).toBe('');
  });

  it('fails without an agent', async () => {
    const output = capture();
    const code = await runAppArmorRecord(
      { subject: SUBJECT, duration: 1, format: 'policy', socket: join(work, 'missing.sock') },
      output,
    );
    expect(code).toBe(1);
    expect(output.stderr).toContain('missing.sock');
  });
});
