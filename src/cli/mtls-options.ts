import { Command, InvalidArgumentError } from 'commander';
import { DEFAULT_SVID_TIMEOUT_MS } from '../enforce/mtls-endpoint';
import { parseTcpListenAddress, TcpListenAddress } from '../events/mtls-server';
import { SpiffeIdError } from '../identity/spiffe-id';
import { SpiffeIdAllowList } from '../identity/spiffe-id-allow-list';

/** The `sigil run` options of the audit service's TCP listener. */
export interface GrpcListenFlags {
  grpcListen?: string;
  grpcAuthorizedId?: string[];
  grpcAuthorizedIdPrefix?: string[];
  grpcSvidTimeout: number;
  spireWorkloadApi?: string;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function seconds(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError('expected a whole number of seconds, 1 or more');
  }
  return Number(value);
}

/** Runs a parse, turning a SpiffeIdError into an Error that names the flag. */
function checkSpiffeId(flag: string, parse: () => unknown, value: string): void {
  try {
    parse();
  } catch (error) {
    if (!(error instanceof SpiffeIdError)) throw error;
    throw new Error(`invalid ${flag} ${JSON.stringify(value)}: ${error.problem}`);
  }
}

/** Adds the TCP listener options to `sigil run`. */
export function addGrpcListenOptions(command: Command): Command {
  return command
    .option(
      '--grpc-listen <ip:port>',
      'also serve the audit gRPC service on this TCP address with mTLS, such as 127.0.0.1:7443 ' +
        '(needs --spire-workload-api and at least one --grpc-authorized-id or --grpc-authorized-id-prefix)',
    )
    .option(
      '--grpc-authorized-id <spiffe-id>',
      'SPIFFE ID of a client that may read events over TCP, repeatable',
      collect,
    )
    .option(
      '--grpc-authorized-id-prefix <prefix>',
      'allow client SPIFFE IDs equal to this prefix or below it on a path segment boundary, repeatable ' +
        '(spiffe://example.org/soc allows spiffe://example.org/soc/siem, not spiffe://example.org/socks)',
      collect,
    )
    .option(
      '--grpc-svid-timeout <seconds>',
      'how long the agent waits at start for its X.509-SVID before it gives up (with --grpc-listen)',
      seconds,
      DEFAULT_SVID_TIMEOUT_MS / 1000,
    );
}

/**
 * Returns the agent's TCP listener settings, or undefined without --grpc-listen. Throws Error
 * naming the flag and the fix for an invalid or incomplete combination.
 */
export function grpcListenSettings(
  flags: GrpcListenFlags,
): { address: TcpListenAddress; allowList: SpiffeIdAllowList; svidTimeoutMs: number } | undefined {
  const ids = flags.grpcAuthorizedId ?? [];
  const prefixes = flags.grpcAuthorizedIdPrefix ?? [];
  if (flags.grpcListen === undefined) {
    if (ids.length > 0 || prefixes.length > 0) {
      throw new Error(
        '--grpc-authorized-id and --grpc-authorized-id-prefix need --grpc-listen <ip:port>',
      );
    }
    return undefined;
  }
  const address = parseTcpListenAddress(flags.grpcListen);
  if (!flags.spireWorkloadApi) {
    throw new Error(
      `--grpc-listen ${flags.grpcListen} needs --spire-workload-api unix:///path: ` +
        'the TCP listener presents the agent X.509-SVID from the SPIFFE Workload API',
    );
  }
  for (const id of ids)
    checkSpiffeId('--grpc-authorized-id', () => SpiffeIdAllowList.parse([id]), id);
  for (const prefix of prefixes) {
    checkSpiffeId(
      '--grpc-authorized-id-prefix',
      () => SpiffeIdAllowList.parse([], [prefix]),
      prefix,
    );
  }
  const allowList = SpiffeIdAllowList.parse(ids, prefixes);
  if (allowList.isEmpty) {
    throw new Error(
      `--grpc-listen ${flags.grpcListen} authorises no client: ` +
        'add --grpc-authorized-id <spiffe-id> or --grpc-authorized-id-prefix <prefix>',
    );
  }
  return { address, allowList, svidTimeoutMs: flags.grpcSvidTimeout * 1000 };
}
