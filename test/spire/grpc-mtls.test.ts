import { ChildProcess, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DetailedPeerCertificate, connect as tlsConnect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditEvent } from '../../src/events/audit-event';
import { TlsServer, watchEvents } from '../../src/events/grpc-client';
import { SvidChannelCredentials } from '../../src/events/mtls-client';
import { chainToPem } from '../../src/events/mtls-server';
import { SpiffeIdAllowList } from '../../src/identity/spiffe-id-allow-list';
import { WorkloadApiClient, X509SvidUpdate } from '../../src/identity/spire';
import { AgentProcess, REPO, SIGIL, waitFor } from '../helpers/agent-process';
import { findFreePort, SpireHarness } from '../helpers/spire';

// The agent's audit service on TCP with mTLS, against real SPIRE: the agent presents its
// X.509-SVID from the Workload API and authorises clients by the SPIFFE ID in theirs. Clients
// run as `sigil events` under their own uids, so SPIRE's unix attestor gives each its own SVID.

const READER_UID = 4271;
const INTRUDER_UID = 4272;
/** The agent's (and this test process's) SVID lifetime: short, so that it rotates during the test. */
const AGENT_SVID_TTL_SECONDS = 20;

let harness: SpireHarness;
let foreign: SpireHarness;
let agent: AgentProcess;
let work: string;
let port: number;
const children: ChildProcess[] = [];

function id(path: string): string {
  return `spiffe://${harness.trustDomain}${path}`;
}

