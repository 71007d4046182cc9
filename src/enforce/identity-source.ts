import { EventEmitter } from 'node:events';
import { readlinkSync } from 'node:fs';
import { RegistrationAttestor } from '../identity/attestor';
import { readStartTime } from '../identity/process-info';
import { Registration } from '../identity/registration';
import { SpireIdentitySource, SpireSourceStatus, SpireUnavailableError } from '../identity/spire';

/** Identity and executable of a process, as an identity source attests them. */
export interface AttestedProcess {
  /** Null when no registration entry matches the process. */
  spiffeId: string | null;
  /** The executable as /proc/<pid>/exe resolves it; null for kernel threads. */
  executable: string | null;
  startTimeTicks: bigint;
}

export type IdentitySourceEvents = {
  /** A tracked process's SPIFFE ID changed (SVID rotation, entry deleted). */
  change: [pid: number, spiffeId: string | null];
  status: [status: SpireSourceStatus];
};

/**
 * Where the agent gets SPIFFE IDs of processes: the embedded registration
 * file, or SPIRE's Delegated Identity API. attest() resolves undefined when
 * the process is gone, was replaced (start time differs), or cannot be read;
 * it rejects with SpireUnavailableError when SPIRE does not respond.
 */
export interface IdentitySource extends EventEmitter<IdentitySourceEvents> {
  readonly kind: 'registration' | 'spire';
  attest(pid: number, expectedStartTime: bigint | null): Promise<AttestedProcess | undefined>;
  forget(pid: number): void;
  close(): void;
}

function readExecutable(pid: number): string | null {
  try {
    return readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '');
  } catch {
    return null;
  }
}

/** Identities from a registration file, matched against /proc by the agent itself. */
export class RegistrationIdentitySource extends EventEmitter<IdentitySourceEvents> implements IdentitySource {
  readonly kind = 'registration';
  private attestor: RegistrationAttestor;

  constructor(registration: Registration) {
    super();
    this.attestor = new RegistrationAttestor(registration);
  }

  /** Switches to a new registration; processes are attested anew by the caller. */
  setRegistration(registration: Registration): void {
    this.attestor = new RegistrationAttestor(registration);
  }

  async attest(pid: number, expectedStartTime: bigint | null): Promise<AttestedProcess | undefined> {
    const options = expectedStartTime === null ? {} : { expectedStartTime };
    const result = await this.attestor.attest(pid, options);
    if (!result) return undefined;
    return {
      spiffeId: result.spiffeId,
      executable: result.info.exePath,
      startTimeTicks: result.info.startTimeTicks,
    };
  }

  forget(): void {}

  close(): void {}
}

/**
 * Identities from SPIRE: the spire-agent attests each process by pid with its
 * own workload attestors, so the SPIFFE IDs are exactly the ones SPIRE would
 * issue. The pid is paired with its start time, so a reused pid never gets
 * the identity of the process it replaced.
 */
export class SpireAgentIdentitySource extends EventEmitter<IdentitySourceEvents> implements IdentitySource {
  readonly kind = 'spire';
  private readonly source: SpireIdentitySource;

  constructor(adminSocketPath: string) {
    super();
    this.source = new SpireIdentitySource({ adminSocketPath });
    this.source.on('change', (pid, spiffeId) => this.emit('change', pid, spiffeId));
    this.source.on('status', (status) => this.emit('status', status));
    this.source.start();
  }

  async attest(pid: number, expectedStartTime: bigint | null): Promise<AttestedProcess | undefined> {
    const startTimeTicks = readStartTime(pid);
    if (startTimeTicks === null) return undefined;
    if (expectedStartTime !== null && startTimeTicks !== expectedStartTime) return undefined;
    const executable = readExecutable(pid);
    // Kernel threads have no executable and no workload identity.
    if (executable === null) return undefined;
    // An exec replaces the program, so the previous subscription's SVIDs no longer apply.
    this.source.forget(pid);
    let spiffeId: string | null;
    try {
      spiffeId = await this.source.attest(pid);
    } catch (error) {
      if (error instanceof SpireUnavailableError) throw error;
      return undefined;
    }
    // The process must still be the one that was attested.
    if (readStartTime(pid) !== startTimeTicks) return undefined;
    return { spiffeId, executable, startTimeTicks };
  }

  forget(pid: number): void {
    this.source.forget(pid);
  }

  close(): void {
    this.source.close();
  }
}
