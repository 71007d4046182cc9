import { ChildProcess } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readStartTime } from '../../src/identity/process-info';
import {
  DelegatedIdentityClient,
  DelegatedX509BundlesUpdate,
  DelegatedX509SvidUpdate,
  PidSubscriptionEnd,
} from '../../src/identity/spire/delegated-identity-client';
import { SpireUnavailableError } from '../../src/identity/spire/errors';
import { SpireIdentitySource, SpireSourceStatus } from '../../src/identity/spire/spire-identity-source';
import { validateX509Svid } from '../../src/identity/spire/x509-svid';
import { SLEEP_PATH, spawnRunning, stopChild } from '../identity/process-helpers';
import { SpireHarness, waitUntil } from '../helpers/spire';

/** Minimal event source shape shared by the subscriptions under test. */
interface UpdateSource<T> {
  on(event: 'update', listener: (update: T) => void): unknown;
  off(event: 'update', listener: (update: T) => void): unknown;
}

/** Waits for the first update that satisfies `match`. */
function waitForUpdate<T>(source: UpdateSource<T>, what: string, match: (update: T) => boolean, timeoutMs = 30_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      source.off('update', listener);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const listener = (update: T): void => {
      if (match(update)) {
        clearTimeout(timer);
        source.off('update', listener);
        resolve(update);
      }
    };
    source.on('update', listener);
  });
}

