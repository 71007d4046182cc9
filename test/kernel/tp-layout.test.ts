import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

// Compiles bpf/include/sigil_tp.h with the host C compiler and reads every
// size, offset and constant back, so the TypeScript mirror cannot drift from it.
const HEADER = 'bpf/include/sigil_tp.h';
let workDir = '';
const facts = {
  sizes: {} as Record<string, bigint>,
  offsets: {} as Record<string, bigint>,
  constants: {} as Record<string, bigint>,
};

function probeProgram(): string {
  const lines: string[] = [];
  const emit = (key: string, expression: string) =>
    lines.push(
      `  printf("\\"%s\\": \\"%llu\\",\\n", "${key}", (unsigned long long)(${expression}));`,
    );
  lines.push('#include <stdio.h>', '#include <stddef.h>', '#include <linux/types.h>');
  lines.push(`#include "${resolve(HEADER)}"`, 'int main(void) {', '  printf("{");');
  for (const layout of ALL_TP_LAYOUTS) {
    emit(`size:${layout.name}`, `sizeof(struct ${layout.name})`);
    for (const field of layout.fields) {
      emit(`offset:${layout.name}.${field.name}`, `offsetof(struct ${layout.name}, ${field.name})`);
    }
  }
  for (const name of Object.keys(TP_HEADER_CONSTANTS)) emit(`constant:${name}`, name);
  lines.push('  printf("\\"end\\": \\"0\\"}\\n");', '  return 0;', '}');
  return lines.join('\n');
}

beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), 'sigil-tp-layout-'));
  writeFileSync(join(workDir, 'probe.c'), probeProgram());
  execFileSync('cc', [
    '-Wall',
    '-Ibpf/include',
    '-o',
    join(workDir, 'probe'),
    join(workDir, 'probe.c'),
  ]);
  const raw = JSON.parse(execFileSync(join(workDir, 'probe'), { encoding: 'utf8' }));
  for (const [key, value] of Object.entries<string>(raw)) {
    const [kind, name] = key.split(':');
    if (kind === 'size') facts.sizes[name] = BigInt(value);
    if (kind === 'offset') facts.offsets[name] = BigInt(value);
    if (kind === 'constant') facts.constants[name] = BigInt(value);
  }
});

afterAll(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe('layout mirror of sigil_tp.h', () => {
  it.each(ALL_TP_LAYOUTS.map((layout) => [layout.name, layout] as const))(
    'struct %s has the header size and offsets',
    (name, layout) => {
      expect(BigInt(layout.size)).toBe(facts.sizes[name]);
      for (const field of layout.fields) {
        expect({ field: field.name, offset: BigInt(field.offset) }).toEqual({
          field: field.name,
          offset: facts.offsets[`${name}.${field.name}`],
        });
      }
    },
  );

  it.each(Object.entries(TP_HEADER_CONSTANTS))('constant %s matches', (name, value) => {
    expect(BigInt(value)).toBe(facts.constants[name]);
  });

  it('covers every struct the header defines', () => {
    const header = readFileSync(HEADER, 'utf8');
    const declared = [...header.matchAll(/^struct ([a-z_]+) \{/gm)].map((match) => match[1]);
    expect(ALL_TP_LAYOUTS.map((layout) => layout.name).sort()).toEqual(declared.sort());
  });

  it('pads every struct to a multiple of 8', () => {
    for (const layout of ALL_TP_LAYOUTS) expect(layout.size % 8).toBe(0);
  });
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
