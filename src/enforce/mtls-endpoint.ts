import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { AuditServer } from '../events/grpc-server';
import {
  AuthorizedCall,
  createMtlsServerCredentials,
  RejectedCall,
  SvidCertificateProvider,
  TcpListenAddress,
  tcpTarget,
} from '../events/mtls-server';
import { SpiffeIdAllowList } from '../identity/spiffe-id-allow-list';
import {
  SpireRpcError,
  validateX509Svid,
  WorkloadApiClient,
  WorkloadWatch,
  X509SvidUpdate,
} from '../identity/spire';

/** Default time the agent waits at start for its X.509-SVID before it gives up on TCP. */
export const DEFAULT_SVID_TIMEOUT_MS = 30_000;
/** Rejections of the same peer within this time are counted and logged once. */
const REJECTION_LOG_INTERVAL_MS = 10_000;

export interface MtlsEndpointOptions {
  /** IP address and port to listen on. */
  address: TcpListenAddress;
  /** SPIFFE Workload API address of the agent's own X.509-SVID, such as unix:///path. */
  workloadApi: string;
  allowList: SpiffeIdAllowList;
  /** How long start() waits for the first valid SVID; default DEFAULT_SVID_TIMEOUT_MS. */
  svidTimeoutMs?: number;
  logger: Logger;
}

/** The SVID that the listener presents, chosen from a Workload API update. */
interface PresentedSvid {
  update: X509SvidUpdate;
  spiffeId: string;
  trustDomain: string;
  serial: string;
  expiresAt: Date;
}

/**
 * The audit service's TCP listener with mTLS. It follows the agent's X.509-SVID on the Workload
 * API: each new SVID or bundle replaces the server's certificate and client CA for new
 * connections, without a restart.
 */
export class MtlsEndpoint {
  private readonly provider = new SvidCertificateProvider();
  private readonly rejections = new RejectionLog();
  private expiryTimer: NodeJS.Timeout | null = null;
  private presented: PresentedSvid | null = null;

  private constructor(
    private readonly options: MtlsEndpointOptions,
    private readonly client: WorkloadApiClient,
    private readonly watch: WorkloadWatch<X509SvidUpdate>,
  ) {}

  /**
   * Follows the agent's X.509-SVID and waits for the first valid one. Throws when none arrives
   * within the timeout or the Workload API fails for good; nothing keeps running then.
   */
  static async create(options: MtlsEndpointOptions): Promise<MtlsEndpoint> {
    const client = new WorkloadApiClient({ address: options.workloadApi });
    const watch = client.watchX509Svids();
    const endpoint = new MtlsEndpoint(options, client, watch);
    try {
      await endpoint.followSvid();
    } catch (error) {
      endpoint.close();
      throw error;
    }
    return endpoint;
  }

  /** SPIFFE ID of the SVID presented now, or null while none is. */
  get spiffeId(): string | null {
    return this.presented?.spiffeId ?? null;
  }

  /** Stops following the Workload API. The port closes with the AuditServer. */
  close(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    this.watch.close();
    this.client.close();
  }

  private async followSvid(): Promise<void> {
    this.watch.on('retry', (retry) => this.onRetry(retry.error));
    this.present(await this.firstSvid());
    this.watch.on('update', (update) => {
      const svid = this.choose(update);
      if (svid) this.present(svid);
    });
    this.watch.on('end', (end) => {
      if (end.reason !== 'failed') return;
      this.options.logger.error(
        { err: end.error },
        'the Workload API stream failed and is not retried: the TCP listener keeps its X.509-SVID ' +
          'until it expires, and a restart of the agent is needed to follow it again',
      );
    });
  }

  /** Serves the audit service on the TCP address. Rejects when the address cannot be bound. */
  async listen(server: AuditServer): Promise<void> {
    const { options } = this;
    const log = options.logger;
    const credentials = createMtlsServerCredentials(this.provider, {
      allowList: options.allowList,
      onRejected: (call) => this.rejections.record(call, log),
      onAuthorized: (call: AuthorizedCall) =>
        log.info(
          { spiffeId: call.spiffeId, peer: call.peer, method: call.method },
          'audit mTLS client authorised',
        ),
    });
    const target = tcpTarget(options.address);
    await server.bindTcp(target, credentials);
    log.info(
      { address: target, spiffeId: this.spiffeId, authorized: options.allowList.describe() },
      'audit gRPC service listening on TCP with mTLS',
    );
  }

  /** Resolves with the first valid SVID; rejects after the timeout or a failure not retried. */
  private firstSvid(): Promise<PresentedSvid> {
    const { options } = this;
    const timeoutMs = options.svidTimeoutMs ?? DEFAULT_SVID_TIMEOUT_MS;
    const target = tcpTarget(options.address);
    const startError = (detail: string, cause?: unknown) =>
      new Error(
        `--grpc-listen ${target} needs the agent's X.509-SVID, but the Workload API at ${options.workloadApi} ` +
          `${detail}. Register a SPIRE entry whose selectors match the agent's process, or remove --grpc-listen`,
        { cause },
      );
    return new Promise((resolve, reject) => {
      let lastError: SpireRpcError | undefined;
      const timer = setTimeout(() => {
        cleanUp();
        const last = lastError ? ` (last error: ${lastError.message})` : '';
        reject(startError(`issued no valid X.509-SVID within ${timeoutMs} ms${last}`, lastError));
      }, timeoutMs);
      const onUpdate = (update: X509SvidUpdate) => {
        const svid = this.choose(update);
        if (!svid) return;
        cleanUp();
        resolve(svid);
      };
      const onRetry = (retry: { error: SpireRpcError }) => {
        lastError = retry.error;
      };
      const onEnd = (end: { reason: string; error?: SpireRpcError }) => {
        cleanUp();
        reject(startError(`failed: ${end.error?.message ?? 'the stream was closed'}`, end.error));
      };
      const cleanUp = () => {
        clearTimeout(timer);
        this.watch.off('update', onUpdate);
        this.watch.off('retry', onRetry);
        this.watch.off('end', onEnd);
      };
      this.watch.on('update', onUpdate);
      this.watch.on('retry', onRetry);
      this.watch.on('end', onEnd);
    });
  }

