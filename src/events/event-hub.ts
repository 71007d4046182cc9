import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import {
  AuditEvent,
  defaultSeverity,
  EventDraft,
  EventFilter,
  matchesFilter,
  MAX_ANCESTRY,
  MAX_ARGUMENT_BYTES,
  MAX_ARGUMENTS,
  Process,
} from './audit-event';
import { ReplayBuffer } from './replay-buffer';

/** Events the hub keeps for Watch requests that resume by sequence number. */
export const DEFAULT_REPLAY_CAPACITY = 100_000;

/**
 * A draft that the hub fills in place: its first fields are seq 0, time ''
 * and node '', which the hub sets, so the event keeps the field order of a
 * copied draft. Publish it once; the hub changes it.
 */
export type ShapedDraft = EventDraft & Pick<AuditEvent, 'seq' | 'time' | 'node'>;

/** A consumer of the event stream. */
export interface EventSink {
  filter: EventFilter;
  deliver(event: AuditEvent): void;
}

/** A consumer that reads from the replay buffer and must account for each event before it goes. */
export interface ReplayReader {
  /** Called with the oldest retained sequence number just before the buffer drops that event. */
  evicting(seq: number): void;
}

export interface EventHubOptions {
  /** Events retained for resume; 0 turns replay off. */
  replayCapacity?: number;
  /** Identifier of this agent run; a random UUID by default. */
  runId?: string;
}

/**
 * Numbers events, keeps the most recent ones for replay, and fans them out
 * to every sink whose filter they pass. Sinks own their queues, so the hub
 * never waits for a consumer to read. deliver() runs inside publish(), so
 * a sink must be cheap and must not block.
 */
export class EventHub {
  private seq = 0;
  private readonly sinks = new Set<EventSink>();
  private readonly readers = new Set<ReplayReader>();
  private timeMs = -1;
  private timeText = '';
  readonly node: string;
  readonly runId: string;
  readonly replay: ReplayBuffer;

  constructor(node = hostname(), options: EventHubOptions = {}) {
    this.node = node;
    this.runId = options.runId ?? randomUUID();
    this.replay = new ReplayBuffer(options.replayCapacity ?? DEFAULT_REPLAY_CAPACITY);
  }

  /**
   * Numbers a draft and publishes it. A draft that starts with the
   * placeholders of a ShapedDraft becomes the event itself; any other draft
   * is copied. Both give the same fields in the same order.
   */
  publish(draft: EventDraft): AuditEvent {
    let event: AuditEvent;
    const shaped = draft as Partial<ShapedDraft>;
    if (shaped.seq === 0 && shaped.node === '') {
      // Filled in place: copying a draft with a spread cost about 6% of the agent's CPU at
      // 250,000 events/s (bench/events-kernel.ts). severity and runId keep their order, after
      // the draft's fields, unless the draft sets severity.
      event = draft as AuditEvent;
      event.seq = ++this.seq;
      event.time = this.isoTime();
      event.node = this.node;
      event.severity = draft.severity ?? defaultSeverity(draft);
      event.runId = this.runId;
    } else {
      event = {
        seq: ++this.seq,
        time: this.isoTime(),
        node: this.node,
        ...draft,
        severity: draft.severity ?? defaultSeverity(draft),
        runId: this.runId,
      };
    }
    if (event.process) event.process = boundProcess(event.process);
    const replay = this.replay;
    if (this.readers.size > 0 && replay.size === replay.capacity && replay.capacity > 0) {
      const oldest = replay.oldestSeq as number;
      for (const reader of this.readers) reader.evicting(oldest);
    }
    // Into the buffer before the sinks, so a sink catching up from the buffer finds it there.
    replay.push(event);
    for (const sink of this.sinks) {
      if (matchesFilter(event, sink.filter)) sink.deliver(event);
    }
    return event;
  }

  /** Returns the current time in RFC 3339 with milliseconds, formatted once per millisecond. */
  private isoTime(): string {
    const now = Date.now();
    if (now !== this.timeMs) {
      this.timeMs = now;
      this.timeText = new Date(now).toISOString();
    }
    return this.timeText;
  }

  /** Adds a replay reader, called for each event before the replay buffer drops it; returns its remover. */
  addReplayReader(reader: ReplayReader): () => void {
    this.readers.add(reader);
    return () => this.readers.delete(reader);
  }

  /** Adds a sink; returns the function that removes it. */
  subscribe(sink: EventSink): () => void {
    this.sinks.add(sink);
    return () => this.sinks.delete(sink);
  }

  get lastSeq(): number {
    return this.seq;
  }
}

/**
 * Frozen processes found within the limits, which cannot change afterwards.
 * The event builder shares one frozen process across a process's events, so
 * its arguments are measured once, not for every event.
 */
const boundedProcesses = new WeakSet<Process>();

/** Truncates arguments and ancestry to the limits the schema documents. */
function boundProcess(process: Process): Process {
  if (boundedProcesses.has(process)) return process;
  const args = process.arguments;
  const ancestry = process.ancestry;
  const argsTooLong =
    args !== undefined &&
    (args.length > MAX_ARGUMENTS || args.some((arg) => Buffer.byteLength(arg) > MAX_ARGUMENT_BYTES));
  const ancestryTooLong = ancestry !== undefined && ancestry.length > MAX_ANCESTRY;
  if (!argsTooLong && !ancestryTooLong) {
    // Frozen all the way down, as the event builder freezes its shared processes.
    if (
      Object.isFrozen(process) &&
      (args === undefined || Object.isFrozen(args)) &&
      (ancestry === undefined || Object.isFrozen(ancestry))
    ) {
      boundedProcesses.add(process);
    }
    return process;
  }

  const bounded = { ...process };
  if (args !== undefined && argsTooLong) bounded.arguments = args.slice(0, MAX_ARGUMENTS).map(truncateArgument);
  if (ancestry !== undefined && ancestryTooLong) bounded.ancestry = ancestry.slice(0, MAX_ANCESTRY);
  return bounded;
}

function truncateArgument(arg: string): string {
  const bytes = Buffer.from(arg);
  if (bytes.length <= MAX_ARGUMENT_BYTES) return arg;
  // A cut inside a multi-byte character decodes to a trailing U+FFFD, which would
  // add bytes: drop it with the partial character.
  return bytes.subarray(0, MAX_ARGUMENT_BYTES).toString('utf8').replace(/\uFFFD$/, '');
}
