/**
 * Client of SPIRE's Delegated Identity API (spire.api.agent.delegatedidentity.v1), served on the
 * spire-agent admin socket to callers whose SPIFFE ID is in the agent's `authorized_delegates`.
 * The admin socket needs no `workload.spiffe.io` metadata.
 *
 * Sigil subscribes by pid, not by selectors. With a pid, spire-agent computes the selectors with
 * its own configured workload attestors (unix, k8s, docker, systemd, ...), so an entry matches a
 * process exactly as it would for the process's own Workload API call. With selectors, SPIRE
 * trusts whatever the delegate sends, so Sigil would have to reimplement every attestor that the
 * operator configured and keep it in step with SPIRE. Subscribing by pid needs SPIRE 1.10.2 or
 * later.
 *
 * The cost of pids: SPIRE attests the pid once, when the stream opens, and never watches it
 * after that. A pid subscription therefore pairs the pid with its start time from /proc. It drops
 * every message that arrives when the pid has a different start time, because another process
 * then reuses the pid. It also closes the stream when the process exits. An exec keeps the pid and the
 * start time but can change the selectors, so callers subscribe again after an exec.
 */

import { createPrivateKey, KeyObject, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { readStartTime as readProcStartTime } from '../process-info';
import { parseSpiffeId } from '../spiffe-id';
import { BackoffOptions } from './backoff';
import { ReconnectingStream, StreamEnd, StreamRetry } from './reconnecting-stream';
import { RenewableClient } from './renewable-client';
import {
  delegatedIdentityClientConstructor,
  SelectorMessage,
  SubscribeToX509BundlesResponseMessage,
  SubscribeToX509SvidsResponseMessage,
  X509SvidWithKeyMessage,
} from './spire-protos';
import { parseDerCertificates, parseX509BundleMap } from './x509-bundle';

const SERVICE = '/spire.api.agent.delegatedidentity.v1.DelegatedIdentity';
const SUBSCRIBE_TO_X509_SVIDS = `${SERVICE}/SubscribeToX509SVIDs`;
const SUBSCRIBE_TO_X509_BUNDLES = `${SERVICE}/SubscribeToX509Bundles`;

/**
 * Default limit for one received message. Every message of an SVID stream carries all matching
 * SVIDs with their keys, which can pass grpc-js's 4 MiB default; Cilium raised its limit to
 * 20 MiB for the same stream.
 */
export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 20 * 1024 * 1024;

/** Default interval of the check that a subscribed pid still runs the same process. */
export const DEFAULT_LIVENESS_INTERVAL_MS = 1000;

/** A workload selector as SPIRE splits it: type `unix`, value `uid:1000`. */
export interface SpireSelector {
  type: string;
  value: string;
}

/** One X.509-SVID that the agent issued for the subscribed workload (not validated). */
export interface DelegatedX509Svid {
  spiffeId: string;
  /** Leaf first. */
  chain: X509Certificate[];
  privateKey: KeyObject;
  /** Expiry of the leaf as SPIRE reports it. */
  expiresAt: Date;
  hint: string;
}

/** The full SVID state of a subscription; each update replaces the previous one. */
export interface DelegatedX509SvidUpdate {
  /** SVIDs of every entry that matches; empty when none does. */
  svids: DelegatedX509Svid[];
  /** Trust domain IDs that the SVIDs federate with. */
  federatesWith: string[];
}

export interface DelegatedX509BundlesUpdate {
  /** CA certificates keyed by bare trust domain name. */
  bundles: Map<string, X509Certificate[]>;
}

/** Reason that a pid subscription stopped for good. */
export type PidSubscriptionEnd =
  | StreamEnd
  | { reason: 'process-exited' }
  | { reason: 'pid-reused'; expectedStartTime: bigint; startTime: bigint }
  /** Reading the start time failed with an error other than the process being gone. */
  | { reason: 'check-failed'; error: Error };

export type PidSubscriptionEvents = {
  update: [update: DelegatedX509SvidUpdate];
  retry: [retry: StreamRetry];
  end: [end: PidSubscriptionEnd];
};

export interface DelegatedIdentityClientOptions {
  /** Path of the spire-agent admin socket (`admin_socket_path` in agent.conf). */
  adminSocketPath: string;
  /** Reconnect delays for subscriptions that retry. */
  backoff?: BackoffOptions;
  /** Limit for one received message; defaults to DEFAULT_MAX_RECEIVE_MESSAGE_BYTES. */
  maxReceiveMessageBytes?: number;
  /** Root of procfs, for reading start times; defaults to /proc. */
  procRoot?: string;
}

export interface PidSubscriptionOptions {
  /**
   * Start time (clock ticks since boot) of the process the caller means. Defaults to the start
   * time read when subscribing. When the pid has another start time at any check, the
   * subscription ends with 'pid-reused' and emits no further update.
   */
  startTime?: bigint;
  /** Interval of the exit and pid reuse check, in milliseconds. */
  livenessIntervalMs?: number;
  /**
   * Whether a failed stream is reopened with backoff. The pid and start time are checked again
   * before each reopening. Defaults to true.
   */
  retry?: boolean;
  /** Reads a pid's start time, or null when it has exited; for tests. Defaults to procfs. */
  readStartTime?: (pid: number) => bigint | null;
}

export class DelegatedIdentityClient {
  private readonly client: RenewableClient;
  private readonly backoff: BackoffOptions;
  private readonly procRoot: string | undefined;

  constructor(options: DelegatedIdentityClientOptions) {
    if (options.adminSocketPath === '') {
      throw new Error('missing the spire-agent admin socket path');
    }
    this.client = new RenewableClient(delegatedIdentityClientConstructor(), `unix://${options.adminSocketPath}`, {
      'grpc.max_receive_message_length': options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
    });
    this.backoff = options.backoff ?? {};
    this.procRoot = options.procRoot;
  }

  /**
   * Streams the SVIDs of every entry whose selectors are all among `selectors`. SPIRE trusts
   * these selectors as sent. Strings are split at the first ':' (`unix:uid:1000`).
   */
  subscribeToX509SvidsBySelectors(
    selectors: ReadonlyArray<SpireSelector | string>,
    options: { retry?: boolean } = {},
  ): ReconnectingStream<DelegatedX509SvidUpdate> {
    const request = { selectors: selectors.map(toSelectorMessage), pid: 0 };
    if (request.selectors.length === 0) {
      throw new RangeError('missing selectors: SPIRE needs at least one selector or a pid');
    }
    return this.openStream(SUBSCRIBE_TO_X509_SVIDS, 'SubscribeToX509SVIDs', request, decodeX509SvidsResponse, {
      retry: options.retry ?? true,
    }).start();
  }

  /**
   * Streams the SVIDs of the process `pid`, attested by spire-agent when the stream opens. See
   * the module comment for the pid reuse guard.
   */
  subscribeToX509SvidsByPid(pid: number, options: PidSubscriptionOptions = {}): PidSubscription {
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid > 0x7fffffff) {
      throw new RangeError(`invalid pid ${pid}: expected a positive 32-bit integer`);
    }
    const readStartTime = options.readStartTime ?? ((target: number) => readProcStartTime(target, this.procRoot));
    return new PidSubscription(pid, {
      readStartTime,
      startTime: options.startTime,
      livenessIntervalMs: options.livenessIntervalMs ?? DEFAULT_LIVENESS_INTERVAL_MS,
      openStream: (guard) =>
        this.openStream(
          SUBSCRIBE_TO_X509_SVIDS,
          'SubscribeToX509SVIDs',
          { selectors: [], pid },
          decodeX509SvidsResponse,
          { retry: options.retry ?? true, beforeOpen: guard },
        ),
    });
  }

  /** Streams the X.509 bundles of the agent's trust domain and the federated trust domains. */
  subscribeToX509Bundles(options: { retry?: boolean } = {}): ReconnectingStream<DelegatedX509BundlesUpdate> {
    return this.openStream(SUBSCRIBE_TO_X509_BUNDLES, 'SubscribeToX509Bundles', {}, decodeX509BundlesResponse, {
      retry: options.retry ?? true,
    }).start();
  }

  /** Closes the channel. Open subscriptions fail and are not retried after this. */
  close(): void {
    this.client.close();
  }

  private openStream<Raw, T>(
    method: string,
    rpcName: string,
    request: object,
    decode: (raw: Raw) => T,
    options: { retry: boolean; beforeOpen?: () => boolean },
  ): ReconnectingStream<T> {
    let current: grpc.Client | null = null;
    return ReconnectingStream.create<Raw, T>({
      method,
      backoff: options.retry ? this.backoff : null,
      decode,
      open: () => {
        if (options.beforeOpen !== undefined && !options.beforeOpen()) {
          return null;
        }
        current = this.client.get();
        const start = (current as unknown as Record<string, StreamStarter<Raw>>)[rpcName];
        return start.call(current, request);
      },
      onFailure: (error) => {
        if (current !== null && error.code === grpc.status.UNAVAILABLE) {
          this.client.renew(current);
        }
      },
    });
  }
}

