import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseServerAddress } from '../../src/cli/events-command';
import { grpcListenSettings } from '../../src/cli/mtls-options';
import { checkServerSvid } from '../../src/events/mtls-client';
import {
  authorizePeer,
  parseTcpListenAddress,
  SvidCertificateProvider,
  tcpTarget,
} from '../../src/events/mtls-server';
import { SpiffeIdAllowList } from '../../src/identity/spiffe-id-allow-list';

// The authorisation logic of the mTLS listener and client. These certificates come from the
// openssl CLI, not from SPIRE: the tests check the decisions made on a leaf that TLS has already
// verified, and test/spire/grpc-mtls.test.ts runs the same paths against real SPIRE.

const TRUST_DOMAIN = 'example.org';
let directory: string;
const leaves: Record<string, Buffer> = {};

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: directory, stdio: 'pipe' });
}

/** Issues a certificate from the test CA with the given extensions, and returns its DER. */
function issue(name: string, extensions: string[]): Buffer {
  openssl([
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${name}`,
  ]);
  writeFileSync(join(directory, `${name}.ext`), `${extensions.join('\n')}\n`);
  openssl([
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '1',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.pem`,
  ]);
  return new X509Certificate(readFileSync(join(directory, `${name}.pem`))).raw;
}

/** Extensions of an X.509-SVID leaf with the given URI SANs. */
function svidExtensions(...uris: string[]): string[] {
  return [
    'basicConstraints=critical,CA:false',
    'keyUsage=critical,digitalSignature,keyEncipherment,keyAgreement',
    'extendedKeyUsage=serverAuth,clientAuth',
    `subjectAltName=${uris.map((uri) => `URI:${uri}`).join(',')}`,
  ];
}

beforeAll(() => {
  directory = mkdtempSync(join(tmpdir(), 'sigil-mtls-certs-'));
  openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '1',
    '-subj',
    '/CN=test CA',
    '-addext',
    'basicConstraints=critical,CA:true',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  leaves.reader = issue('reader', svidExtensions('spiffe://example.org/soc/reader'));
  leaves.socAdmin = issue('soc-admin', svidExtensions('spiffe://example.org/soc-admin'));
  leaves.web = issue('web', svidExtensions('spiffe://example.org/web'));
  leaves.agent = issue('agent', svidExtensions('spiffe://example.org/sigil/agent'));
  leaves.foreign = issue('foreign', svidExtensions('spiffe://other.example/soc/reader'));
  leaves.twoIds = issue(
    'two-ids',
    svidExtensions('spiffe://example.org/soc/reader', 'spiffe://example.org/web'),
  );
  leaves.noUri = issue('no-uri', [
    'basicConstraints=critical,CA:false',
    'keyUsage=critical,digitalSignature',
    'subjectAltName=DNS:reader.example.org',
  ]);
  leaves.rootPath = issue('root-path', svidExtensions('spiffe://example.org'));
  leaves.ca = issue('sub-ca', [
    'basicConstraints=critical,CA:true',
    'keyUsage=critical,keyCertSign,cRLSign',
    'subjectAltName=URI:spiffe://example.org/soc/reader',
  ]);
  leaves.signer = issue('signer', [
    'basicConstraints=critical,CA:false',
    'keyUsage=critical,digitalSignature,keyCertSign',
    'subjectAltName=URI:spiffe://example.org/soc/reader',
  ]);
});

afterAll(() => {
  if (directory) rmSync(directory, { recursive: true, force: true });
});