/** Resolves like `promise`, or rejects naming `what` after `timeoutMs`. */
function withTimeout<T>(promise: Promise<T>, what: string, timeoutMs = 30_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function hasId(update: DelegatedX509SvidUpdate, spiffeId: string): boolean {
  return update.svids.some((svid) => svid.spiffeId === spiffeId);
}

describe('SPIRE Delegated Identity API', () => {
  let harness: SpireHarness;
  const children: ChildProcess[] = [];

  /** Starts `sleep` under `uid`, so the unix attestor reports unix:uid:<uid>. */
  async function spawnWorkload(uid: number): Promise<ChildProcess & { pid: number }> {
    const child = await spawnRunning(SLEEP_PATH, ['300'], SLEEP_PATH, { uid, gid: uid });
    children.push(child);
    return child;
  }

  function workloadId(name: string): string {
    return `spiffe://${harness.trustDomain}/${name}`;
  }

  beforeAll(async () => {
    harness = await SpireHarness.start();
  });

  afterAll(async () => {
    await Promise.all(children.map((child) => stopChild(child)));
    await harness?.stop();
  });

  describe('DelegatedIdentityClient', () => {
    let client: DelegatedIdentityClient;

    beforeAll(async () => {
      client = new DelegatedIdentityClient({
        adminSocketPath: harness.adminSocketPath,
        backoff: { initialDelayMs: 100, maxDelayMs: 1000 },
      });
      await harness.createEntry({ spiffeId: workloadId('uid-4242'), selectors: ['unix:uid:4242'] });
    });

    afterAll(() => client?.close());

    it('subscribes by pid and gets a valid SVID', async () => {
      const child = await spawnWorkload(4242);
      const bundles = client.subscribeToX509Bundles();
      const subscription = client.subscribeToX509SvidsByPid(child.pid);
      try {
        const bundleUpdate = await waitForUpdate<DelegatedX509BundlesUpdate>(bundles, 'bundles', () => true);
        expect(bundleUpdate.bundles.get(harness.trustDomain)?.length).toBeGreaterThan(0);

        const update = await waitForUpdate<DelegatedX509SvidUpdate>(subscription, 'SVID of uid 4242', (u) => hasId(u, workloadId('uid-4242')));
        expect(update.svids.map((svid) => svid.spiffeId)).toEqual([workloadId('uid-4242')]);
        const validated = validateX509Svid(update.svids[0].chain, bundleUpdate.bundles);
        expect(validated.spiffeId).toBe(workloadId('uid-4242'));
        expect(subscription.startTime).toBe(readStartTime(child.pid));
      } finally {
        subscription.close();
        bundles.close();
      }
    });

    it('subscribes by selectors', async () => {
      const subscription = client.subscribeToX509SvidsBySelectors(['unix:uid:4242']);
      try {
        const update = await waitForUpdate<DelegatedX509SvidUpdate>(subscription, 'SVID for unix:uid:4242', (u) => hasId(u, workloadId('uid-4242')));
        expect(update.svids).toHaveLength(1);
      } finally {
        subscription.close();
      }
    });

    it('sends an update without the ID after the entry is deleted', async () => {
      const entryId = await harness.createEntry({ spiffeId: workloadId('uid-4243'), selectors: ['unix:uid:4243'] });
      const child = await spawnWorkload(4243);
      const subscription = client.subscribeToX509SvidsByPid(child.pid);
      try {
        await waitForUpdate<DelegatedX509SvidUpdate>(subscription, 'SVID of uid 4243', (u) => hasId(u, workloadId('uid-4243')));
        await harness.deleteEntry(entryId);
        const update = await waitForUpdate<DelegatedX509SvidUpdate>(subscription, 'update after entry deletion', (u) => !hasId(u, workloadId('uid-4243')));
        expect(update.svids).toEqual([]);
      } finally {
        subscription.close();
      }
    });

    it('ends when the process exits', async () => {
      const child = await spawnWorkload(4242);
      const subscription = client.subscribeToX509SvidsByPid(child.pid, { livenessIntervalMs: 50 });
      const ended = new Promise<PidSubscriptionEnd>((resolve) => subscription.on('end', resolve));
      await waitForUpdate<DelegatedX509SvidUpdate>(subscription, 'SVID of uid 4242', (u) => hasId(u, workloadId('uid-4242')));
      await stopChild(child);
      expect(await withTimeout(ended, 'end of the subscription')).toEqual({ reason: 'process-exited' });
    });

    it('drops an update for a reused pid', async () => {
      const child = await spawnWorkload(4242);
      const realStartTime = readStartTime(child.pid) as bigint;
      let reused = false;
      // The liveness timer is off, so only the check on each update can notice the reuse.
      const subscription = client.subscribeToX509SvidsByPid(child.pid, {
        livenessIntervalMs: 3_600_000,
        readStartTime: () => (reused ? realStartTime + 1n : realStartTime),
      });
      const ended = new Promise<PidSubscriptionEnd>((resolve) => subscription.on('end', resolve));
      const updatesAfterReuse: DelegatedX509SvidUpdate[] = [];
      await waitForUpdate<DelegatedX509SvidUpdate>(subscription, 'SVID of uid 4242', (u) => hasId(u, workloadId('uid-4242')));

      // The process exits and, as far as the subscription can tell, a new one gets its pid.
      await stopChild(child);
      reused = true;
      subscription.on('update', (update) => updatesAfterReuse.push(update));
      // A new entry for the same selectors makes spire-agent send the subscription an update.
      const extraEntry = await harness.createEntry({ spiffeId: workloadId('uid-4242-extra'), selectors: ['unix:uid:4242'] });
      try {
        const end = await withTimeout(ended, 'end of the subscription');
        expect(end).toEqual({ reason: 'pid-reused', expectedStartTime: realStartTime, startTime: realStartTime + 1n });
        expect(updatesAfterReuse).toEqual([]);
      } finally {
        subscription.close();
        await harness.deleteEntry(extraEntry);
      }
    });

    it('rejects an invalid pid', () => {
      expect(() => client.subscribeToX509SvidsByPid(0)).toThrow(RangeError);
      expect(() => client.subscribeToX509SvidsBySelectors([])).toThrow(RangeError);
      expect(() => client.subscribeToX509SvidsBySelectors(['unix'])).toThrow(/expected 'type:value'/);
    });
  });

  describe('SpireIdentitySource', () => {
    let source: SpireIdentitySource;
    const statuses: SpireSourceStatus[] = [];
    const changes: Array<[number, string | null]> = [];

    beforeAll(async () => {
      await harness.createEntry({ spiffeId: workloadId('uid-4250'), selectors: ['unix:uid:4250'] });
    });

    afterEach(() => {
      source?.close();
      statuses.length = 0;
      changes.length = 0;
    });

    function startSource(
      readStartTimeOverride?: (pid: number) => bigint | null,
      livenessIntervalMs = 50,
    ): SpireIdentitySource {
      source = new SpireIdentitySource({
        adminSocketPath: harness.adminSocketPath,
        backoff: { initialDelayMs: 100, maxDelayMs: 1000 },
        livenessIntervalMs,
        attestTimeoutMs: 20_000,
        readStartTime: readStartTimeOverride,
      });
      source.on('status', (status) => statuses.push(status));
      source.on('change', (pid, spiffeId) => changes.push([pid, spiffeId]));
      return source;
    }

    /** Attests until SPIRE returns an ID, because a new entry reaches the agent on its sync. */
    async function attestUntilIdentified(pid: number): Promise<string> {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const spiffeId = await source.attest(pid);
        if (spiffeId !== null) {
          return spiffeId;
        }
        if (Date.now() > deadline) {
          throw new Error(`pid ${pid} got no SPIFFE ID within 30 s`);
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }

    it('attests a process by pid', async () => {
      const child = await spawnWorkload(4250);
      startSource();
      expect(await attestUntilIdentified(child.pid)).toBe(workloadId('uid-4250'));
      expect(source.identityOf(child.pid)).toEqual({ spiffeId: workloadId('uid-4250'), startTime: readStartTime(child.pid) });
      expect(source.available).toBe(true);
    });

    it('returns null without an entry or process', async () => {
      const unregistered = await spawnWorkload(4399);
      const exited = await spawnWorkload(4399);
      const exitedPid = exited.pid;
      await stopChild(exited);
      startSource();
      expect(await source.attest(unregistered.pid)).toBeNull();
      expect(source.identityOf(unregistered.pid)).toEqual({ spiffeId: null, startTime: readStartTime(unregistered.pid) });
      expect(await source.attest(exitedPid)).toBeNull();
      expect(source.identityOf(exitedPid)).toBeUndefined();
    });

    it('emits a null change when the entry is deleted', async () => {
      const entryId = await harness.createEntry({ spiffeId: workloadId('uid-4251'), selectors: ['unix:uid:4251'] });
      const child = await spawnWorkload(4251);
      startSource();
      expect(await attestUntilIdentified(child.pid)).toBe(workloadId('uid-4251'));
      await harness.deleteEntry(entryId);
      await waitUntil('change to null', () => changes.find(([pid, id]) => pid === child.pid && id === null));
      expect(source.identityOf(child.pid)?.spiffeId).toBeNull();
    });

    it('forgets a process that exits', async () => {
      const child = await spawnWorkload(4250);
      startSource();
      await attestUntilIdentified(child.pid);
      // A first null result followed by the ID is a change; only changes after the exit count.
      changes.length = 0;
      await stopChild(child);
      await waitUntil('exited pid to be forgotten', () => (source.identityOf(child.pid) === undefined ? true : undefined));
      expect(changes).toEqual([]);
    });

    it('drops a result for a reused pid', async () => {
      const child = await spawnWorkload(4250);
      const realStartTime = readStartTime(child.pid) as bigint;
      let reused = false;
      // The liveness timer is off, so only the check on each update can notice the reuse.
      startSource((pid) => (pid === child.pid && reused ? realStartTime + 1n : readStartTime(pid)), 3_600_000);
      expect(await attestUntilIdentified(child.pid)).toBe(workloadId('uid-4250'));
      changes.length = 0;

      await stopChild(child);
      reused = true;
      // A new entry for the same selectors makes spire-agent send the subscription an update.
      const extraEntry = await harness.createEntry({ spiffeId: workloadId('uid-4250-extra'), selectors: ['unix:uid:4250'] });
      try {
        await waitUntil('reused pid to be dropped', () => (source.identityOf(child.pid) === undefined ? true : undefined));
        // The new process under the pid is not given the old identity.
        expect(changes).toEqual([]);
        expect(source.identities().has(child.pid)).toBe(false);
      } finally {
        await harness.deleteEntry(extraEntry);
      }
    });

    it('keeps identities while spire-agent is down', async () => {
      const keptWorkload = await spawnWorkload(4250);
      const entryId = await harness.createEntry({ spiffeId: workloadId('uid-4252'), selectors: ['unix:uid:4252'] });
      const deletedMeanwhile = await spawnWorkload(4252);
      startSource();
      expect(await attestUntilIdentified(keptWorkload.pid)).toBe(workloadId('uid-4250'));
      expect(await attestUntilIdentified(deletedMeanwhile.pid)).toBe(workloadId('uid-4252'));
      changes.length = 0;

      await harness.stopAgent();
      const outage = await waitUntil('unavailable status', () => statuses.find((status) => status.state === 'unavailable'));
      expect(outage.state).toBe('unavailable');
      expect(source.available).toBe(false);
      expect(source.identityOf(keptWorkload.pid)?.spiffeId).toBe(workloadId('uid-4250'));
      expect(source.identityOf(deletedMeanwhile.pid)?.spiffeId).toBe(workloadId('uid-4252'));
      await expect(source.attest(keptWorkload.pid)).rejects.toBeInstanceOf(SpireUnavailableError);

      // Several retries with growing delays while the agent is down.
      await waitUntil('third retry', () => (statuses.filter((status) => status.state === 'unavailable').length >= 3 ? true : undefined));
      const delays = statuses.flatMap((status) => (status.state === 'unavailable' ? [status.retryInMs] : []));
      expect(delays[2]).toBeGreaterThan(delays[0]);

      await harness.deleteEntry(entryId);
      await harness.startAgent();
      await waitUntil('available status', () => (source.available ? true : undefined));
      expect(statuses.at(-1)).toEqual({ state: 'available' });

      // The source subscribed again for both processes; the deleted entry shows up as a change.
      await waitUntil('change to null after recovery', () =>
        changes.find(([pid, id]) => pid === deletedMeanwhile.pid && id === null),
      );
      await waitUntil('identity of the kept workload', () =>
        source.identityOf(keptWorkload.pid)?.spiffeId === workloadId('uid-4250') ? true : undefined,
      );
      expect(await source.attest(keptWorkload.pid)).toBe(workloadId('uid-4250'));
      // The restart did not make the kept workload lose its identity, not even for a moment.
      expect(changes.filter(([pid]) => pid === keptWorkload.pid)).toEqual([]);
    });
  });
});
