import { describe, expect, it } from 'vitest';
import { KernelAction, recordHeaderLayout } from '../../src/kernel/layout';
import { LsmKind, LsmMatch, pathDecisionLayout } from '../../src/kernel/lsm-layout';
import { encodeInodeKey, LSM_PROGRAMS } from '../../src/kernel/lsm-maps';
import {
  ALL_TP_LAYOUTS,
  decodeTpRecord,
  TP_HEADER_CONSTANTS,
  tpDecisionRecordLayout,
  TpRecordType,
  TpSyscall,
} from '../../src/kernel/tp-layout';
import { compileTpRuleSet, TP_PROGRAMS } from '../../src/kernel/tp-maps';
import { BpfObject } from '../../src/kernel/native';
import { describeHeaderMirror } from '../helpers/header-mirror';

describeHeaderMirror({
  header: 'bpf/include/sigil_tp.h',
  layouts: ALL_TP_LAYOUTS,
  constants: TP_HEADER_CONSTANTS,
  paddedTo8: true,
});

describe('the linked tracepoint-kill object', () => {
  it('defines every program TP_PROGRAMS attaches', () => {
    const object = new BpfObject('bpf/.output/sigil-tp.bpf.o');
    try {
      expect(object.programNames().sort()).toEqual(
        TP_PROGRAMS.map(({ program }) => program).sort(),
      );
    } finally {
      object.close();
    }
  });

  it('shares no program name with the LSM object', () => {
    const names = new Set<string>(LSM_PROGRAMS);
    expect(TP_PROGRAMS.filter(({ program }) => names.has(program))).toEqual([]);
  });
});

describe('decodeTpRecord', () => {
  function record(type: TpRecordType): Buffer {
    const out = Buffer.alloc(tpDecisionRecordLayout.size);
    const decision = tpDecisionRecordLayout.offsetOf('decision');
    const field = (name: string) => decision + pathDecisionLayout.offsetOf(name);
    out.writeUInt32LE(type, recordHeaderLayout.offsetOf('type'));
    out.writeUInt32LE(tpDecisionRecordLayout.size, recordHeaderLayout.offsetOf('size'));
    out.writeUInt32LE(4321, field('tgid'));
    out.writeUInt32LE(3, field('subject_id'));
    out.writeBigUInt64LE(77n, field('ino'));
    out.writeInt32LE(-14, field('path_len'));
    out.writeUInt8(KernelAction.Block, field('action'));
    out.writeUInt8(1, field('denied'));
    out.writeUInt8(LsmMatch.Subtree, field('match'));
    out.writeInt32LE(-3, tpDecisionRecordLayout.offsetOf('kill_result'));
    out.writeInt32LE(5, tpDecisionRecordLayout.offsetOf('fd'));
    out.writeUInt32LE(TpSyscall.Openat2, tpDecisionRecordLayout.offsetOf('syscall'));
    out.writeUInt8(1, tpDecisionRecordLayout.offsetOf('write_intent'));
    out.writeUInt8(1, tpDecisionRecordLayout.offsetOf('walk_complete'));
    out.write('./data.txt', tpDecisionRecordLayout.offsetOf('path'));
    return out;
  }

  it('decodes a file decision record', () => {
    expect(decodeTpRecord(record(TpRecordType.FileDecision))).toMatchObject({
      type: 'tp-file-decision',
      tgid: 4321,
      subjectId: 3,
      ino: 77n,
      pathLength: -14,
      action: KernelAction.Block,
      denied: true,
      match: LsmMatch.Subtree,
      killResult: -3,
      fd: 5,
      syscall: TpSyscall.Openat2,
      writeIntent: true,
      walkComplete: true,
      path: './data.txt',
    });
  });

  it('decodes an exec decision record', () => {
    expect(decodeTpRecord(record(TpRecordType.ExecDecision))?.type).toBe('tp-exec-decision');
  });

  it('returns null for other record types', () => {
    expect(decodeTpRecord(record(17 as TpRecordType))).toBeNull();
  });

  it('rejects a record of the wrong size', () => {
    expect(() => decodeTpRecord(record(TpRecordType.FileDecision).subarray(0, 100))).toThrow(
      RangeError,
    );
  });
});

describe('compileTpRuleSet', () => {
  it('keys directory rules by inode and splits recursive from direct', () => {
    const compiled = compileTpRuleSet({
      subjects: [],
      inodeRules: [],
      directoryRules: [
        {
          subject: 2,
          kind: 'file',
          dev: 8,
          ino: 100n,
          recursive: true,
          action: KernelAction.Allow,
          readOnly: true,
          ruleIndex: 4,
        },
        {
          subject: 2,
          kind: 'file',
          dev: 8,
          ino: 100n,
          recursive: false,
          action: KernelAction.Block,
          ruleIndex: 5,
        },
      ],
    });
    const entry = compiled.directories.get(
      encodeInodeKey(2, LsmKind.File, 8, 100n).toString('hex'),
    );
    expect(entry?.subtree.read).toEqual({ action: KernelAction.Allow, ruleIndex: 4 });
    expect(entry?.subtree.write).toEqual({ action: KernelAction.Block, ruleIndex: 4 });
    expect(entry?.direct.read).toEqual({ action: KernelAction.Block, ruleIndex: 5 });
  });

  it('turns the posture on for directory Allow rules', () => {
    const compiled = compileTpRuleSet({
      subjects: [{ id: 6, execPosture: KernelAction.Block, filePosture: KernelAction.Audit }],
      inodeRules: [],
      directoryRules: [
        {
          subject: 6,
          kind: 'exec',
          dev: 1,
          ino: 2n,
          recursive: true,
          action: KernelAction.Allow,
          ruleIndex: 0,
        },
      ],
    });
    expect(compiled.subjects.get(6)).toEqual({
      flags: 1,
      execPosture: KernelAction.Block,
      filePosture: KernelAction.Audit,
    });
  });

  it('rejects readOnly on exec directory rules', () => {
    expect(() =>
      compileTpRuleSet({
        subjects: [],
        inodeRules: [],
        directoryRules: [
          {
            subject: 1,
            kind: 'exec',
            dev: 1,
            ino: 2n,
            recursive: false,
            action: KernelAction.Allow,
            readOnly: true,
            ruleIndex: 9,
          },
        ],
      }),
    ).toThrow(/readOnly applies to file rules only/);
  });
});
