import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDerCertificates, parseX509BundleMap } from '../../src/identity/spire/x509-bundle';
import { readUriSans, validateX509Svid, X509SvidError, X509SvidRule } from '../../src/identity/spire/x509-svid';

const TRUST_DOMAIN = 'sigil-test.example';
const LEAF_EXTENSIONS = [
  'basicConstraints=critical,CA:FALSE',
  'keyUsage=critical,digitalSignature,keyEncipherment,keyAgreement',
  'extendedKeyUsage=serverAuth,clientAuth',
];
const CA_EXTENSIONS = ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'];

/** Makes keys and certificates with the openssl CLI in a temp directory. */
class CertificateFactory {
  readonly directory = mkdtempSync(join(tmpdir(), 'sigil-x509-'));
  private serial = 1;

  private path(name: string): string {
    return join(this.directory, name);
  }

  private openssl(args: string[]): void {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  private newKey(name: string): string {
    const keyPath = this.path(`${name}.key`);
    this.openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyPath]);
    return keyPath;
  }

  /** Creates a self-signed root CA. */
  root(name: string, extensions: string[] = CA_EXTENSIONS): X509Certificate {
    const keyPath = this.newKey(name);
    const certPath = this.path(`${name}.pem`);
    const args = ['req', '-x509', '-new', '-key', keyPath, '-subj', `/CN=${name}`, '-days', '2', '-out', certPath];
    for (const extension of extensions) {
      args.push('-addext', extension);
    }
    this.openssl(args);
    return new X509Certificate(readFileSync(certPath));
  }

  /**
   * Creates a certificate signed by `issuer` (a name given to root() or issue() before).
   * `validity` uses `openssl ca` dates (YYYYMMDDHHMMSSZ) in place of "now for 2 days".
   */
  issue(
    name: string,
    issuer: string,
    extensions: string[],
    validity?: { start: string; end: string },
  ): X509Certificate {
    const keyPath = this.newKey(name);
    const csrPath = this.path(`${name}.csr`);
    const certPath = this.path(`${name}.pem`);
    const extensionsPath = this.path(`${name}.ext`);
    writeFileSync(extensionsPath, `${extensions.join('\n')}\n`);
    this.openssl(['req', '-new', '-key', keyPath, '-subj', `/CN=${name}`, '-out', csrPath]);
    if (validity === undefined) {
      this.openssl([
        'x509', '-req', '-in', csrPath, '-CA', this.path(`${issuer}.pem`), '-CAkey', this.path(`${issuer}.key`),
        '-set_serial', String(this.serial++), '-days', '2', '-extfile', extensionsPath, '-out', certPath,
      ]);
    } else {
      this.signWithDates(csrPath, issuer, extensionsPath, certPath, validity);
    }
    return new X509Certificate(readFileSync(certPath));
  }

  /** `openssl x509` in OpenSSL 3.0 cannot set dates in the past, but `openssl ca` can. */
  private signWithDates(
    csrPath: string,
    issuer: string,
    extensionsPath: string,
    certPath: string,
    validity: { start: string; end: string },
  ): void {
    const caDirectory = mkdtempSync(join(this.directory, 'ca-'));
    writeFileSync(join(caDirectory, 'index.txt'), '');
    writeFileSync(join(caDirectory, 'serial'), `${(this.serial++).toString(16).padStart(2, '0')}\n`);
    const configPath = join(caDirectory, 'ca.cnf');
    writeFileSync(
      configPath,
      [
        '[ca]',
        'default_ca = test_ca',
        '[test_ca]',
        `database = ${join(caDirectory, 'index.txt')}`,
        `new_certs_dir = ${caDirectory}`,
        `serial = ${join(caDirectory, 'serial')}`,
        'default_md = sha256',
        'policy = policy_any',
        '[policy_any]',
        'commonName = supplied',
        '',
      ].join('\n'),
    );
    this.openssl([
      'ca', '-batch', '-config', configPath, '-in', csrPath, '-out', certPath, '-notext',
      '-cert', this.path(`${issuer}.pem`), '-keyfile', this.path(`${issuer}.key`),
      '-startdate', validity.start, '-enddate', validity.end, '-extfile', extensionsPath,
    ]);
  }

  remove(): void {
    rmSync(this.directory, { recursive: true, force: true });
  }
}

function leafExtensions(...sans: string[]): string[] {
  return [...LEAF_EXTENSIONS, `subjectAltName=${sans.join(',')}`];
}

