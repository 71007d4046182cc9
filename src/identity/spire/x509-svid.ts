/**
 * Validation of X.509-SVIDs, following the SPIFFE X509-SVID standard
 * (https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md):
 *
 * - the leaf has exactly one URI SAN, and it is a valid SPIFFE ID with a non-empty path;
 * - the leaf is not a CA (basicConstraints cA is false);
 * - the leaf has the key usage extension with digitalSignature, and without keyCertSign or
 *   cRLSign;
 * - every certificate from the leaf to the trust anchor is within its validity period;
 * - the chain verifies up to a CA certificate in the bundle of the SVID's own trust domain, never
 *   a bundle of another trust domain. Intermediates come from the presented chain and must be CAs.
 *
 * Not checked: criticality of the key usage extension, extended key usage, name constraints and
 * revocation.
 */

import { X509Certificate } from 'node:crypto';
import { parseSpiffeId, SpiffeIdError } from '../spiffe-id';
import { CertificateExtension, DerElement, readCertificateExtensions, readDerChildren, readDerElement } from './der';
import { parseDerCertificates, X509BundleSet } from './x509-bundle';

const OID_KEY_USAGE = '2.5.29.15';
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
/** GeneralName uniformResourceIdentifier: context-specific, primitive, number 6. */
const TAG_GENERAL_NAME_URI = 0x86;
/** Bits of the first KeyUsage byte (bit 0 is the most significant bit). */
const KEY_USAGE_DIGITAL_SIGNATURE = 0x80;
const KEY_USAGE_KEY_CERT_SIGN = 0x04;
const KEY_USAGE_CRL_SIGN = 0x02;

/** The X509-SVID rule that a certificate chain breaks. */
export type X509SvidRule =
  | 'parse'
  | 'empty-chain'
  | 'uri-san-count'
  | 'spiffe-id'
  | 'root-path'
  | 'leaf-is-ca'
  | 'key-usage'
  | 'not-yet-valid'
  | 'expired'
  | 'no-bundle'
  | 'chain';

/** Error for a certificate chain that is not a valid X.509-SVID. */
export class X509SvidError extends Error {
  readonly rule: X509SvidRule;

  constructor(rule: X509SvidRule, message: string, options?: { cause?: unknown }) {
    super(`invalid X.509-SVID: ${message}`, options);
    this.name = 'X509SvidError';
    this.rule = rule;
  }
}

/** An X.509-SVID that passed validation. */
export interface ValidatedX509Svid {
  spiffeId: string;
  trustDomain: string;
  leaf: X509Certificate;
  /** The presented chain, leaf first. */
  chain: readonly X509Certificate[];
  /** End of the leaf's validity period. */
  expiresAt: Date;
}

export interface ValidateX509SvidOptions {
  /** Time at which the certificates must be valid; defaults to now. */
  now?: Date;
}

/**
 * Validates an X.509-SVID chain (leaf first, as certificates or concatenated DER) against the
 * bundles of the trust domains that the caller trusts. Throws X509SvidError naming the rule that
 * the chain breaks.
 */
export function validateX509Svid(
  chain: readonly X509Certificate[] | Uint8Array,
  bundles: X509BundleSet,
  options: ValidateX509SvidOptions = {},
): ValidatedX509Svid {
  const certificates = toCertificates(chain);
  const leaf = certificates[0];
  if (leaf === undefined) {
    throw new X509SvidError('empty-chain', 'the certificate chain is empty');
  }
  const now = options.now ?? new Date();

  const spiffeId = readLeafSpiffeId(leaf);
  if (leaf.ca) {
    throw new X509SvidError('leaf-is-ca', `the leaf certificate of ${spiffeId.toString()} is a CA (basicConstraints cA is true)`);
  }
  checkLeafKeyUsage(leaf, spiffeId.toString());
  checkValidity(leaf, 'the leaf certificate', now);

  const roots = bundles.get(spiffeId.trustDomain);
  if (roots === undefined || roots.length === 0) {
    throw new X509SvidError(
      'no-bundle',
      `no bundle for trust domain ${spiffeId.trustDomain} of ${spiffeId.toString()}; ` +
        `trusted trust domains: ${[...bundles.keys()].join(', ') || 'none'}`,
    );
  }
  verifyChain(leaf, certificates.slice(1), roots, spiffeId.trustDomain, now);

  return {
    spiffeId: spiffeId.toString(),
    trustDomain: spiffeId.trustDomain,
    leaf,
    chain: certificates,
    expiresAt: new Date(leaf.validTo),
  };
}

/** Returns the URI SANs of a certificate, in certificate order. */
export function readUriSans(certificate: X509Certificate): string[] {
  const extension = readCertificateExtensions(certificate.raw).find(
    (candidate) => candidate.oid === OID_SUBJECT_ALT_NAME,
  );
  if (extension === undefined) {
    return [];
  }
  const value = extension.value;
  const names = readDerElement(value, 0);
  return readDerChildren(value, names)
    .filter((name: DerElement) => name.tag === TAG_GENERAL_NAME_URI)
    .map((name: DerElement) => value.subarray(name.start, name.end).toString('latin1'));
}

function toCertificates(chain: readonly X509Certificate[] | Uint8Array): readonly X509Certificate[] {
  if (!(chain instanceof Uint8Array)) {
    return chain;
  }
  try {
    return parseDerCertificates(chain, 'certificate chain');
  } catch (error) {
    throw new X509SvidError('parse', (error as Error).message, { cause: error });
  }
}

