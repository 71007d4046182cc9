/**
 * Mutual TLS for the audit gRPC service on TCP: the server presents its X.509-SVID, requests a
 * client certificate, and authorises each call by the SPIFFE ID in that certificate.
 *
 * The TLS handshake requests a client certificate but does not require one, so that a client
 * without an acceptable certificate gets a gRPC status with the reason, rather than a dropped
 * connection. OpenSSL still verifies the certificate chain against the trust domain's X.509
 * bundle during the handshake, and grpc-js exposes the peer certificate of a call only when that
 * verification passed. Every call then goes through an interceptor that checks the verified leaf
 * against the X509-SVID rules and the allow list before the handler runs:
 *
 * - no certificate, or one that does not chain to the bundle: UNAUTHENTICATED;
 * - a verified certificate that is not a valid X.509-SVID of the trust domain: UNAUTHENTICATED;
 * - a valid SVID whose SPIFFE ID the allow list does not contain: PERMISSION_DENIED.
 */

import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { SpiffeIdAllowList } from '../identity/spiffe-id-allow-list';
import { validateX509SvidLeaf, WorkloadX509Svid, X509SvidError } from '../identity/spire';

type CertificateProvider = grpc.experimental.CertificateProvider;
type CaListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;

/** An IP address and port to listen on. */
export interface TcpListenAddress {
  host: string;
  port: number;
}

/**
 * Parses `IP:PORT` or `[IPv6]:PORT`. The host must be an IP address, so the listener binds exactly
 * the address given, never every address a host name resolves to. Throws Error naming the value.
 */
export function parseTcpListenAddress(address: string, option = '--grpc-listen'): TcpListenAddress {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  const host = match ? (match[1] ?? match[2]) : '';
  const port = match ? Number(match[3]) : NaN;
  const usage = 'expected IP:PORT, such as 127.0.0.1:7443 or [::1]:7443';
  if (!match) throw new Error(`invalid ${option} ${JSON.stringify(address)}: ${usage}`);
  if (isIP(host) === 0) {
    throw new Error(
      `invalid ${option} ${JSON.stringify(address)}: ${JSON.stringify(host)} is not an IP address; ` +
        'give the address to listen on, not a host name',
    );
  }
  if (match[1] !== undefined && isIP(host) !== 6) {
    throw new Error(
      `invalid ${option} ${JSON.stringify(address)}: only IPv6 addresses go in brackets`,
    );
  }
  if (port < 1 || port > 65535) {
    throw new Error(`invalid ${option} ${JSON.stringify(address)}: the port must be 1 to 65535`);
  }
  return { host, port };
}