/** Runs `sigil events` over TCP as another user and collects its output. */
function sigilEvents(
  uid: number,
  extra: string[],
): { child: ChildProcess; stdout: () => string; stderr: () => string } {
  const child = spawn(
    process.execPath,
    [
      SIGIL,
      'events',
      '--server',
      `tcp://127.0.0.1:${port}`,
      '--spire-workload-api',
      harness.workloadApiAddress,
      '--since-seq',
      '1',
      ...extra,
    ],
    { uid, gid: uid, cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return { child, stdout: () => stdout, stderr: () => stderr };
}

function exitCode(child: ChildProcess, timeoutMs = 30_000): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null) {
      resolve(child.exitCode);
      return;
    }
    const timer = setTimeout(
      () => reject(new Error(`pid ${child.pid} did not exit in ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/** Waits for a line of the agent's log that contains every one of the texts, and returns it. */
function agentLogLine(...texts: string[]): Promise<string> {
  return waitFor(`an agent log line with ${texts.join(' and ')}`, () =>
    agent.stderr.split('\n').find((line) => texts.every((text) => line.includes(text))),
  );
}

/** Opens a Watch from this process and resolves with the events before the first status. */
function watchOnce(
  tls: TlsServer,
  until: (events: AuditEvent[]) => boolean,
): Promise<{ events: AuditEvent[]; error?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    const events: AuditEvent[] = [];
    const stream = watchEvents({ socketPath: '', tls, sinceSeq: 1 }, (event) => {
      events.push(event);
      if (until(events)) {
        stream.cancel();
        resolve({ events });
      }
    });
    stream.on('error', (error: grpc.ServiceError) => resolve({ events, error }));
  });
}

async function fetchSvid(address: string): Promise<X509SvidUpdate> {
  const client = new WorkloadApiClient({ address });
  try {
    return await client.fetchX509Svids(30_000);
  } finally {
    client.close();
  }
}

/** PEM credentials of an SVID update's default SVID, with a CA bundle and no server ID check. */
function rawCredentials(
  svid: X509SvidUpdate | null,
  bundle: X509Certificate[],
): grpc.ChannelCredentials {
  const first = svid?.svids[0];
  return grpc.credentials.createSsl(
    chainToPem(bundle),
    first ? Buffer.from(first.privateKey.export({ type: 'pkcs8', format: 'pem' })) : null,
    first ? chainToPem(first.chain) : null,
    { checkServerIdentity: () => undefined },
  );
}

function tlsServer(credentials: () => grpc.ChannelCredentials): TlsServer {
  return {
    target: `127.0.0.1:${port}`,
    credentials,
    channelOptions: () => ({ 'grpc.ssl_target_name_override': harness.trustDomain }),
  };
}

/**
 * Connects with TLS only, trusting only the bundle. Returns the serial number and expiry of the
 * leaf that the TCP listener presents, and the SHA-256 fingerprints of the chain OpenSSL built.
 */
function probeServerCertificate(
  client: X509SvidUpdate,
): Promise<{ serial: string; validTo: Date; chain: string[] }> {
  const svid = client.svids[0];
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      servername: harness.trustDomain,
      ca: chainToPem(client.bundles.get(harness.trustDomain) ?? []),
      cert: chainToPem(svid.chain),
      key: Buffer.from(svid.privateKey.export({ type: 'pkcs8', format: 'pem' })),
      ALPNProtocols: ['h2'],
      checkServerIdentity: () => undefined,
    });
    socket.once('secureConnect', () => {
      const certificate = socket.getPeerCertificate(true);
      const chain: string[] = [];
      for (let link: DetailedPeerCertificate | undefined = certificate; link;) {
        chain.push(link.fingerprint256);
        link = link.issuerCertificate === link ? undefined : link.issuerCertificate;
      }
      socket.destroy();
      resolve({ serial: certificate.serialNumber, validTo: new Date(certificate.valid_to), chain });
    });
    socket.once('error', reject);
  });
}

/** Returns the local addresses of TCP sockets listening on a port, from /proc/net/tcp and tcp6. */
function listeningAddresses(listenPort: number): string[] {
  const addresses: string[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 4 || fields[3] !== '0A') continue;
      const [address, hexPort] = fields[1].split(':');
      if (parseInt(hexPort, 16) === listenPort) addresses.push(address);
    }
  }
  return addresses;
}

beforeAll(async () => {
  // With an upstream CA, every SVID chain is the leaf plus the server CA as an intermediate.
  harness = await SpireHarness.start({
    delegateX509SvidTtlSeconds: AGENT_SVID_TTL_SECONDS,
    upstreamCa: true,
  });
  foreign = await SpireHarness.start({ trustDomain: 'sigil-foreign.example' });
  // Clients under other uids reach the Workload API socket through the harness directory.
  chmodSync(harness.directory, 0o755);
  await harness.createEntry({ spiffeId: id('/soc/reader'), selectors: [`unix:uid:${READER_UID}`] });
  await harness.createEntry({ spiffeId: id('/web'), selectors: [`unix:uid:${INTRUDER_UID}`] });

  work = mkdtempSync(join(tmpdir(), 'sigil-mtls-'));
  // A policy without rules: this suite is about the event stream, not about enforcement.
  writeFileSync(
    join(work, 'policy.yaml'),
    'apiVersion: sigil.dev/v1alpha1\nkind: IdentityPolicy\nmetadata: {name: no-rules}\n' +
      'spec: {subject: {spiffeId: spiffe://example.org/nobody}}\n',
  );
  port = await findFreePort();
  agent = AgentProcess.spawn(
    [
      '--registration',
      join(REPO, 'examples', 'registration.yaml'),
      '--policy',
      join(work, 'policy.yaml'),
      '--spire-workload-api',
      harness.workloadApiAddress,
      '--grpc-listen',
      `127.0.0.1:${port}`,
      '--grpc-authorized-id-prefix',
      id('/soc'),
      '--grpc-authorized-id',
      harness.delegateId,
    ],
    join(work, 'sigil.sock'),
  );
  await agent.ready();
  await waitFor(
    'the TCP listener',
    () => (agent.stderr.includes('listening on TCP with mTLS') ? true : undefined),
    30_000,
  );
}, 240_000);

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await agent?.stop();
  await harness?.stop();
  await foreign?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('audit service over TCP with mTLS', () => {
  it('listens only on the address given', () => {
    expect(listeningAddresses(port)).toEqual(['0100007F']);
  });

  it('presents the SVID with its intermediate', async () => {
    const own = await fetchSvid(harness.workloadApiAddress);
    const intermediate = own.svids[0].chain[1];
    expect(own.svids[0].chain).toHaveLength(2);
    const bundle = own.bundles.get(harness.trustDomain) ?? [];
    expect(bundle.map((certificate) => certificate.fingerprint256)).not.toContain(
      intermediate.fingerprint256,
    );
    // The client trusts only the root, so the handshake succeeds only if the server sends the
    // intermediate, and the chain that OpenSSL built runs leaf, intermediate, root.
    const presented = await probeServerCertificate(own);
    expect(presented.chain).toHaveLength(3);
    expect(presented.chain[1]).toBe(intermediate.fingerprint256);
  });

  it('streams events to an authorised client', async () => {
    const reader = sigilEvents(READER_UID, ['--server-id', harness.delegateId]);
    await waitFor(
      'an agent event on the reader stdout',
      () => (reader.stdout().includes('"type":"agent"') ? true : undefined),
      30_000,
    );
    const first = JSON.parse(reader.stdout().split('\n')[0]) as AuditEvent;
    expect(first.seq).toBe(1);
    expect(first.type).toBe('agent');
    reader.child.kill('SIGTERM');
    await agentLogLine('audit mTLS client authorised', `"spiffeId":"${id('/soc/reader')}"`);
  });

  it('rejects an unauthorised SPIFFE ID with PERMISSION_DENIED', async () => {
    const intruder = sigilEvents(INTRUDER_UID, ['--server-id', harness.delegateId]);
    expect(await exitCode(intruder.child)).toBe(1);
    expect(intruder.stdout()).toBe('');
    expect(intruder.stderr()).toContain('PERMISSION_DENIED');
    expect(intruder.stderr()).toContain(`SPIFFE ID ${id('/web')} is not authorised`);
    await agentLogLine(
      'audit mTLS call rejected',
      `"peerSpiffeId":"${id('/web')}"`,
      '"code":"PERMISSION_DENIED"',
    );
  });

  it('rejects a client without a certificate', async () => {
    const own = await fetchSvid(harness.workloadApiAddress);
    const bundle = own.bundles.get(harness.trustDomain) ?? [];
    const result = await watchOnce(
      tlsServer(() => rawCredentials(null, bundle)),
      () => true,
    );
    expect(result.events).toEqual([]);
    expect(result.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(result.error?.details).toContain(
      'no client certificate that chains to the X.509 bundle',
    );
    await agentLogLine(
      'audit mTLS call rejected',
      '"peerSpiffeId":null',
      '"code":"UNAUTHENTICATED"',
    );
  });

  it('rejects a certificate from another trust domain', async () => {
    const own = await fetchSvid(harness.workloadApiAddress);
    const other = await fetchSvid(foreign.workloadApiAddress);
    expect(other.svids[0].spiffeId).toBe(foreign.delegateId);
    const bundle = own.bundles.get(harness.trustDomain) ?? [];
    const result = await watchOnce(
      tlsServer(() => rawCredentials(other, bundle)),
      () => true,
    );
    expect(result.events).toEqual([]);
    expect(result.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(result.error?.details).toContain(
      `chains to the X.509 bundle of trust domain ${harness.trustDomain}`,
    );
  });

  it('accepts an exact authorised SPIFFE ID', async () => {
    const credentials = await SvidChannelCredentials.create({
      workloadApi: harness.workloadApiAddress,
      expectedServer: { kind: 'ids', allowList: SpiffeIdAllowList.parse([harness.delegateId]) },
    });
    try {
      const server: TlsServer = {
        target: `127.0.0.1:${port}`,
        credentials: () => credentials.channelCredentials(),
        channelOptions: () => credentials.channelOptions(),
      };
      const result = await watchOnce(server, (events) => events.length >= 1);
      expect(result.error).toBeUndefined();
      expect(result.events[0].seq).toBe(1);
    } finally {
      credentials.close();
    }
  });

  it('rejects a server with another SPIFFE ID', async () => {
    const client = sigilEvents(READER_UID, ['--server-id', id('/not-the-agent')]);
    expect(await exitCode(client.child)).toBe(1);
    expect(client.stdout()).toBe('');
    expect(client.stderr()).toContain(
      `the server SPIFFE ID ${harness.delegateId} is not the expected ${id('/not-the-agent')}`,
    );
  });

  it('requires a server SPIFFE ID on the client', async () => {
    const client = sigilEvents(READER_UID, []);
    expect(await exitCode(client.child)).toBe(1);
    expect(client.stderr()).toContain('needs --server-id');
  });

  it('presents a rotated SVID to new connections', async () => {
    const own = await fetchSvid(harness.workloadApiAddress);
    const before = await probeServerCertificate(own);
    let after = before;
    const deadline = Date.now() + AGENT_SVID_TTL_SECONDS * 2 * 1000;
    while (after.serial === before.serial && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      after = await probeServerCertificate(await fetchSvid(harness.workloadApiAddress));
    }
    expect(after.serial).not.toBe(before.serial);
    expect(after.validTo.getTime()).toBeGreaterThan(before.validTo.getTime());
    await agentLogLine('presents a new X.509-SVID to new connections');

    // Past the first SVID's expiry, a new client still connects: the server does not present
    // the expired certificate.
    const wait = before.validTo.getTime() + 1000 - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const fresh = await fetchSvid(harness.workloadApiAddress);
    const bundle = fresh.bundles.get(harness.trustDomain) ?? [];
    const result = await watchOnce(
      tlsServer(() => rawCredentials(fresh, bundle)),
      (events) => events.length >= 1,
    );
    expect(result.error).toBeUndefined();
    expect(result.events.length).toBeGreaterThanOrEqual(1);
  }, 90_000);
});

describe('sigil run --grpc-listen without an SVID', () => {
  it('refuses to start without --spire-workload-api', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'sigil-mtls-nosvid-'));
    const failing = AgentProcess.spawn(
      ['--grpc-listen', `127.0.0.1:${port + 1}`, '--grpc-authorized-id', id('/soc/reader')],
      join(directory, 'sigil.sock'),
    );
    try {
      expect(await failing.waitForExit()).toBe(1);
      expect(failing.stderr).toContain('needs --spire-workload-api');
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  it('refuses to start when the Workload API issues no SVID', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'sigil-mtls-nosvid-'));
    const failing = AgentProcess.spawn(
      [
        '--registration',
        join(REPO, 'examples', 'registration.yaml'),
        '--policy',
        join(work, 'policy.yaml'),
        '--spire-workload-api',
        `unix://${join(directory, 'missing.sock')}`,
        '--grpc-listen',
        `127.0.0.1:${port + 1}`,
        '--grpc-authorized-id',
        id('/soc/reader'),
        '--grpc-svid-timeout',
        '2',
      ],
      join(directory, 'sigil.sock'),
    );
    try {
      expect(await failing.waitForExit()).toBe(1);
      expect(failing.stderr).toContain(
        `--grpc-listen 127.0.0.1:${port + 1} needs the agent's X.509-SVID`,
      );
      expect(failing.stderr).toContain('issued no valid X.509-SVID within 2000 ms');
      expect(listeningAddresses(port + 1)).toEqual([]);
      // The agent gave up before it loaded any BPF program, so nothing was pinned.
      expect(existsSync(failing.pinDir)).toBe(false);
    } finally {
      failing.uninstall();
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
