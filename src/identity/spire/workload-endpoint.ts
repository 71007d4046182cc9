/**
 * Addresses of the SPIFFE Workload API endpoint, per the SPIFFE Workload Endpoint standard
 * (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Workload_Endpoint.md): an RFC 3986
 * URI, either `unix:///absolute/path` or `tcp://<IP address>:<port>`.
 */

import { isIP } from 'node:net';

/** Environment variable that names the endpoint when a client is not given an address. */
export const SPIFFE_ENDPOINT_SOCKET_ENV = 'SPIFFE_ENDPOINT_SOCKET';

export type WorkloadEndpoint =
  | { kind: 'unix'; path: string }
  | { kind: 'tcp'; host: string; port: number };

/** Error for an endpoint address that the standard does not allow. */
export class WorkloadEndpointError extends Error {
  constructor(
    readonly address: string,
    problem: string,
  ) {
    super(`invalid Workload API endpoint address ${JSON.stringify(address)}: ${problem}`);
    this.name = 'WorkloadEndpointError';
  }
}

/** Parses an endpoint URI. Throws WorkloadEndpointError naming the broken rule. */
export function parseWorkloadEndpoint(address: string): WorkloadEndpoint {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new WorkloadEndpointError(address, "expected 'unix:///path' or 'tcp://<ip>:<port>'");
  }
  if (url.search !== '' || url.hash !== '') {
    throw new WorkloadEndpointError(address, 'a query or fragment is not allowed');
  }
  if (url.username !== '' || url.password !== '') {
    throw new WorkloadEndpointError(address, 'userinfo is not allowed');
  }

  if (url.protocol === 'unix:') {
    // `unix:///a` has an empty authority. `unix://a/b` has authority "a", which the standard
    // rejects, and `unix:a` or `unix:/a` have no "//" at all.
    if (!address.startsWith('unix:///')) {
      throw new WorkloadEndpointError(address, "a unix address must have the form 'unix:///absolute/path'");
    }
    const path = decodeURIComponent(url.pathname);
    if (path === '/' || path.endsWith('/')) {
      throw new WorkloadEndpointError(address, 'the socket path must name a file');
    }
    return { kind: 'unix', path };
  }

  if (url.protocol === 'tcp:') {
    if (url.pathname !== '' && url.pathname !== '/') {
      throw new WorkloadEndpointError(address, 'a tcp address must not have a path');
    }
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    if (isIP(host) === 0) {
      throw new WorkloadEndpointError(address, 'a tcp address needs an IP address, not a host name');
    }
    if (url.port === '') {
      throw new WorkloadEndpointError(address, 'a tcp address needs a port');
    }
    return { kind: 'tcp', host, port: Number(url.port) };
  }

  throw new WorkloadEndpointError(address, `unsupported scheme '${url.protocol.slice(0, -1)}'; expected 'unix' or 'tcp'`);
}

/**
 * Returns the endpoint from `address`, or from SPIFFE_ENDPOINT_SOCKET when `address` is
 * undefined. Throws when neither is set.
 */
export function resolveWorkloadEndpoint(address: string | undefined, env = process.env): WorkloadEndpoint {
  const text = address ?? env[SPIFFE_ENDPOINT_SOCKET_ENV];
  if (text === undefined || text === '') {
    throw new WorkloadEndpointError(
      '',
      `no address given and ${SPIFFE_ENDPOINT_SOCKET_ENV} is not set; pass the agent's socket as 'unix:///path'`,
    );
  }
  return parseWorkloadEndpoint(text);
}

/** Returns the gRPC target string for an endpoint. */
export function grpcTarget(endpoint: WorkloadEndpoint): string {
  if (endpoint.kind === 'unix') {
    return `unix://${endpoint.path}`;
  }
  const host = isIP(endpoint.host) === 6 ? `[${endpoint.host}]` : endpoint.host;
  return `${host}:${endpoint.port}`;
}
