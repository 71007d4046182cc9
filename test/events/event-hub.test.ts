import { describe, expect, it } from 'vitest';
import { EventDraft, MAX_ARGUMENT_BYTES, MAX_ARGUMENTS, Process } from '../../src/events/audit-event';
import { EventHub, ShapedDraft } from '../../src/events/event-hub';
import { process, sampleDrafts } from './fixtures';

describe('event hub', () => {
  it.each(sampleDrafts().map((draft, i) => [i, draft.type, draft] as const))(
    'shaped draft %i (%s) publishes as a copied draft does',
    (_i, _type, draft) => {
      const copied = new EventHub('hub-node', { runId: 'run-1' }).publish(structuredClone(draft));
      const shape: ShapedDraft = { seq: 0, time: '', node: '', ...structuredClone(draft) };
      const inPlace = new EventHub('hub-node', { runId: 'run-1' }).publish(shape);
      expect(inPlace).toBe(shape);
      expect(JSON.stringify({ ...inPlace, time: '' })).toBe(JSON.stringify({ ...copied, time: '' }));
    },
  );

  it('copies a draft without the placeholders', () => {
    const draft: EventDraft = { type: 'agent', ktimeNs: '0', message: 'm' };
    const event = new EventHub('hub-node').publish(draft);
    expect(event).not.toBe(draft);
    expect(Object.keys(event)).toEqual(['seq', 'time', 'node', 'type', 'ktimeNs', 'message', 'severity', 'runId']);
  });

  it('shares a frozen process within the limits', () => {
    const hub = new EventHub('hub-node');
    const shared: Process = Object.freeze({ ...process(7), arguments: Object.freeze(['curl', 'x']) as string[] });
    const first = hub.publish({ type: 'exec', ktimeNs: '1', process: shared });
    const second = hub.publish({ type: 'exec', ktimeNs: '2', process: shared });
    expect(first.process).toBe(shared);
    expect(second.process).toBe(shared);
  });

  it('truncates a frozen process past the limits on every event', () => {
    const hub = new EventHub('hub-node');
    const args = Array.from({ length: MAX_ARGUMENTS + 3 }, (_, i) => (i === 0 ? 'a'.repeat(MAX_ARGUMENT_BYTES + 9) : 'b'));
    const shared: Process = Object.freeze({ ...process(8), arguments: Object.freeze(args) as string[] });
    for (const ktimeNs of ['1', '2']) {
      const event = hub.publish({ type: 'exec', ktimeNs, process: shared });
      expect(event.process).not.toBe(shared);
      expect(event.process?.arguments).toHaveLength(MAX_ARGUMENTS);
      expect(event.process?.arguments?.[0]).toHaveLength(MAX_ARGUMENT_BYTES);
    }
  });

  it('keeps the field order of a shaped draft with a severity', () => {
    const shape: ShapedDraft = { seq: 0, time: '', node: '', type: 'agent', ktimeNs: '0', severity: 'high', message: 'm' };
    const event = new EventHub('hub-node').publish(shape);
    expect(Object.keys(event)).toEqual(['seq', 'time', 'node', 'type', 'ktimeNs', 'severity', 'message', 'runId']);
    expect(event.seq).toBe(1);
    expect(event.node).toBe('hub-node');
  });
});
