import { describe, expect, it } from 'vitest';
import { EventDraft } from '../../src/events/audit-event';
import { EventHub, ShapedDraft } from '../../src/events/event-hub';
import { sampleDrafts } from './fixtures';

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

  it('keeps the field order of a shaped draft with a severity', () => {
    const shape: ShapedDraft = { seq: 0, time: '', node: '', type: 'agent', ktimeNs: '0', severity: 'high', message: 'm' };
    const event = new EventHub('hub-node').publish(shape);
    expect(Object.keys(event)).toEqual(['seq', 'time', 'node', 'type', 'ktimeNs', 'severity', 'message', 'runId']);
    expect(event.seq).toBe(1);
    expect(event.node).toBe('hub-node');
  });
});
