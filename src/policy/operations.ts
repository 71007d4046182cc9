import { explainAccept, explainConnect } from './decide';
import { explainCapability, explainExec, explainOpen } from './decide-paths';
import { Explanation } from './evaluate';
import { PolicySet, RuleKind } from './types';

/** An operation of a subject, one per rule kind, without the subject itself. */
export type Operation =
  | {
      kind: 'egress';
      /** Destination address and port of the connect(). */
      address: string;
      port: number;
      protocol: 'TCP' | 'UDP';
      /** SPIFFE ID of the local listener's owner, or null. */
      peer: string | null;
    }
  | {
      kind: 'ingress';
      /** Source address of the connection and the subject's local port. */
      address: string;
      port: number;
      protocol: 'TCP' | 'UDP';
      /** SPIFFE ID of the local client, or null. */
      peer: string | null;
    }
  | { kind: 'process'; path: string }
  | {
      kind: 'file';
      path: string;
      write: boolean;
      /** True when the opened file is a directory; absent means a file that is not. */
      directory?: boolean;
    }
  | { kind: 'capability'; capability: string };

/** Decides an operation of a subject (a SPIFFE ID, or null without one) with its explanation. */
export function explainOperation(
  set: PolicySet,
  subject: string | null,
  operation: Operation,
): Explanation {
  switch (operation.kind) {
    case 'egress':
      return explainConnect(set, { subject, ...withoutKind(operation) });
    case 'ingress':
      return explainAccept(set, { subject, ...withoutKind(operation) });
    case 'process':
      return explainExec(set, { subject, path: operation.path });
    case 'file':
      return explainOpen(set, {
        subject,
        path: operation.path,
        write: operation.write,
        directory: operation.directory === true,
      });
    case 'capability':
      return explainCapability(set, { subject, capability: operation.capability });
  }
}

function withoutKind<T extends { kind: RuleKind }>(operation: T): Omit<T, 'kind'> {
  const { kind: _kind, ...rest } = operation;
  return rest;
}

/** Formats an address and port as `10.0.0.1:80` or `[2001:db8::1]:80`. */
export function formatEndpoint(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Describes an operation in one line, such as `connect 10.0.0.1:5432/tcp`. */
export function describeOperation(operation: Operation): string {
  switch (operation.kind) {
    case 'egress': {
      const peer = operation.peer === null ? '' : ` (listener ${operation.peer})`;
      const endpoint = formatEndpoint(operation.address, operation.port);
      return `connect ${endpoint}/${operation.protocol.toLowerCase()}${peer}`;
    }
    case 'ingress': {
      const peer = operation.peer === null ? '' : ` (client ${operation.peer})`;
      const from = `from ${operation.address}${peer}`;
      return `accept ${operation.protocol.toLowerCase()} port ${operation.port} ${from}`;
    }
    case 'process':
      return `exec ${operation.path}`;
    case 'file': {
      const fileType = operation.directory ? 'directory ' : '';
      return `open ${fileType}${operation.path} for ${operation.write ? 'writing' : 'reading'}`;
    }
    case 'capability':
      return `use capability ${operation.capability}`;
  }
}
