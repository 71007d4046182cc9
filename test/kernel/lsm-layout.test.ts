import { readFileSync, statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { KernelAction, recordHeaderLayout } from '../../src/kernel/layout';
import {
  ALL_LSM_LAYOUTS,
  decodeLsmRecord,
  fileDecisionRecordLayout,
  LSM_HEADER_CONSTANTS,
  LSM_SUBJECT_HAS_EXEC_ALLOW,
  LSM_SUBJECT_HAS_FILE_ALLOW,
  LSM_SUBJECT_NO_EXEC_DIRECTORIES,
  LSM_SUBJECT_NO_FILE_DIRECTORIES,
  LSM_SUBJECT_NO_EXEC_INODES,
  LSM_SUBJECT_NO_FILE_INODES,
  LsmKind,
  LsmMatch,
  LsmRecordType,
  pathDecisionLayout,
} from '../../src/kernel/lsm-layout';
import {
  compileLsmRuleSet,
  directoryKeyPath,
  encodeDirectoryKey,
  encodeInodeKey,
  kernelDeviceNumber,
  pathHash,
} from '../../src/kernel/lsm-maps';
import { describeHeaderMirror } from '../helpers/header-mirror';

describeHeaderMirror({
  header: 'bpf/include/sigil_lsm.h',
  layouts: ALL_LSM_LAYOUTS,
  constants: LSM_HEADER_CONSTANTS,
  paddedTo8: true,
});

describe('decision record decoder', () => {
  function fileRecord(pathLength: number, path: string): Buffer {
    const record = Buffer.alloc(fileDecisionRecordLayout.size);
    const decision = fileDecisionRecordLayout.offsetOf('decision');
    const field = (name: string) => decision + pathDecisionLayout.offsetOf(name);
    record.writeUInt32LE(LsmRecordType.FileDecision, recordHeaderLayout.offsetOf('type'));
    record.writeUInt32LE(fileDecisionRecordLayout.size, recordHeaderLayout.offsetOf('size'));
    record.writeUInt32LE(1234, field('tgid'));
    record.writeUInt32LE(7, field('subject_id'));
    record.writeBigUInt64LE(99n, field('ino'));
    record.writeInt32LE(pathLength, field('path_len'));
    record.writeUInt8(KernelAction.Block, field('action'));
    record.writeUInt8(1, field('denied'));
    record.writeUInt8(LsmMatch.Subtree, field('match'));
    record.writeUInt8(1, fileDecisionRecordLayout.offsetOf('write_intent'));
    record.write(path, fileDecisionRecordLayout.offsetOf('path'));
    return record;
  }

  it('decodes a file decision record', () => {
    const decoded = decodeLsmRecord(fileRecord(12, '/etc/shadow'));
    expect(decoded).toMatchObject({
      type: 'file-decision',
      tgid: 1234,
      subjectId: 7,
      ino: 99n,
      pathLength: 12,
      action: KernelAction.Block,
      denied: true,
      match: LsmMatch.Subtree,
      writeIntent: true,
      execOpen: false,
      path: '/etc/shadow',
    });
  });

  it('reads path_len as signed', () => {
    expect(decodeLsmRecord(fileRecord(-36, ''))?.pathLength).toBe(-36);
  });

  it('returns null for other record types', () => {
    const record = fileRecord(1, '/');
    record.writeUInt32LE(3, recordHeaderLayout.offsetOf('type'));
    expect(decodeLsmRecord(record)).toBeNull();
  });

  it('rejects a record of the wrong size', () => {
    const record = fileRecord(1, '/');
    expect(() => decodeLsmRecord(record.subarray(0, 100))).toThrow(RangeError);
  });
});

describe('directory rule keys', () => {
  it('hashes with 64-bit FNV-1a', () => {
    // Published FNV-1a 64 test vectors; seed 0 leaves the offset basis unchanged.
    expect(pathHash('', 0n)).toBe(0xcbf29ce484222325n);
    expect(pathHash('a', 0n)).toBe(0xaf63dc4c8601ec8cn);
    expect(pathHash('foobar', 0n)).toBe(0x85944171f73967e8n);
  });

  it('mixes the seed into the hash', () => {
    expect(pathHash('/usr/', 1n)).not.toBe(pathHash('/usr/', 0n));
  });

  it.each([
    ['/', '/'],
    ['/usr/lib', '/usr/lib/'],
    ['/usr/lib/', '/usr/lib/'],
    ['//usr///lib', '/usr/lib/'],
    ['/usr/lib/../bin', '/usr/bin/'],
  ])('normalizes %s to %s', (path, expected) => {
    expect(directoryKeyPath(path)).toBe(expected);
  });

  it('rejects relative and overlong paths', () => {
    expect(() => directoryKeyPath('usr/lib')).toThrow(/must be absolute/);
    expect(() => directoryKeyPath(`/${'a'.repeat(4100)}`)).toThrow(/longer than/);
  });
});

describe('kernelDeviceNumber', () => {
  it('matches the major:minor of /proc/self/mountinfo', () => {
    const line = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .find((entry) => entry.split(' ')[4] === '/');
    expect(line).toBeDefined();
    const [major, minor] = line!.split(' ')[2].split(':').map(Number);
    expect(kernelDeviceNumber(statSync('/', { bigint: true }).dev)).toBe(major * 2 ** 20 + minor);
  });

  it('decodes the glibc encoding of large numbers', () => {
    // glibc: minor bits 0-7 and 20-31, major bits 8-19 and 32-43.
    const major = 0x123n;
    const minor = 0x45678n;
    const glibc = (minor & 0xffn) | ((major & 0xfffn) << 8n) | ((minor & ~0xffn) << 12n);
    expect(kernelDeviceNumber(glibc)).toBe(Number((major << 20n) | minor));
  });
});

describe('compileLsmRuleSet', () => {
  const seed = 0x1234n;

  it('merges rules on one key by action, then rule index', () => {
    const compiled = compileLsmRuleSet(
      {
        subjects: [],
        inodeRules: [
          { subject: 1, kind: 'file', dev: 5, ino: 9n, action: KernelAction.Allow, ruleIndex: 0 },
          { subject: 1, kind: 'file', dev: 5, ino: 9n, action: KernelAction.Audit, ruleIndex: 4 },
          { subject: 1, kind: 'file', dev: 5, ino: 9n, action: KernelAction.Audit, ruleIndex: 2 },
        ],
        directoryRules: [],
      },
      seed,
    );
    const entry = compiled.inodes.get(encodeInodeKey(1, LsmKind.File, 5, 9n).toString('hex'));
    expect(entry?.access.read).toEqual({ action: KernelAction.Audit, ruleIndex: 2 });
    expect(entry?.access.write).toEqual({ action: KernelAction.Audit, ruleIndex: 2 });
  });

  it('makes a readOnly rule block writes', () => {
    const compiled = compileLsmRuleSet(
      {
        subjects: [],
        inodeRules: [],
        directoryRules: [
          {
            subject: 3,
            kind: 'file',
            path: '/data',
            recursive: true,
            action: KernelAction.Allow,
            readOnly: true,
            ruleIndex: 6,
          },
        ],
      },
      seed,
    );
    const key = encodeDirectoryKey(3, LsmKind.File, pathHash('/data/', seed)).toString('hex');
    const entry = compiled.directories.get(key);
    expect(entry?.subtree.read).toEqual({ action: KernelAction.Allow, ruleIndex: 6 });
    expect(entry?.subtree.write).toEqual({ action: KernelAction.Block, ruleIndex: 6 });
    expect(entry?.direct.read.action).toBe(KernelAction.None);
  });

  it('sets the Allow flags that turn postures on', () => {
    const compiled = compileLsmRuleSet(
      {
        subjects: [{ id: 2, execPosture: KernelAction.Block, filePosture: KernelAction.Audit }],
        inodeRules: [
          { subject: 2, kind: 'exec', dev: 1, ino: 1n, action: KernelAction.Allow, ruleIndex: 0 },
          { subject: 4, kind: 'file', dev: 1, ino: 1n, action: KernelAction.Block, ruleIndex: 1 },
          { subject: 5, kind: 'file', dev: 1, ino: 2n, action: KernelAction.Allow, ruleIndex: 2 },
        ],
        directoryRules: [],
      },
      seed,
    );
    const noDirectories = LSM_SUBJECT_NO_EXEC_DIRECTORIES | LSM_SUBJECT_NO_FILE_DIRECTORIES;
    expect(compiled.subjects.get(2)).toEqual({
      flags: LSM_SUBJECT_HAS_EXEC_ALLOW | noDirectories | LSM_SUBJECT_NO_FILE_INODES,
      execPosture: KernelAction.Block,
      filePosture: KernelAction.Audit,
    });
    expect(compiled.subjects.get(4)?.flags).toBe(noDirectories | LSM_SUBJECT_NO_EXEC_INODES);
    expect(compiled.subjects.get(5)?.flags).toBe(
      LSM_SUBJECT_HAS_FILE_ALLOW | noDirectories | LSM_SUBJECT_NO_EXEC_INODES,
    );
  });

  it('marks the kinds without directory rules', () => {
    const directoryRule = {
      path: '/data',
      recursive: true,
      action: KernelAction.Block,
      ruleIndex: 0,
    };
    const compiled = compileLsmRuleSet(
      {
        subjects: [{ id: 9, execPosture: KernelAction.Block, filePosture: KernelAction.Block }],
        inodeRules: [],
        directoryRules: [
          { ...directoryRule, subject: 1, kind: 'file' },
          { ...directoryRule, subject: 2, kind: 'exec' },
          { ...directoryRule, subject: 3, kind: 'file' },
          { ...directoryRule, subject: 3, kind: 'exec' },
        ],
      },
      seed,
    );
    const noInodes = LSM_SUBJECT_NO_EXEC_INODES | LSM_SUBJECT_NO_FILE_INODES;
    expect(compiled.subjects.get(1)?.flags).toBe(LSM_SUBJECT_NO_EXEC_DIRECTORIES | noInodes);
    expect(compiled.subjects.get(2)?.flags).toBe(LSM_SUBJECT_NO_FILE_DIRECTORIES | noInodes);
    expect(compiled.subjects.get(3)?.flags).toBe(noInodes);
    expect(compiled.subjects.get(9)?.flags).toBe(
      LSM_SUBJECT_NO_EXEC_DIRECTORIES | LSM_SUBJECT_NO_FILE_DIRECTORIES | noInodes,
    );
  });

  it('marks the kinds without exact-file rules', () => {
    const inodeRule = { dev: 1, ino: 1n, action: KernelAction.Block, ruleIndex: 0 };
    const compiled = compileLsmRuleSet(
      {
        subjects: [{ id: 9, execPosture: KernelAction.Block, filePosture: KernelAction.Block }],
        inodeRules: [
          { ...inodeRule, subject: 1, kind: 'file' },
          { ...inodeRule, subject: 2, kind: 'exec' },
          { ...inodeRule, subject: 3, kind: 'file' },
          { ...inodeRule, subject: 3, kind: 'exec', ino: 2n },
        ],
        directoryRules: [],
      },
      seed,
    );
    const noDirectories = LSM_SUBJECT_NO_EXEC_DIRECTORIES | LSM_SUBJECT_NO_FILE_DIRECTORIES;
    expect(compiled.subjects.get(1)?.flags).toBe(noDirectories | LSM_SUBJECT_NO_EXEC_INODES);
    expect(compiled.subjects.get(2)?.flags).toBe(noDirectories | LSM_SUBJECT_NO_FILE_INODES);
    expect(compiled.subjects.get(3)?.flags).toBe(noDirectories);
    expect(compiled.subjects.get(9)?.flags).toBe(
      noDirectories | LSM_SUBJECT_NO_EXEC_INODES | LSM_SUBJECT_NO_FILE_INODES,
    );
  });

  it('sets the Allow flags a subject entry requests', () => {
    const compiled = compileLsmRuleSet(
      {
        subjects: [
          { id: 1, execPosture: KernelAction.Block, filePosture: KernelAction.Block, hasExecAllow: true },
          { id: 3, execPosture: KernelAction.Block, filePosture: KernelAction.Block, hasFileAllow: true },
        ],
        inodeRules: [],
        directoryRules: [],
      },
      seed,
    );
    const noPathRules =
      LSM_SUBJECT_NO_EXEC_DIRECTORIES |
      LSM_SUBJECT_NO_FILE_DIRECTORIES |
      LSM_SUBJECT_NO_EXEC_INODES |
      LSM_SUBJECT_NO_FILE_INODES;
    expect(compiled.subjects.get(1)?.flags).toBe(LSM_SUBJECT_HAS_EXEC_ALLOW | noPathRules);
    expect(compiled.subjects.get(3)?.flags).toBe(LSM_SUBJECT_HAS_FILE_ALLOW | noPathRules);
  });

  it('rejects readOnly on exec rules', () => {
    expect(() =>
      compileLsmRuleSet(
        {
          subjects: [],
          inodeRules: [
            {
              subject: 1,
              kind: 'exec',
              dev: 1,
              ino: 1n,
              action: KernelAction.Allow,
              readOnly: true,
              ruleIndex: 3,
            },
          ],
          directoryRules: [],
        },
        seed,
      ),
    ).toThrow(/readOnly applies to file rules only/);
  });
});
