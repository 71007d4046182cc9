/**
 * Client of the SPIFFE Workload API: streams the calling process's own X.509-SVIDs and the X.509
 * bundles it trusts, from the agent's public socket.
 *
 * Every call carries the metadata `workload.spiffe.io: true`, which the Workload Endpoint
 * standard requires as a guard against server-side request forgery. Broken streams are reopened
 * with exponential backoff, except after InvalidArgument or Unimplemented, which the standard
 * says not to retry.
 */

import { createPrivateKey, KeyObject, X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { parseSpiffeId } from '../spiffe-id';
import { BackoffOptions } from './backoff';
import { SpireRpcError, SpireUnavailableError } from './errors';
import { ReconnectingStream } from './reconnecting-stream';
import { RenewableClient } from './renewable-client';
import {
  workloadApiClientConstructor,
  X509BundlesResponseMessage,
  X509SvidMessage,
  X509SvidResponseMessage,
} from './spire-protos';
import { grpcTarget, resolveWorkloadEndpoint } from './workload-endpoint';
import { parseDerCertificates, parseX509BundleMap } from './x509-bundle';

/** Metadata key and value that every Workload API call must carry. */
export const WORKLOAD_API_SECURITY_HEADER = 'workload.spiffe.io';

const FETCH_X509_SVID = '/SpiffeWorkloadAPI/FetchX509SVID';
const FETCH_X509_BUNDLES = '/SpiffeWorkloadAPI/FetchX509Bundles';

/** One X.509-SVID of the caller, as the agent sent it (not validated). */
export interface WorkloadX509Svid {
  spiffeId: string;
  /** Leaf first. */
  chain: X509Certificate[];
  privateKey: KeyObject;
  /** CA certificates of the SVID's trust domain. */
  bundle: X509Certificate[];
  hint: string;
}

/** The full X.509 state of the caller; each update replaces the previous one. */
export interface X509SvidUpdate {
  /** The first SVID is the caller's default identity. Empty when none is issued. */
  svids: WorkloadX509Svid[];
  /**
   * CA certificates keyed by bare trust domain name: the SVIDs' own trust domains (from their
   * `bundle` fields) and the federated ones. Pass this to validateX509Svid.
   */
  bundles: Map<string, X509Certificate[]>;
  /** DER certificate revocation lists. */
  crl: Buffer[];
}

export interface X509BundlesUpdate {
  /** CA certificates keyed by bare trust domain name. */
  bundles: Map<string, X509Certificate[]>;
  crl: Buffer[];
}

/**
 * A running Workload API stream. Events: 'update' with each message, 'retry' with a failure that
 * will be retried, 'end' once when it stops for good. A retry with code PERMISSION_DENIED means
 * that the agent has no identity for the caller (or not yet), and the standard says to stop using
 * the SVIDs received before.
 */
export type WorkloadWatch<T> = ReconnectingStream<T>;

export interface WorkloadApiClientOptions {
  /**
   * Endpoint URI, `unix:///path/to/api.sock` or `tcp://<ip>:<port>`. Defaults to the value of
   * SPIFFE_ENDPOINT_SOCKET; the constructor throws when neither is set.
   */
  address?: string;
  backoff?: BackoffOptions;
  /** Extra grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
}

export class WorkloadApiClient {
  private readonly client: RenewableClient;
  private readonly backoff: BackoffOptions;

  constructor(options: WorkloadApiClientOptions = {}) {
    const endpoint = resolveWorkloadEndpoint(options.address);
    this.client = new RenewableClient(workloadApiClientConstructor(), grpcTarget(endpoint), options.channelOptions);
    this.backoff = options.backoff ?? {};
  }

  /** Streams the caller's X.509-SVIDs until the watch is closed. */
  watchX509Svids(): WorkloadWatch<X509SvidUpdate> {
    return this.watch<X509SvidResponseMessage, X509SvidUpdate>(FETCH_X509_SVID, 'FetchX509SVID', decodeX509SvidResponse);
  }

  /** Streams the X.509 bundles that the caller trusts until the watch is closed. */
  watchX509Bundles(): WorkloadWatch<X509BundlesUpdate> {
    return this.watch<X509BundlesResponseMessage, X509BundlesUpdate>(
      FETCH_X509_BUNDLES,
      'FetchX509Bundles',
      decodeX509BundlesResponse,
    );
  }

  /**
   * Returns the first X.509 update that has at least one SVID. Retries while the agent is
   * unreachable or has no identity for the caller yet. Rejects with SpireUnavailableError after
   * `timeoutMs`, or with SpireRpcError for a failure that is not retried.
   */
  fetchX509Svids(timeoutMs = 30_000): Promise<X509SvidUpdate> {
    return new Promise((resolve, reject) => {
      const watch = this.watchX509Svids();
      let lastError: SpireRpcError | undefined;
      const timer = setTimeout(() => {
        watch.close();
        const reason = lastError === undefined ? 'no SVID arrived' : `last error: ${lastError.message}`;
        reject(new SpireUnavailableError(`timed out after ${timeoutMs} ms fetching X.509-SVIDs: ${reason}`, {
          cause: lastError,
        }));
      }, timeoutMs);
      watch.on('retry', (retry) => {
        lastError = retry.error;
      });
      watch.on('update', (update) => {
        if (update.svids.length > 0) {
          clearTimeout(timer);
          watch.close();
          resolve(update);
        }
      });
      watch.on('end', (end) => {
        if (end.reason === 'failed') {
          clearTimeout(timer);
          reject(end.error);
        }
      });
    });
  }

  /** Closes the channel. Open watches fail and are not retried after this. */
  close(): void {
    this.client.close();
  }

  private watch<Raw, T>(method: string, rpcName: string, decode: (raw: Raw) => T): WorkloadWatch<T> {
    let current: grpc.Client | null = null;
    const stream = ReconnectingStream.create<Raw, T>({
      method,
      backoff: this.backoff,
      decode,
      open: () => {
        current = this.client.get();
        const metadata = new grpc.Metadata();
        metadata.set(WORKLOAD_API_SECURITY_HEADER, 'true');
        const start = (current as unknown as Record<string, StreamStarter<Raw>>)[rpcName];
        return start.call(current, {}, metadata);
      },
      onFailure: (error) => {
        if (current !== null && error.code === grpc.status.UNAVAILABLE) {
          this.client.renew(current);
        }
      },
    });
    return stream.start();
  }
}

type StreamStarter<Raw> = (request: object, metadata: grpc.Metadata) => grpc.ClientReadableStream<Raw>;

function decodeX509SvidResponse(message: X509SvidResponseMessage): X509SvidUpdate {
  const bundles = parseX509BundleMap(message.federatedBundles ?? {});
  const svids = (message.svids ?? []).map((svid) => decodeWorkloadSvid(svid));
  for (const svid of svids) {
    // An SVID's own bundle wins over a federated bundle of the same name.
    bundles.set(parseSpiffeId(svid.spiffeId).trustDomain, svid.bundle);
  }
  return { svids, bundles, crl: message.crl ?? [] };
}

function decodeWorkloadSvid(svid: X509SvidMessage): WorkloadX509Svid {
  const spiffeId = parseSpiffeId(svid.spiffeId).toString();
  return {
    spiffeId,
    chain: parseDerCertificates(svid.x509Svid, `certificate chain of ${spiffeId}`),
    privateKey: createPrivateKey({ key: svid.x509SvidKey, format: 'der', type: 'pkcs8' }),
    bundle: parseDerCertificates(svid.bundle, `bundle of ${spiffeId}`),
    hint: svid.hint,
  };
}

function decodeX509BundlesResponse(message: X509BundlesResponseMessage): X509BundlesUpdate {
  return { bundles: parseX509BundleMap(message.bundles ?? {}), crl: message.crl ?? [] };
}
