/**
 * Learning mode: the operations one SPIFFE ID performed, collected from the agent's audit
 * events, and the least-privilege policy that allows exactly them. The policy can be used as it
 * is, or turned into an AppArmor profile with `generateProfiles`.
 */
import { posix } from 'node:path';
import { stringify } from 'yaml';
import { AuditEvent } from '../events/audit-event';
import { NAME_MAX_LENGTH } from '../policy/schema';
import { compareText } from './subjects';

/** A connect destination as the events report it. */
interface Destination {
  protocol: 'TCP' | 'UDP';
  port: number;
  /** SPIFFE ID of the local listener's owner, or '' for an address without identity. */
  peer: string;
  /** Address as a prefix of one host, such as `10.0.0.1/32`. */
  cidr: string;
}

/** File paths opened per access, from file events. */
interface FileAccess {
  read: Set<string>;
  write: Set<string>;
}

/** Minimum number of written files in one directory before they collapse into the directory. */
const COLLAPSE_MIN_FILES = 2;
const WRITE_OPERATIONS = new Set(['write', 'create', 'unlink', 'rename', 'chmod', 'chown']);

/** Operations of one subject, with duplicates merged. */
export class BehaviourRecording {
  readonly executables = new Set<string>();
  private readonly destinations = new Map<string, Destination>();
  private readonly files: FileAccess = { read: new Set(), write: new Set() };
  /** Events of the subject that were not used: denied, or without a usable path or protocol. */
  skipped = 0;

  constructor(readonly spiffeId: string) {}

  /**
   * Adds one event. Events of other subjects and of other types are ignored, and denied
   * operations are skipped, so the recording never allows what a policy blocked.
   */
  add(event: AuditEvent): void {
    if (event.subject?.spiffeId !== this.spiffeId) return;
    if (event.result === 'denied') {
      this.skipped++;
      return;
    }
    if (event.type === 'exec') this.addExec(event);
    else if (event.type === 'connect') this.addConnect(event);
    else if (event.type === 'file') this.addFile(event);
  }

  private addExec(event: AuditEvent): void {
    const executable = event.process?.executable ?? '';
    // The kernel appends " (deleted)" to the path of an unlinked executable.
    if (!executable.startsWith('/') || executable.endsWith(' (deleted)')) {
      this.skipped++;
      return;
    }
    this.executables.add(executable);
  }

  private addConnect(event: AuditEvent): void {
    const connection = event.connection;
    if (!connection || connection.protocol === 'other') {
      this.skipped++;
      return;
    }
    const protocol = connection.protocol === 'tcp' ? 'TCP' : 'UDP';
    const bits = connection.family === 'ipv4' ? 32 : 128;
    const destination: Destination = {
      protocol,
      port: connection.port,
      peer: connection.peerSpiffeId,
      cidr: `${connection.address}/${bits}`,
    };
    const target = destination.peer || destination.cidr;
    this.destinations.set(`${protocol} ${target} ${connection.port}`, destination);
  }

  private addFile(event: AuditEvent): void {
    const path = event.object?.path ?? '';
    if (!path.startsWith('/') || path.endsWith(' (deleted)')) {
      this.skipped++;
      return;
    }
    // NOTE: BPF LSM file events have operation `open` for reads and writes alike, and only
    // their message contains "for write", so the message decides for them.
    const operation = event.object?.operation ?? '';
    const write =
      WRITE_OPERATIONS.has(operation) ||
      (operation === 'open' && / for write /.test(event.message ?? ''));
    (write ? this.files.write : this.files.read).add(path);
  }

  /** Connect destinations sorted by protocol, peer or address, and port. */
  connectDestinations(): Destination[] {
    return [...this.destinations.entries()]
      .sort(([a], [b]) => compareText(a, b))
      .map(([, destination]) => destination);
  }

  /**
   * Returns the file objects: written files that share a directory with another written file
   * become that directory (per-run files such as temporary names), and every other path stays
   * as it is. Read-only paths never collapse.
   */
  fileObjects(): { readPaths: string[]; writePaths: string[]; writeDirectories: string[] } {
    const byDirectory = new Map<string, string[]>();
    for (const path of this.files.write) {
      const directory = posix.dirname(path);
      byDirectory.set(directory, [...(byDirectory.get(directory) ?? []), path]);
    }
    const writeDirectories: string[] = [];
    const writePaths: string[] = [];
    for (const [directory, paths] of byDirectory) {
      if (paths.length >= COLLAPSE_MIN_FILES) writeDirectories.push(directory);
      else writePaths.push(...paths);
    }
    const covered = (path: string) =>
      this.files.write.has(path) || writeDirectories.includes(posix.dirname(path));
    const readPaths = [...this.files.read].filter((path) => !covered(path));
    return {
      readPaths: readPaths.sort(compareText),
      writePaths: writePaths.sort(compareText),
      writeDirectories: writeDirectories.sort(compareText),
    };
  }
}

/**
 * Returns a policy name for a recorded SPIFFE ID: `recorded-` and the ID's path, lowercased,
 * with other characters turned into `-`, cut to the name limit.
 */
export function recordedPolicyName(spiffeId: string): string {
  const body = spiffeId
    .replace(/^spiffe:\/\//, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return `recorded-${body}`.slice(0, NAME_MAX_LENGTH).replace(/-+$/, '');
}

/**
 * Writes the recording as an IdentityPolicy that allows what was recorded and, with Block
 * postures, nothing else of each kind that has a recorded operation. A kind without recorded
 * operations gets no rules, so it stays unrestricted.
 */
export function recordedPolicyYaml(recording: BehaviourRecording, name: string): string {
  const spec: Record<string, unknown> = { subject: { spiffeId: recording.spiffeId } };
  const executables = [...recording.executables].sort(compareText);
  if (executables.length > 0) {
    spec.processPosture = 'Block';
    spec.process = [{ name: 'recorded-exec', action: 'Allow', paths: executables }];
  }

  const fileRules = recordedFileRules(recording);
  if (fileRules.length > 0) {
    spec.filePosture = 'Block';
    spec.file = fileRules;
  }

  const destinations = recording.connectDestinations();
  if (destinations.length > 0) {
    spec.egressPosture = 'Block';
    spec.egress = destinations.map((destination, index) => ({
      name: `recorded-connect-${index}`,
      action: 'Allow',
      to: destination.peer ? { spiffeId: destination.peer } : { cidrs: [destination.cidr] },
      ports: [destination.port],
      protocol: destination.protocol,
    }));
  }

  const document = {
    apiVersion: 'sigil.dev/v1alpha1',
    kind: 'IdentityPolicy',
    metadata: { name },
    spec,
  };
  return stringify(document, { lineWidth: 0 });
}

function recordedFileRules(recording: BehaviourRecording): Record<string, unknown>[] {
  const files = recording.fileObjects();
  const rules: Record<string, unknown>[] = [];
  if (files.readPaths.length > 0) {
    rules.push({ name: 'recorded-read', action: 'Allow', readOnly: true, paths: files.readPaths });
  }
  if (files.writePaths.length > 0) {
    rules.push({ name: 'recorded-write', action: 'Allow', paths: files.writePaths });
  }
  if (files.writeDirectories.length > 0) {
    rules.push({
      name: 'recorded-write-directories',
      action: 'Allow',
      directories: files.writeDirectories,
    });
  }
  return rules;
}