type StreamStarter<Raw> = (request: object) => grpc.ClientReadableStream<Raw>;

interface PidSubscriptionParts {
  readStartTime: (pid: number) => bigint | null;
  startTime: bigint | undefined;
  livenessIntervalMs: number;
  openStream: (guard: () => boolean) => ReconnectingStream<DelegatedX509SvidUpdate>;
}

/**
 * A SubscribeToX509SVIDs stream for one process, guarded against pid reuse. Events: 'update'
 * with each message that arrived while the pid still had the expected start time, 'retry', and
 * 'end' once when it stops for good.
 */
export class PidSubscription extends EventEmitter<PidSubscriptionEvents> {
  /** Start time that every check compares with; null until read when the process is gone. */
  readonly startTime: bigint | null;
  private readonly readStartTime: (pid: number) => bigint | null;
  private readonly stream: ReconnectingStream<DelegatedX509SvidUpdate>;
  private readonly livenessTimer: NodeJS.Timeout;
  private ended = false;

  constructor(
    readonly pid: number,
    parts: PidSubscriptionParts,
  ) {
    super();
    this.readStartTime = parts.readStartTime;
    this.startTime = parts.startTime ?? parts.readStartTime(pid);
    this.stream = parts.openStream(() => this.checkProcess());
    this.stream.on('update', (update) => {
      // SPIRE attested whatever process had the pid when the stream opened. If the pid now
      // has another start time, that may have been a new process, so the update is dropped.
      if (this.checkProcess()) {
        this.emit('update', update);
      }
    });
    this.stream.on('retry', (retry) => this.emit('retry', retry));
    this.stream.on('end', (end) => this.finish(end));
    this.livenessTimer = setInterval(() => this.checkProcess(), parts.livenessIntervalMs);
    this.livenessTimer.unref();
    // The first check and the stream open run on a later tick, after the caller adds listeners.
    this.stream.start();
  }

