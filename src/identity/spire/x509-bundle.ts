/**
 * X.509 bundles: the CA certificates that a trust domain's SVIDs chain up to, as SPIRE and the
 * Workload API send them (maps from trust domain ID to concatenated DER certificates).
 */

import { X509Certificate } from 'node:crypto';
import { parseTrustDomain } from '../spiffe-id';
import { splitDerSequence } from './der';

/** CA certificates keyed by bare trust domain name ("example.org", without "spiffe://"). */
export type X509BundleSet = ReadonlyMap<string, readonly X509Certificate[]>;

/**
 * Parses concatenated DER certificates. Throws when the bytes are not complete DER certificates,
 * with `description` naming their source in the message.
 */
export function parseDerCertificates(der: Uint8Array, description: string): X509Certificate[] {
  let parts: Buffer[];
  try {
    parts = splitDerSequence(der);
  } catch (error) {
    throw new Error(`invalid ${description}: ${(error as Error).message}`, { cause: error });
  }
  return parts.map((part, index) => {
    try {
      return new X509Certificate(part);
    } catch (error) {
      throw new Error(`invalid ${description}: certificate ${index} does not parse: ${(error as Error).message}`, {
        cause: error,
      });
    }
  });
}

/**
 * Converts a map from trust domain ID or name to concatenated DER certificates into an
 * X509BundleSet. Throws when a key is not a valid trust domain or a value does not parse.
 */
export function parseX509BundleMap(bundles: Readonly<Record<string, Uint8Array>>): Map<string, X509Certificate[]> {
  const result = new Map<string, X509Certificate[]>();
  for (const [key, der] of Object.entries(bundles)) {
    const trustDomain = parseTrustDomain(key);
    result.set(trustDomain, parseDerCertificates(der, `bundle of trust domain ${trustDomain}`));
  }
  return result;
}
