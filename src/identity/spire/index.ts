/** SPIRE as an identity source: Workload API and Delegated Identity API clients, SVID checks. */

export { BackoffOptions, ExponentialBackoff } from './backoff';
export {
  DEFAULT_LIVENESS_INTERVAL_MS,
  DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  DelegatedIdentityClient,
  DelegatedIdentityClientOptions,
  DelegatedX509BundlesUpdate,
  DelegatedX509Svid,
  DelegatedX509SvidUpdate,
  PidSubscription,
  PidSubscriptionEnd,
  PidSubscriptionOptions,
  SpireSelector,
} from './delegated-identity-client';
export { SpireRpcError, SpireUnavailableError } from './errors';
export { isRetryableStatus, ReconnectingStream, StreamEnd, StreamRetry } from './reconnecting-stream';
export {
  selectLowestSpiffeId,
  SpireIdentitySource,
  SpireIdentitySourceOptions,
  SpireSourceStatus,
  TrackedIdentity,
} from './spire-identity-source';
export {
  WORKLOAD_API_SECURITY_HEADER,
  WorkloadApiClient,
  WorkloadApiClientOptions,
  WorkloadWatch,
  WorkloadX509Svid,
  X509BundlesUpdate,
  X509SvidUpdate,
} from './workload-api-client';
export {
  parseWorkloadEndpoint,
  resolveWorkloadEndpoint,
  SPIFFE_ENDPOINT_SOCKET_ENV,
  WorkloadEndpoint,
  WorkloadEndpointError,
} from './workload-endpoint';
export { parseDerCertificates, parseX509BundleMap, X509BundleSet } from './x509-bundle';
export {
  readUriSans,
  ValidatedX509Svid,
  ValidatedX509SvidLeaf,
  validateX509Svid,
  validateX509SvidLeaf,
  X509SvidError,
  X509SvidRule,
} from './x509-svid';