function readLeafSpiffeId(leaf: X509Certificate): ReturnType<typeof parseSpiffeId> {
  let uris: string[];
  try {
    uris = readUriSans(leaf);
  } catch (error) {
    throw new X509SvidError('parse', `cannot read the subjectAltName of the leaf certificate: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (uris.length !== 1) {
    throw new X509SvidError(
      'uri-san-count',
      `the leaf certificate has ${uris.length} URI SANs (${uris.join(', ') || 'none'}), expected exactly one SPIFFE ID`,
    );
  }
  const uri = uris[0];
  let spiffeId: ReturnType<typeof parseSpiffeId>;
  try {
    spiffeId = parseSpiffeId(uri);
  } catch (error) {
    if (error instanceof SpiffeIdError) {
      throw new X509SvidError('spiffe-id', `the URI SAN of the leaf certificate is not a valid SPIFFE ID: ${error.message}`, {
        cause: error,
      });
    }
    throw error;
  }
  if (spiffeId.path === '') {
    throw new X509SvidError(
      'root-path',
      `the SPIFFE ID ${uri} of the leaf certificate has no path; a leaf SVID names a workload, not a trust domain`,
    );
  }
  return spiffeId;
}

function checkLeafKeyUsage(leaf: X509Certificate, spiffeId: string): void {
  let extensions: CertificateExtension[];
  try {
    extensions = readCertificateExtensions(leaf.raw);
  } catch (error) {
    throw new X509SvidError('parse', `cannot read the extensions of the leaf certificate: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const extension = extensions.find((candidate) => candidate.oid === OID_KEY_USAGE);
  if (extension === undefined) {
    throw new X509SvidError('key-usage', `the leaf certificate of ${spiffeId} has no key usage extension`);
  }
  // KeyUsage ::= BIT STRING: one byte with the count of unused bits, then the bits.
  let firstByte = 0;
  try {
    const bits = readDerElement(extension.value, 0);
    firstByte = bits.end - bits.start >= 2 ? extension.value[bits.start + 1] : 0;
  } catch (error) {
    throw new X509SvidError('parse', `cannot read the key usage of the leaf certificate: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if ((firstByte & KEY_USAGE_DIGITAL_SIGNATURE) === 0) {
    throw new X509SvidError('key-usage', `the key usage of the leaf certificate of ${spiffeId} lacks digitalSignature`);
  }
  if ((firstByte & (KEY_USAGE_KEY_CERT_SIGN | KEY_USAGE_CRL_SIGN)) !== 0) {
    throw new X509SvidError(
      'key-usage',
      `the key usage of the leaf certificate of ${spiffeId} includes keyCertSign or cRLSign, which only CA certificates may have`,
    );
  }
}

function checkValidity(certificate: X509Certificate, description: string, now: Date): void {
  const notBefore = new Date(certificate.validFrom);
  const notAfter = new Date(certificate.validTo);
  if (now < notBefore) {
    throw new X509SvidError('not-yet-valid', `${description} (${certificate.subject.trim() || 'empty subject'}) is not valid before ${notBefore.toISOString()}`);
  }
  if (now > notAfter) {
    throw new X509SvidError('expired', `${description} (${certificate.subject.trim() || 'empty subject'}) expired at ${notAfter.toISOString()}`);
  }
}

/**
 * Builds a path from the leaf through intermediates of the presented chain to a certificate of
 * the bundle. Each step needs a CA issuer whose name matches and whose key verifies the signature.
 */
function verifyChain(
  leaf: X509Certificate,
  intermediates: readonly X509Certificate[],
  roots: readonly X509Certificate[],
  trustDomain: string,
  now: Date,
): void {
  const unused = [...intermediates];
  let current = leaf;
  // Each step uses up one intermediate, so the loop ends after at most that many steps.
  for (;;) {
    const root = roots.find((candidate) => isIssuedBy(current, candidate));
    if (root !== undefined) {
      checkValidity(root, `the bundle CA certificate of trust domain ${trustDomain}`, now);
      return;
    }
    const index = unused.findIndex((candidate) => isIssuedBy(current, candidate));
    if (index < 0) {
      throw new X509SvidError(
        'chain',
        `the certificate with subject "${current.subject.trim()}" and issuer "${current.issuer.trim()}" ` +
          `is not signed by a CA certificate of the bundle of trust domain ${trustDomain} ` +
          'or by an intermediate CA in the presented chain',
      );
    }
    current = unused.splice(index, 1)[0];
    checkValidity(current, 'an intermediate CA certificate', now);
  }
}

function isIssuedBy(certificate: X509Certificate, issuer: X509Certificate): boolean {
  return issuer.ca && certificate.checkIssued(issuer) && certificate.verify(issuer.publicKey);
}

/** The SPIFFE ID of an X.509-SVID leaf that passed validateX509SvidLeaf. */
export interface ValidatedX509SvidLeaf {
  spiffeId: string;
  trustDomain: string;
}

/**
 * Checks the leaf-only rules of an X.509-SVID: exactly one URI SAN with a valid SPIFFE ID that
 * has a path, not a CA, key usage with digitalSignature and without keyCertSign or cRLSign, and
 * within its validity period. For a leaf whose chain a TLS library has already verified against
 * the trust domain's bundle. Throws X509SvidError naming the rule that the leaf breaks.
 */
export function validateX509SvidLeaf(leaf: X509Certificate, options: ValidateX509SvidOptions = {}): ValidatedX509SvidLeaf {
  const spiffeId = readLeafSpiffeId(leaf);
  if (leaf.ca) {
    throw new X509SvidError('leaf-is-ca', `the leaf certificate of ${spiffeId.toString()} is a CA (basicConstraints cA is true)`);
  }
  checkLeafKeyUsage(leaf, spiffeId.toString());
  checkValidity(leaf, 'the leaf certificate', options.now ?? new Date());
  return { spiffeId: spiffeId.toString(), trustDomain: spiffeId.trustDomain };
}
