/**
 * The client side of the audit service's mTLS: the caller's own X.509-SVID from the SPIFFE
 * Workload API as its client certificate, its trust domain's X.509 bundle as the only trusted CA,
 * and a check of the server's SPIFFE ID. A server whose certificate chains to the bundle is not
 * enough: its SPIFFE ID must also be in the expected list.
 */

import { PeerCertificate } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { SpiffeIdAllowList } from '../identity/spiffe-id-allow-list';
import {
  SpireRpcError,
  SpireUnavailableError,
  validateX509Svid,
  validateX509SvidLeaf,
  WorkloadApiClient,
  WorkloadWatch,
  X509SvidError,
  X509SvidUpdate,
} from '../identity/spire';
import { chainToPem } from './mtls-server';

/** Server SPIFFE IDs that the client accepts. */
export type ExpectedServer =
  | { kind: 'ids'; allowList: SpiffeIdAllowList }
  /** Any SPIFFE ID in the client's own trust domain, as an explicit opt-in. */
  | { kind: 'trust-domain' };

export interface SvidClientOptions {
  /** Workload API address (unix:///path); defaults to SPIFFE_ENDPOINT_SOCKET. */
  workloadApi?: string;
  expectedServer: ExpectedServer;
}

/** Error for a server whose certificate is not an X.509-SVID with an expected SPIFFE ID. */
export class ServerIdentityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ServerIdentityError';
  }
}

/** The client's current SVID as PEM, with the bundle of its trust domain. */
interface ClientSvid {
  spiffeId: string;
  trustDomain: string;
  chainPem: Buffer;
  keyPem: Buffer;
  bundlePem: Buffer;
}

/**
 * Follows the caller's X.509-SVID on the Workload API and builds gRPC channel credentials from
 * the current one, so that each new connection uses the latest SVID and bundle.
 */
export class SvidChannelCredentials {
  private current: ClientSvid | null = null;
  private lastInvalidSvid: Error | null = null;
  private lastServerError: ServerIdentityError | null = null;
  private readonly checkServer = (_host: string, certificate: PeerCertificate): Error | undefined =>
    this.checkServerCertificate(certificate);

  private constructor(
    private readonly options: SvidClientOptions,
    private readonly client: WorkloadApiClient,
    private readonly watch: WorkloadWatch<X509SvidUpdate>,
  ) {
    watch.on('update', (update) => {
      const svid = decodeUpdate(update);
      if (svid instanceof Error) this.lastInvalidSvid = svid;
      else if (svid) this.current = svid;
    });
  }

  /**
   * Starts following the Workload API and waits for the first valid SVID. Rejects with
   * SpireUnavailableError after `timeoutMs`, or SpireRpcError for a failure that is not retried.
   */
  static async create(
    options: SvidClientOptions,
    timeoutMs = 30_000,
  ): Promise<SvidChannelCredentials> {
    const client = new WorkloadApiClient({ address: options.workloadApi });
    const watch = client.watchX509Svids();
    const credentials = new SvidChannelCredentials(options, client, watch);
    try {
      await credentials.firstSvid(timeoutMs);
    } catch (error) {
      credentials.close();
      throw error;
    }
    return credentials;
  }

  /** SPIFFE ID of the client's current SVID. */
  get spiffeId(): string {
    return (this.current as ClientSvid).spiffeId;
  }

  /** Channel credentials with the current SVID, for one new channel. */
  channelCredentials(): grpc.ChannelCredentials {
    const svid = this.current as ClientSvid;
    return grpc.credentials.createSsl(svid.bundlePem, svid.keyPem, svid.chainPem, {
      checkServerIdentity: this.checkServer,
    });
  }

  /**
   * Channel options for a TCP target. Node warns when TLS SNI is an IP address, and a SPIFFE
   * server has no DNS name to check, so SNI carries the trust domain name instead.
   */
  channelOptions(): grpc.ChannelOptions {
    return { 'grpc.ssl_target_name_override': (this.current as ClientSvid).trustDomain };
  }

  /** Returns and clears the last server identity failure, to tell it from a network failure. */
  takeServerIdentityError(): ServerIdentityError | null {
    const error = this.lastServerError;
    this.lastServerError = null;
    return error;
  }

  close(): void {
    this.watch.close();
    this.client.close();
  }

  private firstSvid(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let lastError: SpireRpcError | undefined;
      const timer = setTimeout(() => {
        const last = this.lastInvalidSvid ?? lastError;
        const detail = last ? `: ${last.message}` : '';
        reject(
          new SpireUnavailableError(
            `no valid X.509-SVID from the Workload API within ${timeoutMs} ms${detail}`,
          ),
        );
      }, timeoutMs);
      this.watch.on('retry', (retry) => (lastError = retry.error));
      this.watch.on('update', () => {
        if (this.current === null) return;
        clearTimeout(timer);
        resolve();
      });
      this.watch.on('end', (end) => {
        clearTimeout(timer);
        if (end.reason === 'failed') reject(end.error);
      });
    });
  }

  private checkServerCertificate(certificate: PeerCertificate): ServerIdentityError | undefined {
    const error = checkServerSvid(
      certificate.raw,
      this.current as ClientSvid,
      this.options.expectedServer,
    );
    if (error) this.lastServerError = error;
    return error;
  }
}

/**
 * Checks the server's leaf certificate (DER), whose chain TLS has verified against the bundle:
 * it must be a valid X.509-SVID of the client's trust domain with an expected SPIFFE ID.
 */
export function checkServerSvid(
  der: Buffer | undefined,
  client: { trustDomain: string },
  expected: ExpectedServer,
): ServerIdentityError | undefined {
  if (der === undefined) return new ServerIdentityError('the server presented no certificate');
  let leaf;
  try {
    leaf = validateX509SvidLeaf(new X509Certificate(der));
  } catch (error) {
    const detail = error instanceof X509SvidError ? error.message : (error as Error).message;
    return new ServerIdentityError(`the server certificate is not an X.509-SVID: ${detail}`);
  }
  if (leaf.trustDomain !== client.trustDomain) {
    return new ServerIdentityError(
      `the server SPIFFE ID ${leaf.spiffeId} is not in trust domain ${client.trustDomain}`,
    );
  }
  if (expected.kind === 'ids' && !expected.allowList.allows(leaf.spiffeId)) {
    return new ServerIdentityError(
      `the server SPIFFE ID ${leaf.spiffeId} is not the expected ${expected.allowList.describe()} (--server-id)`,
    );
  }
  return undefined;
}

/**
 * Turns a Workload API update into the client's SVID: null when it has none, the validation
 * error when it is invalid. An invalid SVID is never presented; the previous one stays in use.
 */
function decodeUpdate(update: X509SvidUpdate): ClientSvid | Error | null {
  const svid = update.svids[0];
  if (!svid) return null;
  let validated;
  try {
    validated = validateX509Svid(svid.chain, update.bundles);
  } catch (error) {
    return error as Error;
  }
  const bundle = update.bundles.get(validated.trustDomain) ?? [];
  return {
    spiffeId: validated.spiffeId,
    trustDomain: validated.trustDomain,
    chainPem: chainToPem(svid.chain),
    keyPem: Buffer.from(svid.privateKey.export({ type: 'pkcs8', format: 'pem' })),
    bundlePem: chainToPem(bundle),
  };
}
