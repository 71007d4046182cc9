import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** Path of the audit service definition, relative to the package root. */
export const AUDIT_PROTO = join(__dirname, '..', '..', 'proto', 'sigil', 'audit', 'v1', 'audit.proto');

/** Loads sigil.audit.v1 with camelCase fields and 64-bit integers as decimal strings. */
export function loadAuditPackage(): grpc.GrpcObject {
  const definition = protoLoader.loadSync(AUDIT_PROTO, {
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const root = grpc.loadPackageDefinition(definition);
  return ((root.sigil as grpc.GrpcObject).audit as grpc.GrpcObject).v1 as grpc.GrpcObject;
}

export function auditServiceDefinition(): grpc.ServiceDefinition {
  const service = loadAuditPackage().AuditService as grpc.ServiceClientConstructor;
  return service.service;
}

export function auditClientConstructor(): grpc.ServiceClientConstructor {
  return loadAuditPackage().AuditService as grpc.ServiceClientConstructor;
}
