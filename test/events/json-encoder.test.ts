import { describe, expect, it } from 'vitest';
import { AuditEvent, EventDraft } from '../../src/events/audit-event';
import { EventHub } from '../../src/events/event-hub';
import { jsonLine, JsonLineEncoder } from '../../src/events/json-encoder';
import { toOcsf } from '../../src/events/ocsf';
import { process as processOf, sampleDrafts, WEB } from './fixtures';

/** Strings that JSON.stringify escapes, or that look as if it might. */
const HOSTILE_STRINGS = [
  '',
  'plain ascii',
  'a "quoted" word',
  'back\\slash',
  'tab\tnew\nline\rreturn',
  '\u0000\u0001\u001f\u007f',
  'line separator \u2028 and paragraph separator \u2029',
  'lone high \ud800 surrogate',
  'lone low \udfff surrogate',
  'trailing high \ud83d',
  'pair \ud83d\ude00 emoji',
  'caf\u00e9 \u00fcber \u4e2d\u6587',
  `long ${'x'.repeat(100)} then "quote"`,
  `long ${'y'.repeat(100)} then \u00e9`,
  `long ${'z'.repeat(100)}`,
  '</script>',
];

function hostileDraft(text: string): EventDraft {
  return {
    type: 'exec',
    ktimeNs: '1',
    subject: { spiffeId: `${WEB}/${text}` },
    process: processOf(100, {
      executable: text,
      comm: text.slice(0, 15),
      arguments: [text, '', text],
      containerId: text,
      ancestry: [{ pid: 1, executable: text, comm: text, spiffeId: text }],
    }),
    message: text,
    action: 'none',
    result: 'allowed',
  };
}

const hub = new EventHub('json-node', { runId: 'run-json' });
const EVENTS: AuditEvent[] = [...sampleDrafts(), ...HOSTILE_STRINGS.map(hostileDraft)].map(
  (draft) => hub.publish(draft),
);

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

