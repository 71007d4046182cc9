import { hostname } from 'node:os';
import { AuditEvent, EventDraft, EventFilter, matchesFilter } from './audit-event';

/** A consumer of the event stream. deliver returns false when it could not take the event. */
export interface EventSink {
  filter: EventFilter;
  deliver(event: AuditEvent): void;
}

/**
 * Numbers events and fans them out to every sink. Sinks own their queues:
 * the hub never waits for one, so a slow consumer cannot slow enforcement.
 */
export class EventHub {
  private seq = 0;
  private readonly sinks = new Set<EventSink>();
  readonly node: string;

  constructor(node = hostname()) {
    this.node = node;
  }

  publish(draft: EventDraft): AuditEvent {
    const event: AuditEvent = {
      seq: ++this.seq,
      time: new Date().toISOString(),
      node: this.node,
      ...draft,
    };
    for (const sink of this.sinks) {
      if (matchesFilter(event, sink.filter)) sink.deliver(event);
    }
    return event;
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