  /** Picks the default SVID of an update and validates it; logs and returns null when unusable. */
  private choose(update: X509SvidUpdate): PresentedSvid | null {
    const svid = update.svids[0];
    const log = this.options.logger;
    if (!svid) {
      log.warn(
        'the Workload API issued no X.509-SVID to the agent; the TCP listener keeps its current SVID',
      );
      return null;
    }
    try {
      const validated = validateX509Svid(svid.chain, update.bundles);
      return {
        update,
        spiffeId: validated.spiffeId,
        trustDomain: validated.trustDomain,
        serial: validated.leaf.serialNumber,
        expiresAt: validated.expiresAt,
      };
    } catch (error) {
      log.error(
        { err: error, spiffeId: svid.spiffeId },
        'the agent X.509-SVID is invalid; the TCP listener does not use it',
      );
      return null;
    }
  }

  private present(svid: PresentedSvid): void {
    const bundle = svid.update.bundles.get(svid.trustDomain) ?? [];
    const previous = this.presented;
    this.provider.update(svid.update.svids[0], svid.trustDomain, bundle);
    this.presented = svid;
    this.scheduleExpiry(svid);
    if (previous && previous.serial !== svid.serial) {
      this.options.logger.info(
        { spiffeId: svid.spiffeId, serial: svid.serial, expires: svid.expiresAt.toISOString() },
        'audit TCP listener presents a new X.509-SVID to new connections',
      );
    }
  }

  /**
   * Stops presenting the SVID when it expires without a successor, so that clients get a closed
   * connection rather than an expired certificate.
   */
  private scheduleExpiry(svid: PresentedSvid): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    // setTimeout accepts at most 2^31 - 1 ms (about 24.8 days), so a longer-lived SVID is checked again then.
    const delay = Math.min(Math.max(svid.expiresAt.getTime() - Date.now(), 0), 2 ** 31 - 1);
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = null;
      if (this.presented !== svid) return;
      if (svid.expiresAt.getTime() > Date.now()) {
        this.scheduleExpiry(svid);
        return;
      }
      this.withdraw(
        `the X.509-SVID ${svid.spiffeId} expired at ${svid.expiresAt.toISOString()} without a successor`,
      );
    }, delay);
    this.expiryTimer.unref();
  }

  private onRetry(error: SpireRpcError): void {
    // The Workload API standard: PermissionDenied means the caller must stop using its SVIDs.
    if (error.code === grpc.status.PERMISSION_DENIED && this.presented) {
      this.withdraw(`the Workload API withdrew the agent's identity: ${error.message}`);
    }
  }

  private withdraw(reason: string): void {
    this.presented = null;
    this.provider.withdraw();
    this.options.logger.error(
      { reason },
      'audit TCP listener has no X.509-SVID: it drops new connections until the Workload API issues one',
    );
  }
}

/**
 * Logs rejected calls, keyed by peer: its SPIFFE ID, or its address when it has none. The first
 * rejection of a peer in REJECTION_LOG_INTERVAL_MS is logged at once. Later ones in that interval
 * are counted, and the count goes out with the next line logged for that peer.
 */
class RejectionLog {
  private readonly peers = new Map<string, { loggedAt: number; suppressed: number }>();

  record(call: RejectedCall, log: Logger): void {
    const key = `${call.code}|${call.spiffeId ?? hostOf(call.peer)}`;
    const now = Date.now();
    const entry = this.peers.get(key);
    if (entry && now - entry.loggedAt < REJECTION_LOG_INTERVAL_MS) {
      entry.suppressed++;
      return;
    }
    const repeated = entry?.suppressed ?? 0;
    this.peers.set(key, { loggedAt: now, suppressed: 0 });
    this.forgetOld(now);
    log.warn(
      {
        peerSpiffeId: call.spiffeId,
        peer: call.peer,
        method: call.method,
        code: grpc.status[call.code],
        reason: call.reason,
        ...(repeated > 0 ? { repeatedSinceLastLog: repeated } : {}),
      },
      'audit mTLS call rejected',
    );
  }

  /** Drops entries older than two intervals, so a scan from many addresses does not grow the map. */
  private forgetOld(now: number): void {
    if (this.peers.size < 1024) return;
    for (const [key, entry] of this.peers) {
      if (now - entry.loggedAt > 2 * REJECTION_LOG_INTERVAL_MS) this.peers.delete(key);
    }
  }
}

function hostOf(peer: string): string {
  const colon = peer.lastIndexOf(':');
  return colon > 0 ? peer.slice(0, colon) : peer;
}
