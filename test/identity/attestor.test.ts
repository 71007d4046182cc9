import { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountDatabase } from '../../src/identity/account-database';
import { RegistrationAttestor } from '../../src/identity/attestor';
import { readCgroup2Mount } from '../../src/identity/process-info';
import { parseRegistration, Registration } from '../../src/identity/registration';
import { copySleep, makeSharedTempDir, spawnRunning, stopChild } from './process-helpers';

// These tests run as root: they create cgroups and start processes under other uids.

const directory = makeSharedTempDir('sigil-attestor-');
const children: ChildProcess[] = [];

const cgroup2Mount = readCgroup2Mount();
if (cgroup2Mount === null) {
  throw new Error('these tests need a cgroup2 mount');
}
/** Cgroup paths relative to the cgroup2 mount, as /proc/<pid>/cgroup shows them. */
const parentCgroup = `/sigil-test-attestor-${process.pid}`;
const webCgroup = `${parentCgroup}/web`;
const dbCgroup = `${parentCgroup}/db`;

writeFileSync(join(directory, 'passwd'), 'websvc:x:4242:4242::/:/bin/false\n');
writeFileSync(join(directory, 'group'), 'websvc:x:4242:\nextra:x:4343:websvc\n');
const accounts = new AccountDatabase({
  passwdFile: join(directory, 'passwd'),
  groupFile: join(directory, 'group'),
});

const webExe = copySleep(directory, 'web-server');
const webDigest = createHash('sha256').update(readFileSync(webExe)).digest('hex');
const otherDigest = 'f'.repeat(64);

beforeAll(() => {
  mkdirSync(`${cgroup2Mount}${webCgroup}`, { recursive: true });
  mkdirSync(`${cgroup2Mount}${dbCgroup}`);
});

afterAll(async () => {
  await Promise.all(children.map(stopChild));
  // A cgroup can be removed once its processes are reaped, which stopChild waits for.
  for (const cgroup of [webCgroup, dbCgroup, parentCgroup]) {
    rmdirSync(`${cgroup2Mount}${cgroup}`);
  }
  rmSync(directory, { recursive: true, force: true });
});

function registration(entries: [string, string[]][]): Registration {
  const lines = ['apiVersion: sigil.dev/v1alpha1', 'kind: Registration', 'entries:'];
  for (const [spiffeId, selectors] of entries) {
    lines.push(`  - spiffeId: ${spiffeId}`, '    selectors:');
    lines.push(...selectors.map((selector) => `      - "${selector}"`));
  }
  return parseRegistration(lines.join('\n'), 'test.yaml');
}

async function startInCgroup(exe: string, cgroup: string): Promise<number> {
  const child = await spawnRunning(exe, ['30'], exe);
  children.push(child);
  writeFileSync(`${cgroup2Mount}${cgroup}/cgroup.procs`, String(child.pid));
  return child.pid;
}