describe('authorizePeer', () => {
  const allowList = SpiffeIdAllowList.parse(
    ['spiffe://example.org/sigil/agent'],
    ['spiffe://example.org/soc'],
  );

  it.each([
    ['reader', 'spiffe://example.org/soc/reader'],
    ['agent', 'spiffe://example.org/sigil/agent'],
  ])('allows %s', (leaf, spiffeId) => {
    expect(authorizePeer(leaves[leaf], TRUST_DOMAIN, allowList)).toEqual({
      allowed: true,
      spiffeId,
    });
  });

  it.each([
    ['web', 'spiffe://example.org/web'],
    ['socAdmin', 'spiffe://example.org/soc-admin'],
  ])('denies %s with PERMISSION_DENIED', (leaf, spiffeId) => {
    const decision = authorizePeer(leaves[leaf], TRUST_DOMAIN, allowList);
    expect(decision.allowed).toBe(false);
    if (decision.allowed) return;
    expect(decision.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(decision.spiffeId).toBe(spiffeId);
    expect(decision.reason).toContain(`SPIFFE ID ${spiffeId} is not authorised`);
  });

  it.each([
    ['foreign', 'spiffe://other.example/soc/reader', 'is not in trust domain example.org'],
    ['twoIds', null, 'has 2 URI SANs'],
    ['noUri', null, 'has 0 URI SANs'],
    ['rootPath', null, 'has no path'],
    ['ca', null, 'is a CA'],
    ['signer', null, 'includes keyCertSign or cRLSign'],
  ])('rejects %s with UNAUTHENTICATED', (leaf, spiffeId, reason) => {
    const decision = authorizePeer(leaves[leaf], TRUST_DOMAIN, allowList);
    expect(decision.allowed).toBe(false);
    if (decision.allowed) return;
    expect(decision.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(decision.spiffeId).toBe(spiffeId);
    expect(decision.reason).toContain(reason);
  });

  it('rejects a call without a verified certificate', () => {
    const decision = authorizePeer(undefined, TRUST_DOMAIN, allowList);
    expect(decision).toMatchObject({
      allowed: false,
      code: grpc.status.UNAUTHENTICATED,
      spiffeId: null,
    });
  });

  it('rejects an expired leaf', () => {
    const later = new Date(Date.now() + 3 * 24 * 3600 * 1000);
    const decision = authorizePeer(leaves.reader, TRUST_DOMAIN, allowList, later);
    expect(decision).toMatchObject({ allowed: false, code: grpc.status.UNAUTHENTICATED });
    if (!decision.allowed) expect(decision.reason).toContain('expired');
  });

  it('denies everyone with an empty allow list', () => {
    const decision = authorizePeer(leaves.reader, TRUST_DOMAIN, SpiffeIdAllowList.parse([]));
    expect(decision).toMatchObject({ allowed: false, code: grpc.status.PERMISSION_DENIED });
  });
});

describe('checkServerSvid', () => {
  const client = { trustDomain: TRUST_DOMAIN };
  const expectAgent = {
    kind: 'ids',
    allowList: SpiffeIdAllowList.parse(['spiffe://example.org/sigil/agent']),
  } as const;

  it('accepts the expected server SPIFFE ID', () => {
    expect(checkServerSvid(leaves.agent, client, expectAgent)).toBeUndefined();
  });

  it('rejects another SPIFFE ID of the trust domain', () => {
    expect(checkServerSvid(leaves.web, client, expectAgent)?.message).toBe(
      'the server SPIFFE ID spiffe://example.org/web is not the expected spiffe://example.org/sigil/agent (--server-id)',
    );
  });

  it('accepts any ID of the trust domain only when asked to', () => {
    expect(checkServerSvid(leaves.web, client, { kind: 'trust-domain' })).toBeUndefined();
    expect(checkServerSvid(leaves.foreign, client, { kind: 'trust-domain' })?.message).toContain(
      'is not in trust domain example.org',
    );
  });

  it.each([
    ['twoIds', 'has 2 URI SANs'],
    ['ca', 'is a CA'],
  ])('rejects a server certificate %s', (leaf, reason) => {
    expect(checkServerSvid(leaves[leaf], client, expectAgent)?.message).toContain(reason);
  });

  it('rejects a server without a certificate', () => {
    expect(checkServerSvid(undefined, client, expectAgent)?.message).toBe(
      'the server presented no certificate',
    );
  });
});

describe('parseTcpListenAddress', () => {
  it.each([
    ['127.0.0.1:7443', '127.0.0.1', 7443, '127.0.0.1:7443'],
    ['0.0.0.0:1', '0.0.0.0', 1, '0.0.0.0:1'],
    ['[::1]:65535', '::1', 65535, '[::1]:65535'],
  ])('parses %s', (text, host, port, target) => {
    const address = parseTcpListenAddress(text);
    expect(address).toEqual({ host, port });
    expect(tcpTarget(address)).toBe(target);
  });

  it.each([
    ['localhost:7443', 'is not an IP address'],
    ['agent.example.org:7443', 'is not an IP address'],
    ['127.0.0.1', 'expected IP:PORT'],
    [':7443', 'expected IP:PORT'],
    ['::1:7443', 'expected IP:PORT'],
    ['[127.0.0.1]:7443', 'only IPv6 addresses go in brackets'],
    ['127.0.0.1:0', 'the port must be 1 to 65535'],
    ['127.0.0.1:65536', 'the port must be 1 to 65535'],
    ['tcp://127.0.0.1:7443', 'expected IP:PORT'],
  ])('rejects %s', (text, reason) => {
    expect(() => parseTcpListenAddress(text)).toThrow(reason);
  });
});

describe('grpcListenSettings', () => {
  const base = { grpcSvidTimeout: 30, spireWorkloadApi: 'unix:///run/spire/api.sock' };

  it('returns nothing without --grpc-listen', () => {
    expect(grpcListenSettings(base)).toBeUndefined();
  });

  it('builds the listener settings', () => {
    const settings = grpcListenSettings({
      ...base,
      grpcListen: '127.0.0.1:7443',
      grpcAuthorizedId: ['spiffe://example.org/siem'],
      grpcAuthorizedIdPrefix: ['spiffe://example.org/soc'],
    });
    expect(settings?.address).toEqual({ host: '127.0.0.1', port: 7443 });
    expect(settings?.svidTimeoutMs).toBe(30_000);
    expect(settings?.allowList.allows('spiffe://example.org/soc/a')).toBe(true);
    expect(settings?.allowList.allows('spiffe://example.org/web')).toBe(false);
  });

  it.each([
    [
      {
        grpcListen: '127.0.0.1:7443',
        spireWorkloadApi: undefined,
        grpcAuthorizedId: ['spiffe://example.org/a'],
      },
      'needs --spire-workload-api',
    ],
    [{ grpcListen: '127.0.0.1:7443' }, 'authorises no client'],
    [{ grpcAuthorizedId: ['spiffe://example.org/a'] }, 'need --grpc-listen'],
    [
      { grpcListen: '127.0.0.1:7443', grpcAuthorizedId: ['spiffe://example.org/a/'] },
      'invalid --grpc-authorized-id "spiffe://example.org/a/": the path must not end',
    ],
    [
      { grpcListen: '127.0.0.1:7443', grpcAuthorizedIdPrefix: ['example.org/soc'] },
      'invalid --grpc-authorized-id-prefix "example.org/soc"',
    ],
    [
      { grpcListen: 'localhost:7443', grpcAuthorizedId: ['spiffe://example.org/a'] },
      'is not an IP address',
    ],
  ])('rejects %j', (flags, reason) => {
    expect(() => grpcListenSettings({ ...base, ...flags })).toThrow(reason);
  });
});

describe('parseServerAddress', () => {
  it.each([
    ['tcp://127.0.0.1:7443', '127.0.0.1:7443'],
    ['tcp://[::1]:7443', '[::1]:7443'],
    ['tcp://agent.example.org:7443', 'agent.example.org:7443'],
  ])('parses %s', (text, target) => {
    expect(parseServerAddress(text)).toBe(target);
  });

  it.each([
    '127.0.0.1:7443',
    'tcp://127.0.0.1',
    'unix:///run/sigil/sigil.sock',
    'tcp://127.0.0.1:7443/path',
    'tcp://user@127.0.0.1:7443',
  ])('rejects %s', (text) => {
    expect(() => parseServerAddress(text)).toThrow('expected tcp://host:port');
  });
});

describe('SvidCertificateProvider', () => {
  function svid(leaf: Buffer) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return {
      spiffeId: 'spiffe://example.org/sigil/agent',
      chain: [new X509Certificate(leaf)],
      privateKey,
      bundle: [],
      hint: '',
    };
  }

  it('sends the current state to a new listener on a later tick', async () => {
    const provider = new SvidCertificateProvider();
    provider.update(svid(leaves.agent), TRUST_DOMAIN, [new X509Certificate(leaves.ca)]);
    const received: string[] = [];
    provider.addIdentityCertificateListener((update) =>
      received.push(update ? 'identity' : 'no identity'),
    );
    expect(received).toEqual([]);
    await new Promise((resolve) => process.nextTick(resolve));
    expect(received).toEqual(['identity']);
  });

  it('sends the CA before the identity on update', async () => {
    const provider = new SvidCertificateProvider();
    const received: string[] = [];
    provider.addCaCertificateListener((update) => received.push(update ? 'ca' : 'no ca'));
    provider.addIdentityCertificateListener((update) =>
      received.push(update ? 'identity' : 'no identity'),
    );
    await new Promise((resolve) => process.nextTick(resolve));
    expect(received).toEqual(['no ca', 'no identity']);

    provider.update(svid(leaves.agent), TRUST_DOMAIN, [new X509Certificate(leaves.ca)]);
    expect(received.slice(2)).toEqual(['ca', 'identity']);
    expect(provider.trustDomain).toBe(TRUST_DOMAIN);
  });

  it('presents the whole chain and the bundle as PEM', () => {
    const provider = new SvidCertificateProvider();
    let identity: { certificate: Buffer; privateKey: Buffer } | null = null;
    let ca: { caCertificate: Buffer } | null = null;
    provider.addIdentityCertificateListener((update) => (identity = update));
    provider.addCaCertificateListener((update) => (ca = update));
    const chain = svid(leaves.agent);
    chain.chain.push(new X509Certificate(leaves.ca));
    provider.update(chain, TRUST_DOMAIN, [new X509Certificate(leaves.reader)]);
    const pem = (identity as unknown as { certificate: Buffer }).certificate.toString();
    expect(pem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(pem.indexOf(chain.chain[0].toString())).toBe(0);
    expect((identity as unknown as { privateKey: Buffer }).privateKey.toString()).toContain(
      'BEGIN PRIVATE KEY',
    );
    expect((ca as unknown as { caCertificate: Buffer }).caCertificate.toString()).toBe(
      new X509Certificate(leaves.reader).toString(),
    );
  });

  it('sends null to every listener on withdraw', () => {
    const provider = new SvidCertificateProvider();
    provider.update(svid(leaves.agent), TRUST_DOMAIN, [new X509Certificate(leaves.ca)]);
    const received: unknown[] = [];
    provider.addCaCertificateListener((update) => received.push(update));
    provider.addIdentityCertificateListener((update) => received.push(update));
    provider.withdraw();
    expect(received).toEqual([null, null]);
    expect(provider.trustDomain).toBeNull();
  });
});
