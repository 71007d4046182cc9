import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventFilter, matchesFilter } from '../../src/events/audit-event';
import { EventHub } from '../../src/events/event-hub';
import { WatchOptions } from '../../src/events/grpc-client';
import { API, BATCH, Collector, sampleDrafts, seqs, ServerFixture, WEB } from './fixtures';

/*
 * The sample events, by sequence number:
 *  1 exec    WEB   none  allowed info       7 file    BATCH audit allowed low
 *  2 connect WEB   allow allowed info       8 policy  BATCH block denied  high
 *  3 connect BATCH block denied  high       9 exit    BATCH none  allowed info
 *  4 accept  API   audit allowed low       10 agent   -     -     -       info
 *  5 bind    API   none  allowed info      11 agent   -     -     -       medium (rejected)
 *  6 file    WEB   block denied  critical  12 loss    -     -     -       high (kernel-ringbuf)
 */
const PROD = 'spiffe://example.org/ns/prod';
const DEV = 'spiffe://example.org/ns/dev';

const CASES: [string, EventFilter, number[]][] = [
  ['empty filter', {}, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]],
  ['one type', { types: ['connect'] }, [2, 3]],
  ['two types', { types: ['file', 'policy'] }, [6, 7, 8]],
  ['agent and loss types', { types: ['agent', 'loss'] }, [10, 11, 12]],
  ['subject prefix', { subjectPrefix: PROD }, [1, 2, 4, 5, 6]],
  ['subject prefix with a trailing slash', { subjectPrefix: `${PROD}/` }, [1, 2, 4, 5, 6]],
  ['subject prefix inside a path segment', { subjectPrefix: 'spiffe://example.org/ns/pro' }, []],
  ['subject prefix equal to an id', { subjectPrefix: API }, [4, 5]],
  ['exact subject id', { subjectId: WEB }, [1, 2, 6]],
  ['exact subject id that is only a prefix', { subjectId: PROD }, []],
  ['action block', { actions: ['block'] }, [3, 6, 8]],
  ['actions allow and audit', { actions: ['allow', 'audit'] }, [2, 4, 7]],
  ['action none', { actions: ['none'] }, [1, 5, 9]],
  ['result denied', { results: ['denied'] }, [3, 6, 8]],
  ['result allowed', { results: ['allowed'] }, [1, 2, 4, 5, 7, 9]],
  ['minimum severity info', { minSeverity: 'info' }, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]],
  ['minimum severity low', { minSeverity: 'low' }, [3, 4, 6, 7, 8, 11, 12]],
  ['minimum severity medium', { minSeverity: 'medium' }, [3, 6, 8, 11, 12]],
  ['minimum severity high', { minSeverity: 'high' }, [3, 6, 8, 12]],
  ['minimum severity critical', { minSeverity: 'critical' }, [6]],
  [
    'types, result, severity and prefix together',
    { types: ['connect', 'file'], results: ['denied'], minSeverity: 'high', subjectPrefix: DEV },
    [3],
  ],
  ['prefix and action together', { subjectPrefix: PROD, actions: ['block'] }, [6]],
  ['exact id and type together', { subjectId: BATCH, types: ['exit'] }, [9]],
];

describe('matchesFilter', () => {
  const hub = new EventHub('filter-node');
  const events = sampleDrafts().map((draft) => hub.publish(draft));

  it.each(CASES)('%s', (_, filter, expected) => {
    expect(events.filter((event) => matchesFilter(event, filter)).map((event) => event.seq)).toEqual(expected);
  });
});

describe.each([
  ['Watch', false],
  ['WatchBatches', true],
])('%s filters', (_, batched) => {
  let fixture: ServerFixture;

  beforeAll(async () => {
    fixture = await new ServerFixture(new EventHub('filter-node')).start();
    for (const draft of sampleDrafts()) fixture.hub.publish(draft);
  });

  afterAll(() => fixture.close());

  it.each(CASES)('%s', async (_name, filter, expected) => {
    const options: WatchOptions = { socketPath: fixture.socket, sinceSeq: 1, batched, ...filter };
    const collector = await new Collector(options).live();
    await collector.waitForCount(expected.length);
    // Past the expected events, give a wrong extra one time to arrive.
    await new Promise((resolve) => setTimeout(resolve, 100));
    collector.cancel();
    expect(seqs(collector.events)).toEqual(expected);
    expect(collector.events.every((event) => event.seq > 0)).toBe(true);
  });

  it.each([
    ['an unknown type', { types: ['fork'] }, 'fork'],
    ['an unknown action', { actions: ['deny'] }, 'deny'],
    ['an unknown result', { results: ['blocked'] }, 'blocked'],
    ['an unknown severity', { minSeverity: 'severe' }, 'severe'],
    ['a subject prefix without spiffe://', { subjectPrefix: 'example.org/ns' }, 'example.org/ns'],
    ['a subject id without spiffe://', { subjectId: 'web' }, 'web'],
  ])('rejects %s with INVALID_ARGUMENT', async (_name, filter, value) => {
    const collector = new Collector({ socketPath: fixture.socket, batched, ...(filter as Partial<WatchOptions>) });
    const error = await collector.waitForError();
    expect(error.code).toBe(3);
    expect(error.message).toContain(value);
  });
});