  /** Cancels the stream; emits 'end' with reason 'closed' unless it already ended. */
  close(): void {
    this.finish({ reason: 'closed' });
  }

  /**
   * Returns whether the pid still runs the expected process. Otherwise ends the subscription
   * with 'process-exited' or 'pid-reused' and returns false.
   */
  private checkProcess(): boolean {
    if (this.ended) {
      return false;
    }
    let current: bigint | null;
    try {
      current = this.readStartTime(this.pid);
    } catch (error) {
      this.finish({ reason: 'check-failed', error: error as Error });
      return false;
    }
    if (current === null || this.startTime === null) {
      this.finish({ reason: 'process-exited' });
      return false;
    }
    if (current !== this.startTime) {
      this.finish({ reason: 'pid-reused', expectedStartTime: this.startTime, startTime: current });
      return false;
    }
    return true;
  }

  private finish(end: PidSubscriptionEnd): void {
    if (this.ended) {
      return;
    }
    this.ended = true;
    clearInterval(this.livenessTimer);
    this.stream.close();
    this.emit('end', end);
  }
}

function toSelectorMessage(selector: SpireSelector | string): SelectorMessage {
  const parsed = typeof selector === 'string' ? splitSelector(selector) : selector;
  if (parsed.type === '' || parsed.type.includes(':') || parsed.value === '') {
    throw new RangeError(
      `invalid selector type ${JSON.stringify(parsed.type)} and value ${JSON.stringify(parsed.value)}: ` +
        "the type must be non-empty without ':' and the value non-empty",
    );
  }
  return { type: parsed.type, value: parsed.value };
}

function splitSelector(text: string): SpireSelector {
  const colon = text.indexOf(':');
  if (colon < 0) {
    throw new RangeError(`invalid selector ${JSON.stringify(text)}: expected 'type:value', such as 'unix:uid:1000'`);
  }
  return { type: text.slice(0, colon), value: text.slice(colon + 1) };
}

function decodeX509SvidsResponse(message: SubscribeToX509SvidsResponseMessage): DelegatedX509SvidUpdate {
  return {
    svids: (message.x509Svids ?? []).map(decodeDelegatedSvid),
    federatesWith: message.federatesWith ?? [],
  };
}

function decodeDelegatedSvid(message: X509SvidWithKeyMessage): DelegatedX509Svid {
  const svid = message.x509Svid;
  if (svid === null || svid.id === null) {
    throw new Error('an X509SVIDWithKey has no x509_svid or no id');
  }
  const spiffeId = parseSpiffeId(`spiffe://${svid.id.trustDomain}${svid.id.path}`).toString();
  return {
    spiffeId,
    chain: svid.certChain.map((der, index) => {
      const certificates = parseDerCertificates(der, `certificate ${index} of the chain of ${spiffeId}`);
      if (certificates.length !== 1) {
        throw new Error(
          `certificate ${index} of the chain of ${spiffeId} contains ${certificates.length} certificates, expected 1`,
        );
      }
      return certificates[0];
    }),
    privateKey: createPrivateKey({ key: message.x509SvidKey, format: 'der', type: 'pkcs8' }),
    expiresAt: new Date(Number(svid.expiresAt) * 1000),
    hint: svid.hint,
  };
}

function decodeX509BundlesResponse(message: SubscribeToX509BundlesResponseMessage): DelegatedX509BundlesUpdate {
  return { bundles: parseX509BundleMap(message.caCertificates ?? {}) };
}