describe('validateX509Svid', () => {
  const factory = new CertificateFactory();
  let root: X509Certificate;
  let bundles: Map<string, X509Certificate[]>;
  const certificates = new Map<string, X509Certificate[]>();

  beforeAll(() => {
    root = factory.root('root');
    factory.root('other-root');
    bundles = new Map([[TRUST_DOMAIN, [root]]]);
    const intermediate = factory.issue('intermediate', 'root', CA_EXTENSIONS);
    const notCaIntermediate = factory.issue('not-ca-signer', 'root', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}/signer`));

    const valid = factory.issue('valid', 'root', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}/web`));
    certificates.set('valid', [valid]);
    certificates.set('valid with DNS SAN', [
      factory.issue('valid-dns', 'root', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}/web`, 'DNS:web.local')),
    ]);
    certificates.set('valid via intermediate', [
      factory.issue('via-intermediate', 'intermediate', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}/db`)),
      intermediate,
    ]);
    certificates.set('two URI SANs', [
      factory.issue('two-uris', 'root', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}/a`, `URI:spiffe://${TRUST_DOMAIN}/b`)),
    ]);
    certificates.set('no URI SAN', [factory.issue('no-uri', 'root', leafExtensions('DNS:web.local'))]);
    certificates.set('invalid SPIFFE ID', [
      factory.issue('bad-id', 'root', leafExtensions('URI:spiffe://Sigil-Test.example/web')),
    ]);
    certificates.set('trust domain ID', [factory.issue('root-path', 'root', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}`))]);
    certificates.set('CA leaf', [
      factory.issue('ca-leaf', 'root', [...CA_EXTENSIONS, `subjectAltName=URI:spiffe://${TRUST_DOMAIN}/web`]),
    ]);
    certificates.set('no digitalSignature', [
      factory.issue('no-digital-signature', 'root', [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,keyEncipherment',
        `subjectAltName=URI:spiffe://${TRUST_DOMAIN}/web`,
      ]),
    ]);
    certificates.set('no key usage', [
      factory.issue('no-key-usage', 'root', [
        'basicConstraints=critical,CA:FALSE',
        `subjectAltName=URI:spiffe://${TRUST_DOMAIN}/web`,
      ]),
    ]);
    certificates.set('keyCertSign on leaf', [
      factory.issue('cert-sign-leaf', 'root', [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyCertSign',
        `subjectAltName=URI:spiffe://${TRUST_DOMAIN}/web`,
      ]),
    ]);
    certificates.set('wrong trust domain', [
      factory.issue('other-td', 'root', leafExtensions('URI:spiffe://other.example/web')),
    ]);
    certificates.set('signed by another CA', [
      factory.issue('foreign', 'other-root', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}/web`)),
    ]);
    certificates.set('intermediate missing', [
      factory.issue('orphan', 'intermediate', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}/db`)),
    ]);
    certificates.set('signed by a non-CA', [
      factory.issue('under-leaf', 'not-ca-signer', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}/web`)),
      notCaIntermediate,
    ]);
    certificates.set('expired', [
      factory.issue('expired', 'root', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}/web`), {
        start: '20200101000000Z',
        end: '20200102000000Z',
      }),
    ]);
    certificates.set('not yet valid', [
      factory.issue('future', 'root', leafExtensions(`URI:spiffe://${TRUST_DOMAIN}/web`), {
        start: '20990101000000Z',
        end: '20990102000000Z',
      }),
    ]);
  });

  afterAll(() => factory.remove());

  const validCases: Array<[string, string]> = [
    ['valid', `spiffe://${TRUST_DOMAIN}/web`],
    ['valid with DNS SAN', `spiffe://${TRUST_DOMAIN}/web`],
    ['valid via intermediate', `spiffe://${TRUST_DOMAIN}/db`],
  ];
  it.each(validCases)('accepts %s', (name, expectedId) => {
    const chain = certificates.get(name) as X509Certificate[];
    const svid = validateX509Svid(chain, bundles);
    expect(svid.spiffeId).toBe(expectedId);
    expect(svid.trustDomain).toBe(TRUST_DOMAIN);
    expect(svid.leaf).toBe(chain[0]);
    expect(svid.expiresAt.getTime()).toBe(new Date(chain[0].validTo).getTime());
  });

  const invalidCases: Array<[string, X509SvidRule, string]> = [
    ['two URI SANs', 'uri-san-count', 'has 2 URI SANs'],
    ['no URI SAN', 'uri-san-count', 'has 0 URI SANs'],
    ['invalid SPIFFE ID', 'spiffe-id', 'not a valid SPIFFE ID'],
    ['trust domain ID', 'root-path', 'has no path'],
    ['CA leaf', 'leaf-is-ca', 'is a CA'],
    ['no digitalSignature', 'key-usage', 'lacks digitalSignature'],
    ['no key usage', 'key-usage', 'no key usage extension'],
    ['keyCertSign on leaf', 'key-usage', 'keyCertSign or cRLSign'],
    ['wrong trust domain', 'no-bundle', 'no bundle for trust domain other.example'],
    ['signed by another CA', 'chain', 'is not signed by a CA certificate of the bundle'],
    ['intermediate missing', 'chain', 'is not signed by a CA certificate of the bundle'],
    ['signed by a non-CA', 'chain', 'is not signed by a CA certificate of the bundle'],
    ['expired', 'expired', 'expired at 2020-01-02T00:00:00.000Z'],
    ['not yet valid', 'not-yet-valid', 'not valid before 2099-01-01T00:00:00.000Z'],
  ];
  it.each(invalidCases)('rejects %s', (name, rule, messagePart) => {
    const chain = certificates.get(name) as X509Certificate[];
    let caught: unknown;
    try {
      validateX509Svid(chain, bundles);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(X509SvidError);
    expect((caught as X509SvidError).rule).toBe(rule);
    expect((caught as X509SvidError).message).toContain(messagePart);
  });

  it('rejects a chain from another trust domain bundle', () => {
    // The SVID's CA is trusted for sigil-test.example only, so an ID in other.example must not
    // verify even when other.example has a bundle.
    const chain = certificates.get('wrong trust domain') as X509Certificate[];
    const otherBundle = factory.root('other-td-root');
    const withOther = new Map([...bundles, ['other.example', [otherBundle]]]);
    expect(() => validateX509Svid(chain, withOther)).toThrow(/not signed by a CA certificate of the bundle of trust domain other.example/);
  });

  it('rejects a leaf that expires before the given time', () => {
    const chain = certificates.get('valid') as X509Certificate[];
    const later = new Date(Date.now() + 3 * 24 * 3600 * 1000);
    expect(() => validateX509Svid(chain, bundles, { now: later })).toThrow(X509SvidError);
  });

  it('accepts concatenated DER', () => {
    const chain = certificates.get('valid via intermediate') as X509Certificate[];
    const der = Buffer.concat(chain.map((certificate) => certificate.raw));
    expect(validateX509Svid(der, bundles).spiffeId).toBe(`spiffe://${TRUST_DOMAIN}/db`);
  });

  it('rejects an empty chain', () => {
    expect(() => validateX509Svid([], bundles)).toThrow(expect.objectContaining({ rule: 'empty-chain' }));
  });

  it('rejects bytes that are not DER', () => {
    expect(() => validateX509Svid(Buffer.from('not a certificate'), bundles)).toThrow(
      expect.objectContaining({ rule: 'parse' }),
    );
  });

  it('reads URI SANs in order', () => {
    const [leaf] = certificates.get('two URI SANs') as X509Certificate[];
    expect(readUriSans(leaf)).toEqual([`spiffe://${TRUST_DOMAIN}/a`, `spiffe://${TRUST_DOMAIN}/b`]);
  });
});

describe('parseX509BundleMap', () => {
  it('keys bundles by bare trust domain', () => {
    const factory = new CertificateFactory();
    try {
      const first = factory.root('first');
      const second = factory.root('second');
      const bundles = parseX509BundleMap({
        [`spiffe://${TRUST_DOMAIN}`]: Buffer.concat([first.raw, second.raw]),
      });
      expect([...bundles.keys()]).toEqual([TRUST_DOMAIN]);
      expect(bundles.get(TRUST_DOMAIN)?.map((certificate) => certificate.fingerprint256)).toEqual([
        first.fingerprint256,
        second.fingerprint256,
      ]);
    } finally {
      factory.remove();
    }
  });

  it('rejects truncated DER', () => {
    expect(() => parseDerCertificates(Buffer.from([0x30, 0x82, 0x01]), 'test bundle')).toThrow(/invalid test bundle/);
  });
});
