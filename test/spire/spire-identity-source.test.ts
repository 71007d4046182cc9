import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SpireUnavailableError } from '../../src/identity/spire/errors';
import {
  selectLowestSpiffeId,
  SpireIdentitySource,
  SpireSourceStatus,
} from '../../src/identity/spire/spire-identity-source';

describe('SpireIdentitySource without spire-agent', () => {
  let directory: string;
  let source: SpireIdentitySource;

  beforeEach(() => {
    directory = mkdtempSync(join(tmpdir(), 'sigil-no-spire-'));
    // Nothing listens on this path, as when spire-agent is not running.
    source = new SpireIdentitySource({
      adminSocketPath: join(directory, 'admin.sock'),
      backoff: { initialDelayMs: 50, maxDelayMs: 200 },
    });
  });

  afterEach(() => {
    source.close();
    rmSync(directory, { recursive: true, force: true });
  });

  it('rejects attest with SpireUnavailableError', async () => {
    const statuses: SpireSourceStatus[] = [];
    source.on('status', (status) => statuses.push(status));

    const error = await source.attest(process.pid).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(SpireUnavailableError);
    expect((error as Error).message).toContain(join(directory, 'admin.sock'));
    expect(source.available).toBe(false);
    expect(statuses[0]).toMatchObject({ state: 'unavailable', attempt: 1 });

    // Later calls fail at once while the retries go on.
    await expect(source.attest(process.pid)).rejects.toBeInstanceOf(SpireUnavailableError);
    expect(source.identities().size).toBe(0);
  });

  it('keeps retrying with growing delays', async () => {
    const statuses: SpireSourceStatus[] = [];
    source.on('status', (status) => statuses.push(status));
    source.start();
    await new Promise<void>((resolve) => {
      source.on('status', () => {
        if (statuses.length >= 4) {
          resolve();
        }
      });
    });
    const attempts = statuses.map((status) => (status.state === 'unavailable' ? status.attempt : 0));
    expect(attempts).toEqual([1, 2, 3, 4]);
    const delays = statuses.map((status) => (status.state === 'unavailable' ? status.retryInMs : 0));
    expect(delays[3]).toBeLessThanOrEqual(200);
    expect(delays[2]).toBeGreaterThan(delays[0]);
  });

  it('rejects invalid pids and calls after close', async () => {
    await expect(source.attest(0)).rejects.toBeInstanceOf(RangeError);
    source.close();
    await expect(source.attest(process.pid)).rejects.toThrow(/closed/);
  });
});

describe('selectLowestSpiffeId', () => {
  it('picks the lowest ID in byte order', () => {
    expect(selectLowestSpiffeId(['spiffe://td/b', 'spiffe://td/B', 'spiffe://td/a'])).toBe('spiffe://td/B');
    expect(selectLowestSpiffeId([])).toBeNull();
  });
});
