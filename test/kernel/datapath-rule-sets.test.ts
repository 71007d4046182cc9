// Rule-set generations of Datapath on the running kernel (root, after `make`): whole applies,
// applies of changes through the standby maps, and what the outer maps hold after each step.
// The maps are pinned under a test directory in bpffs, so the test reads them through the pins.
// No program is attached: the connect verdicts are checked by test/policy/differential-kernel.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeSettings, encodeU32 } from '../../src/kernel/codec';
import { Datapath, KernelRuleSet, removePinnedState } from '../../src/kernel/datapath';
import { KernelAction, settingsLayout } from '../../src/kernel/layout';
import { closeFd, mapGetNextKey, mapLookup, objGet } from '../../src/kernel/native';

const PIN_DIR = `/sys/fs/bpf/sigil-datapath-test-${process.pid}`;
const OUTER_MAPS = ['sigil_subjects', 'sigil_peer_rules', 'sigil_cidr_rules'];

const RULE_SET: KernelRuleSet = {
  subjects: [
    { id: 1, hasEgressAllow: true, egressPosture: KernelAction.Block, cidrPrefixLengths: [] },
  ],
  peerRules: [
    {
      subject: 1,
      peer: 2,
      rules: [{ portLo: 80, portHi: 80, protocol: 6, action: KernelAction.Allow, ruleIndex: 0 }],
    },
  ],
  cidrRules: [],
};

const open: Datapath[] = [];

function load(): Datapath {
  const datapath = Datapath.load(undefined, PIN_DIR);
  open.push(datapath);
  return datapath;
}

/** Returns the generations that each outer map publishes, read through the pins. */
function publishedGenerations(): number[][] {
  return OUTER_MAPS.map((name) => {
    const fd = objGet(join(PIN_DIR, 'maps', name));
    const keys: number[] = [];
    for (let key = mapGetNextKey(fd, null, 4); key; key = mapGetNextKey(fd, key, 4)) {
      keys.push(key.readUInt32LE(0));
    }
    closeFd(fd);
    return keys.sort((a, b) => a - b);
  });
}

function settingsGeneration(): number {
  const fd = objGet(join(PIN_DIR, 'maps', 'sigil_settings'));
  const value = mapLookup(fd, encodeU32(0), settingsLayout.size)!;
  closeFd(fd);
  return decodeSettings(value).generation;
}

/** Returns the ids of the inner maps that the outer maps publish under generation. */
function innerMapIds(generation: number): number[] {
  return OUTER_MAPS.map((name) => {
    const fd = objGet(join(PIN_DIR, 'maps', name));
    const value = mapLookup(fd, encodeU32(generation), 4);
    closeFd(fd);
    if (!value) throw new Error(`${name} publishes no inner map under generation ${generation}`);
    return value.readUInt32LE(0);
  });
}

const ADD_SUBJECT = {
  upserts: {
    subjects: [
      { id: 3, hasEgressAllow: false, egressPosture: KernelAction.Audit, cidrPrefixLengths: [] },
    ],
    peerRules: [],
    cidrRules: [],
  },
  removals: { subjects: [], peerRules: [{ subject: 1, peer: 2 }], cidrRules: [] },
};

afterEach(() => {
  for (const datapath of open.splice(0)) datapath.close();
  removePinnedState(PIN_DIR);
});

describe('Datapath rule-set generations', () => {
  it('rejects changes before a whole apply', () => {
    const datapath = load();
    expect(datapath.canApplyChanges).toBe(false);
    expect(() => datapath.applyRuleSetChanges(ADD_SUBJECT)).toThrow(/call applyRuleSet/);
  });

  it('applies changes through the standby maps', () => {
    const datapath = load();
    const first = datapath.applyRuleSet(RULE_SET);
    expect(publishedGenerations()).toEqual([[first], [first], [first]]);
    expect(datapath.canApplyChanges).toBe(true);

    datapath.prepareStandby();
    const standby = [first, first + 1];
    expect(publishedGenerations()).toEqual([standby, standby, standby]);

    const second = datapath.applyRuleSetChanges(ADD_SUBJECT);
    expect(second).toBe(first + 1);
    expect(settingsGeneration()).toBe(second);
    expect(datapath.currentGeneration).toBe(second);

    // The maps of the first generation become the standby of the third.
    datapath.prepareStandby();
    const next = [second, second + 1];
    expect(publishedGenerations()).toEqual([next, next, next]);
  });

  it('writes the first set into prepared maps', () => {
    const datapath = load();
    datapath.prepareStandby();
    expect(publishedGenerations()).toEqual([[1], [1], [1]]);
    expect(datapath.canApplyChanges).toBe(false);
    const prepared = innerMapIds(1);

    const first = datapath.applyRuleSet(RULE_SET);
    expect(first).toBe(1);
    expect(settingsGeneration()).toBe(first);
    expect(innerMapIds(first)).toEqual(prepared);
    expect(datapath.canApplyChanges).toBe(true);
  });

  it('leaves no set after a failed first apply', () => {
    const datapath = load();
    datapath.prepareStandby();
    const failing = {
      beforeSwitch: () => {
        throw new Error('publishing the LSM rules failed');
      },
    };
    expect(() => datapath.applyRuleSet(RULE_SET, 0, failing)).toThrow(
      'apply rule set generation 1: publishing the LSM rules failed',
    );
    expect(settingsGeneration()).toBe(0);
    expect(publishedGenerations()).toEqual([[], [], []]);

    // Without prepared maps the apply creates and publishes its own.
    expect(datapath.applyRuleSet(RULE_SET)).toBe(1);
    expect(publishedGenerations()).toEqual([[1], [1], [1]]);
  });

  it('keeps the set in force when the switch fails', () => {
    const datapath = load();
    const first = datapath.applyRuleSet(RULE_SET);
    datapath.prepareStandby();
    const failing = {
      beforeSwitch: () => {
        throw new Error('publishing the LSM rules failed');
      },
    };
    expect(() => datapath.applyRuleSetChanges(ADD_SUBJECT, 0, failing)).toThrow(
      `apply rule set generation ${first + 1}: publishing the LSM rules failed`,
    );
    expect(settingsGeneration()).toBe(first);
    expect(datapath.currentGeneration).toBe(first);
    // The standby maps may be half written, so the next apply must be whole.
    expect(datapath.canApplyChanges).toBe(false);
    expect(publishedGenerations()).toEqual([[first], [first], [first]]);

    const second = datapath.applyRuleSet(RULE_SET);
    expect(second).toBe(first + 1);
    expect(settingsGeneration()).toBe(second);
  });

  it('removes the standby generation of an earlier agent at load', () => {
    const earlier = load();
    const first = earlier.applyRuleSet(RULE_SET);
    earlier.prepareStandby();
    earlier.close();
    open.splice(open.indexOf(earlier), 1);
    expect(publishedGenerations()[0]).toEqual([first, first + 1]);

    const later = load();
    expect(later.currentGeneration).toBe(first);
    expect(publishedGenerations()).toEqual([[first], [first], [first]]);
    expect(later.canApplyChanges).toBe(false);
    expect(later.applyRuleSet(RULE_SET)).toBe(first + 1);
  });
});
