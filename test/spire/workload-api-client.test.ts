import { sign, verify } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SpireRpcError } from '../../src/identity/spire/errors';
import { workloadApiClientConstructor } from '../../src/identity/spire/spire-protos';
import { StreamEnd } from '../../src/identity/spire/reconnecting-stream';
import { WorkloadApiClient, X509BundlesUpdate } from '../../src/identity/spire/workload-api-client';
import { validateX509Svid } from '../../src/identity/spire/x509-svid';
import { SpireHarness } from '../helpers/spire';

describe('WorkloadApiClient against spire-agent', () => {
  let harness: SpireHarness;
  let client: WorkloadApiClient;

  beforeAll(async () => {
    harness = await SpireHarness.start();
    client = new WorkloadApiClient({
      address: harness.workloadApiAddress,
      backoff: { initialDelayMs: 200, maxDelayMs: 1000 },
    });
  });

  afterAll(async () => {
    client?.close();
    await harness?.stop();
  });

  it('fetches and validates its own X.509-SVID', async () => {
    // The test process's entry reaches the agent on its next sync, so the first calls may get
    // PermissionDenied; fetchX509Svids retries those.
    const update = await client.fetchX509Svids(30_000);

    expect(update.svids).toHaveLength(1);
    const svid = update.svids[0];
    expect(svid.spiffeId).toBe(harness.delegateId);
    expect(svid.bundle.length).toBeGreaterThan(0);

    const validated = validateX509Svid(svid.chain, update.bundles);
    expect(validated.spiffeId).toBe(harness.delegateId);
    expect(validated.expiresAt.getTime()).toBeGreaterThan(Date.now());

    // The private key belongs to the leaf certificate.
    const data = Buffer.from('sigil');
    const signature = sign('sha256', data, svid.privateKey);
    expect(verify('sha256', data, svid.chain[0].publicKey, signature)).toBe(true);
  });

  it('streams the trust domain bundle', async () => {
    const watch = client.watchX509Bundles();
    try {
      const update = await new Promise<X509BundlesUpdate>((resolve) => watch.once('update', resolve));
      const roots = update.bundles.get(harness.trustDomain);
      expect(roots?.length).toBeGreaterThan(0);

      const svids = await client.fetchX509Svids(30_000);
      expect(validateX509Svid(svids.svids[0].chain, update.bundles).spiffeId).toBe(harness.delegateId);
    } finally {
      watch.close();
    }
  });

  it('is rejected by spire-agent without the security header', async () => {
    // Shows that the header the client adds is what spire-agent checks.
    const Constructor = workloadApiClientConstructor();
    const raw = new Constructor(`unix://${harness.workloadSocketPath}`, grpc.credentials.createInsecure());
    try {
      const status = await new Promise<grpc.StatusObject>((resolve) => {
        const call = (raw as unknown as { FetchX509SVID(request: object): grpc.ClientReadableStream<unknown> }).FetchX509SVID({});
        call.on('error', () => undefined);
        call.on('status', resolve);
      });
      expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(status.details).toContain('security header');
    } finally {
      raw.close();
    }
  });
});

describe('WorkloadApiClient retries', () => {
  let server: grpc.Server;
  let socketDirectory: string;
  let socketPath: string;
  let statusToReturn: grpc.status;
  let calls: Array<string | undefined>;

  beforeAll(async () => {
    socketDirectory = mkdtempSync(join(tmpdir(), 'sigil-wl-'));
    socketPath = join(socketDirectory, 'api.sock');
    calls = [];
    server = new grpc.Server();
    const failStream = (call: grpc.ServerWritableStream<unknown, unknown>): void => {
      calls.push(call.metadata.get('workload.spiffe.io')[0]?.toString());
      call.emit('error', { code: statusToReturn, details: `test status ${grpc.status[statusToReturn]}` });
    };
    server.addService(workloadApiClientConstructor().service, {
      FetchX509SVID: failStream,
      FetchX509Bundles: failStream,
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (error) =>
        error === null ? resolve() : reject(error),
      ),
    );
  });

  afterAll(() => {
    server?.forceShutdown();
    rmSync(socketDirectory, { recursive: true, force: true });
  });

  function runUntilEndOrRetries(retries: number): Promise<{ end?: StreamEnd; retryCodes: grpc.status[] }> {
    const client = new WorkloadApiClient({
      address: `unix://${socketPath}`,
      backoff: { initialDelayMs: 20, maxDelayMs: 40 },
    });
    const watch = client.watchX509Svids();
    const retryCodes: grpc.status[] = [];
    return new Promise((resolve) => {
      const finish = (end?: StreamEnd): void => {
        watch.close();
        client.close();
        resolve({ end, retryCodes });
      };
      watch.on('retry', (retry) => {
        retryCodes.push(retry.error.code);
        if (retryCodes.length >= retries) {
          finish();
        }
      });
      watch.on('end', (end) => finish(end));
    });
  }

  it('sends the security header on every call', async () => {
    statusToReturn = grpc.status.UNAVAILABLE;
    calls.length = 0;
    await runUntilEndOrRetries(3);
    expect(calls.length).toBeGreaterThanOrEqual(3);
    expect(calls.every((value) => value === 'true')).toBe(true);
  });

  it('retries PermissionDenied with backoff', async () => {
    statusToReturn = grpc.status.PERMISSION_DENIED;
    const result = await runUntilEndOrRetries(3);
    expect(result.retryCodes).toEqual([
      grpc.status.PERMISSION_DENIED,
      grpc.status.PERMISSION_DENIED,
      grpc.status.PERMISSION_DENIED,
    ]);
  });

  it('does not retry InvalidArgument', async () => {
    statusToReturn = grpc.status.INVALID_ARGUMENT;
    calls.length = 0;
    const result = await runUntilEndOrRetries(1);
    expect(result.retryCodes).toEqual([]);
    expect(result.end?.reason).toBe('failed');
    const error = (result.end as { error: SpireRpcError }).error;
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(calls).toHaveLength(1);
  });

  it('fails fetchX509Svids on InvalidArgument', async () => {
    statusToReturn = grpc.status.INVALID_ARGUMENT;
    const client = new WorkloadApiClient({ address: `unix://${socketPath}` });
    try {
      await expect(client.fetchX509Svids(5000)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    } finally {
      client.close();
    }
  });
});
