import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeU32 } from '../../src/kernel/codec';
import { closeFd, MapFlag, MapType, mapCreate, mapLookup } from '../../src/kernel/native';
import { InnerMap, publishGeneration, retireGeneration } from '../../src/kernel/path-rule-maps';

// Runs as root against real HASH_OF_MAPS maps, the kind the LSM and
// tracepoint-kill objects publish their rule generations in.
const KEY_SIZE = 8;
const VALUE_SIZE = 4;
const outers: number[] = [];
const templates: number[] = [];

function innerOptions(name: string) {
  return {
    type: MapType.HASH,
    name,
    keySize: KEY_SIZE,
    valueSize: VALUE_SIZE,
    maxEntries: 4,
    flags: MapFlag.NO_PREALLOC,
  };
}

function entry(n: number): readonly [Buffer, Buffer] {
  const key = Buffer.alloc(KEY_SIZE);
  key.writeUInt32LE(n);
  return [key, encodeU32(n * 10)];
}

function innerMap(outer: number, name: string, entries = [entry(1), entry(2)]): InnerMap {
  return { outer, name, keySize: KEY_SIZE, valueSize: VALUE_SIZE, maxEntries: 4, entries };
}

/** Returns whether the outer map contains an inner map under generation. */
function published(outer: number, generation: number): boolean {
  return mapLookup(outer, encodeU32(generation), 4) !== null;
}

beforeAll(() => {
  for (let i = 0; i < 3; i++) {
    const template = mapCreate(innerOptions(`test_tmpl${i}`));
    templates.push(template);
    outers.push(
      mapCreate({
        type: MapType.HASH_OF_MAPS,
        name: `test_outer${i}`,
        keySize: 4,
        valueSize: 4,
        maxEntries: 8,
        innerMapFd: template,
      }),
    );
  }
});

afterAll(() => {
  for (const fd of [...outers, ...templates]) closeFd(fd);
});

describe('publishGeneration', () => {
  it('publishes every inner map under the generation', () => {
    publishGeneration(
      'test',
      3,
      outers.map((outer, i) => innerMap(outer, `test_inner${i}`)),
    );
    for (const outer of outers) expect(published(outer, 3)).toBe(true);
  });

  it('retires the generation from every outer map', () => {
    publishGeneration(
      'test',
      4,
      outers.map((outer, i) => innerMap(outer, `test_inner${i}`)),
    );
    retireGeneration(outers, 4);
    for (const outer of outers) expect(published(outer, 4)).toBe(false);
  });

  it('names the rule set and generation when filling fails', () => {
    // Five entries do not fit an inner map of four.
    const tooMany = [1, 2, 3, 4, 5].map(entry);
    const maps = [
      innerMap(outers[0], 'test_inner0'),
      innerMap(outers[1], 'test_inner1', tooMany),
      innerMap(outers[2], 'test_inner2'),
    ];
    expect(() => publishGeneration('test', 5, maps)).toThrow(
      /^publish test rule set generation 5: /,
    );
    for (const outer of outers) expect(published(outer, 5)).toBe(false);
  });

  it('reports an encoding error as a publish error', () => {
    function* failing(): Generator<readonly [Buffer, Buffer]> {
      yield entry(1);
      throw new RangeError('invalid posture 9');
    }
    const maps = outers.map((outer, i) =>
      innerMap(outer, `test_inner${i}`, i === 2 ? failing() : undefined),
    );
    expect(() => publishGeneration('test', 6, maps)).toThrow(
      'publish test rule set generation 6: invalid posture 9',
    );
    for (const outer of outers) expect(published(outer, 6)).toBe(false);
  });

  it('rolls back when a later insert fails', () => {
    // The third inner map has another key size than its outer map's template, so inserting it fails.
    const maps = [
      innerMap(outers[0], 'test_inner0'),
      innerMap(outers[1], 'test_inner1'),
      { ...innerMap(outers[2], 'test_inner2', []), keySize: KEY_SIZE + 8 },
    ];
    expect(() => publishGeneration('test', 7, maps)).toThrow(
      /^publish test rule set generation 7: /,
    );
    for (const outer of outers) expect(published(outer, 7)).toBe(false);
  });
});
