import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AgentProcess, waitFor } from '../helpers/agent-process';
import { TestCgroups } from '../helpers/cgroups';

// The real agent with its event log on a 1 MiB tmpfs that stays full, stopped within the
// 10 s between its reports of dropped lines (needs root).
let work: string;
let full: string;
let cgroups: TestCgroups;
let agent: AgentProcess | null = null;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'sigil-event-log-full-'));
  full = join(work, 'full');
  mkdirSync(full);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'sigil-test', full]);
  // 64 KiB left for the log.
  writeFileSync(join(full, 'filler'), Buffer.alloc(1024 * 1024 - 64 * 1024));
  cgroups = new TestCgroups('sigil-test-log');
  cgroups.create('agent');
});

afterAll(async () => {
  await agent?.stop();
  execFileSync('umount', [full]);
  cgroups?.remove(['agent']);
  rmSync(work, { recursive: true, force: true });
});

/** Sum of the lines that the agent's "lines dropped" and "lines lost" reports counted. */
function reportedDrops(stderr: string): number {
  let lines = 0;
  for (const text of stderr.split('\n')) {
    if (!text.includes('lines dropped') && !text.includes('lines lost')) continue;
    lines += (JSON.parse(text) as { lines: number }).lines;
  }
  return lines;
}

it('reports the lines it drops when it stops', async () => {
  const path = join(full, 'events.json');
  const socket = join(work, 'audit.sock');
  agent = AgentProcess.spawn(
    [
      '--events-log',
      path,
      '--audit-unidentified-exec',
      '--cgroup',
      cgroups.path('agent'),
      '--no-watch',
    ],
    socket,
    `/sys/fs/bpf/sigil-test-log-full-${process.pid}`,
  );
  await agent.ready();
  // Each exec and exit makes an event line of a few hundred bytes, far more than the 64 KiB left.
  execFileSync('sh', ['-c', 'for i in $(seq 500); do /bin/true; done']);
  await waitFor('a failed write', () =>
    agent!.stderr.includes(`write event log ${path}: ENOSPC`) ? true : undefined,
  );
  // The exec and exit of each /bin/true reach the stream, and the log, a little later.
  await waitFor('1,000 events', () => (agent!.events.length >= 1_000 ? true : undefined));
  const published = agent.events.length;
  const stopped = agent;
  agent = null;
  await stopped.stop();

  let whole = 0;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    try {
      JSON.parse(line);
      whole++;
    } catch {
      // A line torn by the failed write, or the empty string after the last newline.
    }
  }
  // Every event the stream saw went to the log: into the file, or counted in a report.
  expect(published).toBeGreaterThan(1_000);
  expect(whole + reportedDrops(stopped.stderr)).toBeGreaterThanOrEqual(published);
});