describe('RegistrationAttestor', () => {
  it('picks the first matching entry', async () => {
    const pid = await startInCgroup(webExe, webCgroup);
    const attestor = new RegistrationAttestor(
      registration([
        ['spiffe://example.org/db', [`cgroup:path:${dbCgroup}`, 'unix:uid:0']],
        ['spiffe://example.org/web', [`cgroup:path:${webCgroup}`, 'unix:uid:0']],
        ['spiffe://example.org/any-root', ['unix:uid:0']],
      ]),
      { cgroup2Mount, accounts },
    );

    const result = await attestor.attest(pid);
    expect(result).not.toBeNull();
    if (result === null) return;
    expect(result.pid).toBe(pid);
    expect(result.spiffeId).toBe('spiffe://example.org/web');
    expect(result.entryIndex).toBe(1);
    expect(result.selectors).toContain(`cgroup:path:${webCgroup}`);
    expect(result.selectors).toContain(`unix:path:${webExe}`);
    expect(result.info.cgroupPath).toBe(webCgroup);
    expect(result.info.cgroupId).toBe(
      statSync(`${cgroup2Mount}${webCgroup}`, { bigint: true }).ino,
    );
  });

  it('falls through to a later entry when the cgroup differs', async () => {
    const pid = await startInCgroup(webExe, dbCgroup);
    const attestor = new RegistrationAttestor(
      registration([
        ['spiffe://example.org/web', [`cgroup:path:${webCgroup}`]],
        ['spiffe://example.org/any-root', ['unix:uid:0']],
      ]),
      { accounts },
    );
    const result = await attestor.attest(pid);
    expect(result?.spiffeId).toBe('spiffe://example.org/any-root');
    expect(result?.entryIndex).toBe(1);
  });

  it('matches another uid by unix selectors', async () => {
    const args = ['--reuid=4242', '--regid=4242', '--groups=4343', webExe, '30'];
    const child = await spawnRunning('setpriv', args, webExe);
    children.push(child);
    const attestor = new RegistrationAttestor(
      registration([
        ['spiffe://example.org/wrong-hash', ['unix:uid:4242', `unix:sha256:${otherDigest}`]],
        ['spiffe://example.org/wrong-path', ['unix:uid:4242', 'unix:path:/usr/bin/sleep']],
        [
          'spiffe://example.org/web',
          [
            'unix:uid:4242',
            'unix:user:websvc',
            'unix:gid:4242',
            'unix:group:websvc',
            'unix:supplementary_gid:4343',
            'unix:supplementary_group:extra',
            `unix:path:${webExe}`,
            `unix:sha256:${webDigest}`,
          ],
        ],
      ]),
      { accounts },
    );

    const result = await attestor.attest(child.pid);
    expect(result?.spiffeId).toBe('spiffe://example.org/web');
    expect(result?.entryIndex).toBe(2);
    expect(result?.info.uid).toBe(4242);
    expect(result?.selectors).toContain(`unix:sha256:${webDigest}`);
  });

  it('returns a null ID when no entry matches', async () => {
    const child = await spawnRunning(webExe, ['30'], webExe, { uid: 4242, gid: 4242 });
    children.push(child);
    const attestor = new RegistrationAttestor(
      registration([['spiffe://example.org/root', ['unix:uid:0']]]),
      { accounts },
    );

    const result = await attestor.attest(child.pid);
    expect(result).not.toBeNull();
    expect(result?.spiffeId).toBeNull();
    expect(result?.entryIndex).toBeNull();
    expect(result?.selectors).toContain('unix:uid:4242');
  });

  it('skips hashing when no entry uses sha256', async () => {
    const child = await spawnRunning(webExe, ['30'], webExe);
    children.push(child);
    const attestor = new RegistrationAttestor(
      registration([['spiffe://example.org/root', ['unix:uid:0']]]),
      { accounts },
    );
    const selectors = (await attestor.attest(child.pid))?.selectors ?? [];
    expect(selectors.some((selector) => selector.startsWith('unix:sha256:'))).toBe(false);
  });

  it('rejects a reused pid by its start time', async () => {
    const child = await spawnRunning(webExe, ['30'], webExe);
    children.push(child);
    const attestor = new RegistrationAttestor(
      registration([['spiffe://example.org/root', ['unix:uid:0']]]),
      { accounts },
    );

    const first = await attestor.attest(child.pid);
    expect(first).not.toBeNull();
    if (first === null) return;
    const startTime = first.info.startTimeTicks;
    expect((await attestor.attest(child.pid, { expectedStartTime: startTime }))?.spiffeId).toBe(
      'spiffe://example.org/root',
    );
    expect(await attestor.attest(child.pid, { expectedStartTime: startTime + 1n })).toBeNull();
    expect(await attestor.attest(child.pid, { expectedStartTime: startTime - 1n })).toBeNull();
  });

  it('returns null for a process that exited', async () => {
    const child = await spawnRunning(webExe, ['30'], webExe);
    await stopChild(child);
    const attestor = new RegistrationAttestor(
      registration([['spiffe://example.org/root', ['unix:uid:0']]]),
      { accounts },
    );
    expect(await attestor.attest(child.pid)).toBeNull();
  });

  it('rejects an entry without selectors', () => {
    const empty: Registration = {
      file: 'built.yaml',
      trustDomain: null,
      entries: [
        {
          spiffeId: 'spiffe://example.org/all',
          selectors: [],
          position: { file: '', line: 1, column: 1 },
        },
      ],
      warnings: [],
    };
    expect(() => new RegistrationAttestor(empty)).toThrow(
      'registration entry 0 (spiffe://example.org/all) has no selectors',
    );
  });
});