/** Returns the gRPC target text of a TCP address. */
export function tcpTarget(address: TcpListenAddress): string {
  return isIP(address.host) === 6
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

/** Returns a certificate chain as concatenated PEM, leaf first. */
export function chainToPem(chain: readonly X509Certificate[]): Buffer {
  return Buffer.from(chain.map((certificate) => certificate.toString()).join(''));
}

/**
 * A grpc-js certificate provider fed with the agent's X.509-SVID. Each update reaches the
 * listeners, and grpc-js then gives the TLS server a new secure context (setSecureContext), which
 * new connections use. Connections already open keep the certificate they were set up with.
 */
export class SvidCertificateProvider implements CertificateProvider {
  private identity: grpc.experimental.IdentityCertificateUpdate | null = null;
  private ca: grpc.experimental.CaCertificateUpdate | null = null;
  private readonly identityListeners = new Set<IdentityListener>();
  private readonly caListeners = new Set<CaListener>();
  private currentTrustDomain: string | null = null;

  /** Trust domain of the SVID presented now; null before the first SVID or after withdraw(). */
  get trustDomain(): string | null {
    return this.currentTrustDomain;
  }

  /**
   * Presents an SVID and trusts the CA certificates of its trust domain for client certificates.
   * The SVID must have passed validateX509Svid against `bundle`.
   */
  update(svid: WorkloadX509Svid, trustDomain: string, bundle: readonly X509Certificate[]): void {
    this.currentTrustDomain = trustDomain;
    this.identity = {
      certificate: chainToPem(svid.chain),
      privateKey: Buffer.from(svid.privateKey.export({ type: 'pkcs8', format: 'pem' })),
    };
    this.ca = { caCertificate: chainToPem(bundle) };
    this.notify();
  }

  /** Stops presenting any SVID: the server then drops new connections until the next update. */
  withdraw(): void {
    this.currentTrustDomain = null;
    this.identity = null;
    this.ca = null;
    this.notify();
  }

  // grpc-js adds its listeners before its own watcher, so the current state must reach them on a
  // later tick, as grpc-js's FileWatcherCertificateProvider does it.
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    process.nextTick(() => {
      if (this.caListeners.has(listener)) listener(this.ca);
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    process.nextTick(() => {
      if (this.identityListeners.has(listener)) listener(this.identity);
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }

  private notify(): void {
    // grpc-js sets a new secure context after each listener call. The CA goes first, so the
    // context set last contains the certificate and the CA of the same SVID update.
    for (const listener of this.caListeners) listener(this.ca);
    for (const listener of this.identityListeners) listener(this.identity);
  }
}

/** The result of authorising one call. */
export type PeerDecision =
  | { allowed: true; spiffeId: string }
  | {
      allowed: false;
      code: grpc.status.UNAUTHENTICATED | grpc.status.PERMISSION_DENIED;
      /** Sent to the client as the status details. */
      reason: string;
      /** The peer's SPIFFE ID when its certificate is a verified X.509-SVID, else null. */
      spiffeId: string | null;
    };

/**
 * Decides whether a peer may call, from the DER leaf certificate that the TLS handshake verified
 * against the bundle of `trustDomain` (undefined when there is none) and the allow list.
 */
export function authorizePeer(
  verifiedLeaf: Buffer | undefined,
  trustDomain: string,
  allowList: SpiffeIdAllowList,
  now = new Date(),
): PeerDecision {
  if (verifiedLeaf === undefined) {
    return {
      allowed: false,
      code: grpc.status.UNAUTHENTICATED,
      spiffeId: null,
      reason:
        `no client certificate that chains to the X.509 bundle of trust domain ${trustDomain}: ` +
        `connect with an X.509-SVID of trust domain ${trustDomain} from the SPIFFE Workload API`,
    };
  }
  let leaf;
  try {
    leaf = validateX509SvidLeaf(new X509Certificate(verifiedLeaf), { now });
  } catch (error) {
    const detail =
      error instanceof X509SvidError
        ? error.message
        : `invalid certificate: ${(error as Error).message}`;
    return {
      allowed: false,
      code: grpc.status.UNAUTHENTICATED,
      spiffeId: null,
      reason: `client certificate rejected: ${detail}`,
    };
  }
  if (leaf.trustDomain !== trustDomain) {
    return {
      allowed: false,
      code: grpc.status.UNAUTHENTICATED,
      spiffeId: leaf.spiffeId,
      reason: `client SPIFFE ID ${leaf.spiffeId} is not in trust domain ${trustDomain}`,
    };
  }
  if (!allowList.allows(leaf.spiffeId)) {
    return {
      allowed: false,
      code: grpc.status.PERMISSION_DENIED,
      spiffeId: leaf.spiffeId,
      reason:
        `SPIFFE ID ${leaf.spiffeId} is not authorised to read this agent's audit events; ` +
        'the agent operator can allow it with --grpc-authorized-id or --grpc-authorized-id-prefix',
    };
  }
  return { allowed: true, spiffeId: leaf.spiffeId };
}

/** A call that the interceptor rejected, for the agent's log. */
export interface RejectedCall {
  code: grpc.status;
  reason: string;
  /** The peer's verified SPIFFE ID, or null when it presented no verified X.509-SVID. */
  spiffeId: string | null;
  /** Remote address and port, as grpc-js reports them. */
  peer: string;
  method: string;
}

/** A call that the interceptor let through. */
export interface AuthorizedCall {
  spiffeId: string;
  peer: string;
  method: string;
}

export interface MtlsServerOptions {
  allowList: SpiffeIdAllowList;
  onRejected?: (call: RejectedCall) => void;
  onAuthorized?: (call: AuthorizedCall) => void;
}

/**
 * Creates server credentials that present the provider's SVID, verify client certificates
 * against its trust domain's bundle, and authorise every call by SPIFFE ID.
 */
export function createMtlsServerCredentials(
  provider: SvidCertificateProvider,
  options: MtlsServerOptions,
): grpc.ServerCredentials {
  // createCertificateProviderServerCredentials names its first two parameters the other way
  // round from the class it builds (grpc-js 1.14). One provider serves both roles, so the order
  // does not matter. requireClientCertificate false keeps rejectUnauthorized off; see the file
  // comment for why.
  const tls = grpc.experimental.createCertificateProviderServerCredentials(
    provider,
    provider,
    false,
  );
  const interceptor: grpc.ServerInterceptor = (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, forward) => {
            const trustDomain = provider.trustDomain;
            const decision: PeerDecision =
              trustDomain === null
                ? {
                    allowed: false,
                    code: grpc.status.UNAUTHENTICATED,
                    spiffeId: null,
                    reason:
                      'the agent has no X.509-SVID at the moment, so it cannot authenticate clients',
                  }
                : authorizePeer(
                    call.getAuthContext().sslPeerCertificate?.raw,
                    trustDomain,
                    options.allowList,
                  );
            if (decision.allowed) {
              options.onAuthorized?.({
                spiffeId: decision.spiffeId,
                peer: call.getPeer(),
                method: method.path,
              });
              forward(metadata);
              return;
            }
            options.onRejected?.({
              code: decision.code,
              reason: decision.reason,
              spiffeId: decision.spiffeId,
              peer: call.getPeer(),
              method: method.path,
            });
            call.sendStatus({ code: decision.code, details: decision.reason });
          },
        }),
    });
  return grpc.experimental.createServerCredentialsWithInterceptors(tls, [interceptor]);
}
