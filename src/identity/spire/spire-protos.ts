/**
 * gRPC client constructors for the SPIFFE Workload API and SPIRE's Delegated Identity API,
 * loaded from the project's .proto files.
 *
 * Messages use camelCase field names, bytes as Buffer, 64-bit integers as decimal strings, and
 * default values for missing fields.
 */

import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** Directory that import paths in the .proto files are relative to. */
export const PROTO_ROOT = join(__dirname, '..', '..', '..', 'proto');

export const WORKLOAD_API_PROTO = 'spiffe/workload/workload.proto';
export const DELEGATED_IDENTITY_PROTO = 'spire/api/agent/delegatedidentity/v1/delegatedidentity.proto';

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

let workloadApi: grpc.ServiceClientConstructor | undefined;
let delegatedIdentity: grpc.ServiceClientConstructor | undefined;

/** Returns the client constructor of service `SpiffeWorkloadAPI` (no proto package). */
export function workloadApiClientConstructor(): grpc.ServiceClientConstructor {
  if (workloadApi === undefined) {
    const root = grpc.loadPackageDefinition(protoLoader.loadSync(WORKLOAD_API_PROTO, LOADER_OPTIONS));
    workloadApi = root.SpiffeWorkloadAPI as grpc.ServiceClientConstructor;
  }
  return workloadApi;
}

/** Returns the client constructor of `spire.api.agent.delegatedidentity.v1.DelegatedIdentity`. */
export function delegatedIdentityClientConstructor(): grpc.ServiceClientConstructor {
  if (delegatedIdentity === undefined) {
    const root = grpc.loadPackageDefinition(protoLoader.loadSync(DELEGATED_IDENTITY_PROTO, LOADER_OPTIONS));
    const spire = root.spire as grpc.GrpcObject;
    const api = spire.api as grpc.GrpcObject;
    const agent = api.agent as grpc.GrpcObject;
    const v1 = (agent.delegatedidentity as grpc.GrpcObject).v1 as grpc.GrpcObject;
    delegatedIdentity = v1.DelegatedIdentity as grpc.ServiceClientConstructor;
  }
  return delegatedIdentity;
}

/** Wire shapes of the messages that Sigil reads, as the loader options above decode them. */
export interface X509SvidMessage {
  spiffeId: string;
  x509Svid: Buffer;
  x509SvidKey: Buffer;
  bundle: Buffer;
  hint: string;
}

export interface X509SvidResponseMessage {
  svids: X509SvidMessage[];
  crl: Buffer[];
  federatedBundles: Record<string, Buffer>;
}

export interface X509BundlesResponseMessage {
  crl: Buffer[];
  bundles: Record<string, Buffer>;
}

export interface SpiffeIdMessage {
  trustDomain: string;
  path: string;
}

export interface SelectorMessage {
  type: string;
  value: string;
}

export interface X509SvidWithKeyMessage {
  x509Svid: {
    certChain: Buffer[];
    id: SpiffeIdMessage | null;
    /** Seconds since the Unix epoch, as a decimal string. */
    expiresAt: string;
    hint: string;
  } | null;
  x509SvidKey: Buffer;
}

export interface SubscribeToX509SvidsResponseMessage {
  x509Svids: X509SvidWithKeyMessage[];
  federatesWith: string[];
}

export interface SubscribeToX509BundlesResponseMessage {
  caCertificates: Record<string, Buffer>;
}
