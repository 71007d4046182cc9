/**
 * Measures the resident memory of the real agent enforcing 10,000 egress rules over 1,000
 * identities, against the same agent with one identity and one rule, started alternately in
 * the same run (root, after `make`).
 *
 * Run: npx vite-node bench/agent-memory.ts [--rounds N] [--settle-ms MS]
 *
 * Each round starts `bin/sigil run` on the small configuration, waits until its socket exists and
 * then `--settle-ms` more (5,000 by default), reads VmRSS and VmHWM (the peak) from
 * /proc/<pid>/status, stops it and runs `sigil uninstall`; then the same with the large
 * configuration. The registration entries select cgroups that do not exist, so no process of
 * the machine gets an identity and no event is written. The agent still gives every entry's
 * SPIFFE ID an identity id and compiles every rule, so the figures are its memory for its rules
 * and identities at rest, not under an event load.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDocuments, identities } from './policy-set';

const SIGIL = join(__dirname, '..', 'bin', 'sigil');

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  return index > 0 ? Number(process.argv[index + 1]) : fallback;
}

const ROUNDS = option('--rounds', 3);
const SETTLE_MS = option('--settle-ms', 5000);

interface Config {
  label: string;
  registration: string;
  policy: string;
}

interface Sample {
  rssKb: number;
  peakKb: number;
}

/** Writes a registration of the given SPIFFE IDs, each selecting a cgroup that does not exist. */
function registrationText(spiffeIds: readonly string[]): string {
  const entries = spiffeIds.flatMap((id, index) => [
    `  - spiffeId: ${id}`,
    `    selectors: ['cgroup:path:/sigil-memory-bench/none-${index}']`,
  ]);
  return ['apiVersion: sigil.dev/v1alpha1', 'kind: Registration', 'entries:', ...entries].join(
    '\n',
  );
}

function writeConfigs(directory: string): Config[] {
  const small = identities().slice(0, 1);
  writeFileSync(
    join(directory, 'small-registration.yaml'),
    registrationText(small.map((i) => i.spiffeId)),
  );
  writeFileSync(
    join(directory, 'small-policy.yaml'),
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: IdentityPolicy',
      'metadata: {name: one-rule}',
      'spec:',
      `  subject: {spiffeId: "${small[0].spiffeId}"}`,
      '  egress:',
      '    - {name: r0, action: Allow, to: {cidrs: ["10.0.0.0/24"]}, ports: [1000]}',
    ].join('\n'),
  );
  writeFileSync(
    join(directory, 'large-registration.yaml'),
    registrationText(identities().map((i) => i.spiffeId)),
  );
  writeFileSync(join(directory, 'large-policy.yaml'), buildDocuments().join('---\n'));
  return [
    {
      label: '1 identity, 1 rule',
      registration: join(directory, 'small-registration.yaml'),
      policy: join(directory, 'small-policy.yaml'),
    },
    {
      label: '1,000 identities, 10,000 rules',
      registration: join(directory, 'large-registration.yaml'),
      policy: join(directory, 'large-policy.yaml'),
    },
  ];
}

function readStatusKb(pid: number, field: string): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (!match) throw new Error(`/proc/${pid}/status has no ${field} line`);
  return Number(match[1]);
}

async function measureAgent(directory: string, config: Config, round: number): Promise<Sample> {
  const run = join(directory, `run-${round}-${config.label.length}`);
  const pinDir = `/sys/fs/bpf/sigil-memory-bench-${process.pid}`;
  const socket = join(run, 'sigil.sock');
  const args = [
    SIGIL,
    'run',
    '--socket',
    socket,
    '--events-log',
    '/dev/null',
    '--bpffs-dir',
    pinDir,
    '--state-dir',
    join(run, 'state'),
    '--registration',
    config.registration,
    '--policy',
    config.policy,
    '--no-watch',
    '--log-level',
    'warn',
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    if (stderr.length < 100_000) stderr += chunk.toString();
  });
  try {
    const deadline = Date.now() + 60_000;
    while (!existsSync(socket)) {
      if (child.exitCode !== null)
        throw new Error(`the agent exited with ${child.exitCode}:\n${stderr}`);
      if (Date.now() > deadline)
        throw new Error(`the agent did not create ${socket} within 60 s:\n${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    if (child.exitCode !== null)
      throw new Error(`the agent exited with ${child.exitCode}:\n${stderr}`);
    return { rssKb: readStatusKb(child.pid!, 'VmRSS'), peakKb: readStatusKb(child.pid!, 'VmHWM') };
  } finally {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
    const uninstall = spawnSync(process.execPath, [SIGIL, 'uninstall', '--bpffs-dir', pinDir], {
      encoding: 'utf8',
    });
    if (uninstall.status !== 0) throw new Error(`sigil uninstall failed: ${uninstall.stderr}`);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function mb(kb: number): string {
  return (kb / 1024).toFixed(1);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/agent-memory.ts must run as root');
  const directory = mkdtempSync(join(tmpdir(), 'sigil-memory-bench-'));
  try {
    const configs = writeConfigs(directory);
    const samples = new Map<string, Sample[]>(configs.map((config) => [config.label, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const config of configs)
        samples.get(config.label)!.push(await measureAgent(directory, config, round));
    }
    const [small, large] = configs.map((config) => samples.get(config.label)!);
    const rss = (list: Sample[]) => median(list.map((sample) => sample.rssKb));
    const peak = (list: Sample[]) => median(list.map((sample) => sample.peakKb));
    const lines = [
      `node ${process.version}, kernel ${release()}, ${cpus().length} CPUs (${cpus()[0].model}); ` +
        `${ROUNDS} rounds, ${SETTLE_MS} ms after the socket appeared; load average ${loadavg()[0].toFixed(2)} at the end`,
      ...configs.map((config) => {
        const list = samples.get(config.label)!;
        const perRound = list.map((sample) => `${mb(sample.rssKb)}/${mb(sample.peakKb)}`).join(' ');
        return `${config.label.padEnd(32)} RSS median ${mb(rss(list))} MB, peak median ${mb(peak(list))} MB (per round RSS/peak: ${perRound})`;
      }),
      `ratio of RSS medians ${(rss(large) / rss(small)).toFixed(2)}, of peak medians ${(peak(large) / peak(small)).toFixed(2)}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