describe('json encoder', () => {
  it.each(EVENTS.map((event) => [event.seq, event.type, event] as const))(
    'event %i (%s) equals JSON.stringify',
    (_seq, _type, event) => {
      expect(jsonLine(event).toString('utf8')).toBe(`${JSON.stringify(event)}\n`);
    },
  );

  it.each(EVENTS.map((event) => [event.seq, event] as const))(
    'OCSF of event %i equals JSON.stringify',
    (_seq, event) => {
      const ocsf = toOcsf(event);
      expect(jsonLine(ocsf).toString('utf8')).toBe(`${JSON.stringify(ocsf)}\n`);
    },
  );

  it.each(HOSTILE_STRINGS.map((text) => [JSON.stringify(text), text] as const))(
    'string %s equals JSON.stringify',
    (_shown, text) => {
      expect(jsonLine(text).equals(Buffer.from(`${JSON.stringify(text)}\n`))).toBe(true);
      expect(jsonLine({ [text]: text }).equals(Buffer.from(`${JSON.stringify({ [text]: text })}\n`))).toBe(
        true,
      );
    },
  );

  const VALUES: [string, unknown][] = [
    ['null', null],
    ['booleans', [true, false]],
    ['numbers', [0, -0, 1, -1, 9, 10, 99, 100, 2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 53, 1.5, -0.25, 1e21, 1e-7]],
    ['non-finite numbers', [NaN, Infinity, -Infinity]],
    ['left-out values in an object', { a: undefined, b: () => 1, c: Symbol('s'), d: 1 }],
    ['left-out values in an array', [undefined, () => 1, Symbol('s')]],
    ['only left-out values', { a: undefined }],
    ['integer-like keys', { b: 1, 2: 'two', a: 2, 1: 'one' }],
    ['toJSON', { when: new Date(0), custom: { toJSON: (key: string) => `key ${key}` } }],
    ['toJSON returning undefined', { a: 1, gone: { toJSON: () => undefined }, b: 2 }],
    ['class instance', { map: new Map([[1, 2]]), set: new Set([1]) }],
    ['boxed primitives', [Object(1), Object('s'), Object(true)]],
    ['null prototype', Object.assign(Object.create(null), { x: 1 })],
    ['nested arrays', [[], [[]], [1, [2, [3]]], {}]],
    ['sparse array', [1, , 3]], // eslint-disable-line no-sparse-arrays
  ];

  it.each(VALUES)('%s equals JSON.stringify', (_name, value) => {
    expect(jsonLine(value).toString('utf8')).toBe(`${JSON.stringify(value)}\n`);
  });

  it('BigInt throws as JSON.stringify does', () => {
    expect(() => JSON.stringify({ a: 1n })).toThrow(TypeError);
    expect(() => jsonLine({ a: 1n })).toThrow(TypeError);
  });

  it('failed line leaves no bytes behind', () => {
    const encoder = new JsonLineEncoder(64);
    encoder.appendLine({ a: 1 });
    expect(() => encoder.appendLine({ b: 1n })).toThrow(TypeError);
    encoder.appendLine({ c: 2 });
    expect(encoder.take().toString('utf8')).toBe('{"a":1}\n{"c":2}\n');
  });

  it('frozen object reuses its bytes', () => {
    const shared = deepFreeze({ spiffeId: WEB, tags: ['a', 'b'] });
    const first = jsonLine({ seq: 1, shared }).toString('utf8');
    const second = jsonLine({ seq: 2, shared, again: shared }).toString('utf8');
    expect(first).toBe(`${JSON.stringify({ seq: 1, shared })}\n`);
    expect(second).toBe(`${JSON.stringify({ seq: 2, shared, again: shared })}\n`);
  });

  it('object lines with changing tails', () => {
    const subject = deepFreeze({ spiffeId: WEB });
    const process = deepFreeze(processOf(7, { ancestry: [{ pid: 1, executable: '/sbin/init', comm: 'init', spiffeId: '' }] }));
    const mutable = { address: '10.0.0.1', port: 1 };
    const values: Record<string, unknown>[] = [];
    for (let i = 0; i < 40; i++) {
      const value: Record<string, unknown> = { seq: i, time: `t${i}`, node: 'n', type: 'connect', ktimeNs: String(i) };
      value.subject = subject;
      value.process = i % 7 === 3 ? deepFreeze(processOf(8)) : process;
      if (i % 5 !== 4) value.connection = mutable;
      value.action = i % 11 === 10 ? 'block' : 'allow';
      if (i % 13 === 12) value.errno = 1;
      value.gone = undefined;
      value.severity = 'info';
      values.push(value);
    }
    values.push({ seq: 1 }, { seq: 2, time: 't' }, {}, { a: undefined, b: 1, c: 2, d: 3, e: 4, f: subject });
    const encoder = new JsonLineEncoder(64);
    const expected: string[] = [];
    values.forEach((value, i) => {
      // A mutable object in the tail changes between lines and must be encoded again.
      mutable.port = i;
      encoder.appendObjectLine(value, 5);
      expected.push(`${JSON.stringify(value)}\n`);
    });
    expect(encoder.take().toString('utf8')).toBe(expected.join(''));
  });

  it('object lines with repeating head fields', () => {
    const values: Record<string, unknown>[] = [];
    for (let i = 0; i < 400; i++) {
      // time repeats in runs, node and type switch now and then, ktimeNs never repeats
      const value: Record<string, unknown> = {
        seq: i,
        time: `2026-12-04T00:00:00.${String(Math.floor(i / 7)).padStart(3, '0')}Z`,
        node: i % 97 < 90 ? 'node-a' : 'node-"b"',
        type: i % 50 === 49 ? 'exec' : 'connect',
        ktimeNs: String(1000 + i * 13),
      };
      // a missing head field moves the later ones to other positions, where the same value
      // may follow another key, and a first field that is left out drops the next one's comma
      if (i % 31 === 30) {
        delete value.node;
        value.type = 'node-a';
      }
      if (i % 43 === 42) value.time = undefined;
      if (i % 37 === 36) value.seq = undefined;
      value.action = 'allow';
      values.push(value);
    }
    const encoder = new JsonLineEncoder(256);
    for (const value of values) encoder.appendObjectLine(value, 5);
    const lines = encoder.take().toString('utf8').split('\n');
    expect(lines.pop()).toBe('');
    expect(lines).toHaveLength(values.length);
    values.forEach((value, i) => expect(lines[i]).toBe(JSON.stringify(value)));
  });

  it('object lines with frozen tails', () => {
    const shared = deepFreeze({ spiffeId: WEB });
    const encoder = new JsonLineEncoder(64);
    for (let i = 0; i < 3; i++) encoder.appendObjectLine({ seq: i, shared, action: 'allow' }, 1);
    expect(encoder.take().toString('utf8')).toBe(
      [0, 1, 2].map((i) => `${JSON.stringify({ seq: i, shared, action: 'allow' })}\n`).join(''),
    );
  });

  it('full buffer hands complete lines over', () => {
    const encoder = new JsonLineEncoder(64);
    const chunks: Buffer[] = [];
    encoder.onFull = (lines) => chunks.push(Buffer.from(lines));
    const expected: string[] = [];
    for (let i = 0; i < 300; i++) {
      const value = { seq: i, time: 't', node: 'n', type: 'exec', ktimeNs: String(i), text: 'x'.repeat(i % 41) };
      if (i % 2 === 0) encoder.appendObjectLine(value, 5);
      else encoder.appendLine(value);
      expected.push(`${JSON.stringify(value)}\n`);
      // A line that fails after the buffer filled leaves nothing behind.
      if (i % 50 === 49) expect(() => encoder.appendLine({ pad: 'p'.repeat(60), big: 1n })).toThrow(TypeError);
      if (i % 97 === 96) chunks.push(Buffer.from(encoder.take()));
    }
    chunks.push(Buffer.from(encoder.take()));
    expect(chunks.length).toBeGreaterThan(10);
    for (const chunk of chunks) expect(chunk.length === 0 || chunk[chunk.length - 1] === 0x0a).toBe(true);
    expect(Buffer.concat(chunks).toString('utf8')).toBe(expected.join(''));
  });

  it('growth keeps lines not yet taken', () => {
    const encoder = new JsonLineEncoder(16);
    const expected: string[] = [];
    for (let i = 0; i < 200; i++) {
      const value = { i, text: 'x'.repeat(i % 37), nested: [i, { deep: 'y'.repeat(i % 5) }] };
      encoder.appendLine(value);
      expected.push(`${JSON.stringify(value)}\n`);
    }
    expect(encoder.pendingBytes).toBe(Buffer.byteLength(expected.join('')));
    expect(encoder.take().toString('utf8')).toBe(expected.join(''));
    expect(encoder.pendingBytes).toBe(0);
  });

  it('taken bytes stay unchanged by later lines', () => {
    const encoder = new JsonLineEncoder(32);
    encoder.appendLine({ first: 'a'.repeat(10) });
    const taken = encoder.take();
    const copy = Buffer.from(taken);
    for (let i = 0; i < 50; i++) encoder.appendLine({ later: 'b'.repeat(i) });
    expect(taken.equals(copy)).toBe(true);
  });
});
