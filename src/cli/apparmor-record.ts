import { InvalidArgumentError } from 'commander';
import { writeFileSync } from 'node:fs';
import { generateProfiles } from '../apparmor/generate';
import { BehaviourRecording, recordedPolicyName, recordedPolicyYaml } from '../apparmor/recording';
import { AuditEvent } from '../events/audit-event';
import { watchEvents } from '../events/grpc-client';
import { loadRegistrationFile } from '../identity/registration';
import { parseSpiffeId } from '../identity/spiffe-id';
import { parsePolicySet } from '../policy/loader';
import { ConfigError, formatIssue } from '../util/config-error';
import { CommandOutput } from './policy-commands';

/** Options of `sigil apparmor record`, as commander parses them. */
export interface RecordOptions {
  subject: string;
  duration: number;
  format: 'profile' | 'policy';
  socket: string;
  registration?: string;
  name?: string;
  out?: string;
}

export function parseSubject(value: string): string {
  try {
    return parseSpiffeId(value).toString();
  } catch (error) {
    throw new InvalidArgumentError(
      `${(error as Error).message}; expected a SPIFFE ID such as spiffe://example.org/web`,
    );
  }
}

const DURATION_UNITS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600 };

/** Parses a duration such as `90`, `90s`, `5m` or `1h` into seconds. */
export function parseDuration(value: string): number {
  const match = /^(\d+(?:\.\d+)?)([smh]?)$/.exec(value.trim());
  const seconds = match ? Number(match[1]) * DURATION_UNITS[match[2]] : NaN;
  if (!Number.isFinite(seconds) || seconds <= 0) {
    throw new InvalidArgumentError('expected a duration such as 30, 90s, 5m or 1h');
  }
  return seconds;
}

/**
 * Records the subject's events for the duration, then writes the recorded policy or its
 * profile. Returns 0, or 1 when the agent cannot be reached or the output is invalid.
 */
export async function runAppArmorRecord(
  options: RecordOptions,
  output: CommandOutput,
): Promise<number> {
  const recording = new BehaviourRecording(options.subject);
  const failure = await recordEvents(
    options,
    (event) => recording.add(event),
    () => output.err(`recording ${options.subject} for ${options.duration} s\n`),
  );
  if (failure !== null) {
    output.err(`sigil apparmor record: ${options.socket}: ${failure}\n`);
    return 1;
  }
  const files = recording.fileObjects();
  output.err(
    `recorded ${recording.executables.size} executables, ${recording.connectDestinations().length} ` +
      `connect destinations and ${files.readPaths.length + files.writePaths.length + files.writeDirectories.length} ` +
      `file objects of ${options.subject} in ${options.duration} s` +
      (recording.skipped > 0
        ? ` (${recording.skipped} denied events or events without a usable path or protocol skipped)`
        : '') +
      '\n',
  );
  const name = options.name ?? recordedPolicyName(options.subject);
  const policyText = recordedPolicyYaml(recording, name);
  let text = policyText;
  try {
    // The policy goes through the loader, so the output is always a valid policy.
    const set = parsePolicySet(policyText, '<recording>');
    if (options.format === 'profile') {
      const registration =
        options.registration === undefined ? null : loadRegistrationFile(options.registration);
      const generation = generateProfiles(set, registration);
      for (const warning of generation.warnings) output.err(`${formatIssue(warning)}\n`);
      text = generation.profiles.map((profile) => profile.text).join('\n');
    }
  } catch (error) {
    const detail =
      error instanceof ConfigError
        ? error.issues.map(formatIssue).join('\n')
        : (error as Error).message;
    output.err(`sigil apparmor record: the recording cannot be written: ${detail}\n`);
    return 1;
  }
  if (options.out === undefined) output.out(text);
  else writeFileSync(options.out, text);
  return 0;
}

/**
 * Streams the subject's exec, connect and file events for the duration, which starts when the
 * stream is live (`onLive`). Returns an error text, or null when the duration ended.
 */
function recordEvents(
  options: RecordOptions,
  onEvent: (event: AuditEvent) => void,
  onLive: () => void,
): Promise<string | null> {
  return new Promise((resolve) => {
    const stream = watchEvents(
      {
        socketPath: options.socket,
        subjectId: options.subject,
        types: ['exec', 'connect', 'file'],
        batched: true,
      },
      onEvent,
    );
    let timer: NodeJS.Timeout | null = null;
    let elapsed = false;
    stream.once('metadata', () => {
      onLive();
      timer = setTimeout(() => {
        elapsed = true;
        stream.cancel();
      }, options.duration * 1000);
    });
    const finish = (error: string | null) => {
      if (timer) clearTimeout(timer);
      resolve(
        elapsed ? null : (error ?? 'the agent closed the event stream before the duration ended'),
      );
    };
    // Cancelling at the end of the duration also emits an error (status CANCELLED).
    stream.on('error', (error: Error) => finish(error.message));
    stream.on('end', () => finish(null));
  });
}
