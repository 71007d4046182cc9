/**
 * Exec and file rule maps that the BPF LSM object and the tracepoint-kill
 * object share. This module contains the rule types and the encoders of the
 * keys and values of bpf/include/sigil_lsm.h. It also contains the compiler
 * that merges rules into one entry per key, and the publisher that writes a
 * generation into fresh inner maps.
 *
 * The two objects differ in how a directory rule is keyed (a path hash for
 * BPF LSM, the directory's inode for tracepoint-kill), in their map names and
 * in their limits. lsm-maps.ts and tp-maps.ts pass those in.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { encodeU32 } from './codec';
import { KernelAction, SIGIL_MAX_SUBJECTS } from './layout';
import {
  LSM_SUBJECT_HAS_EXEC_ALLOW,
  LSM_SUBJECT_HAS_FILE_ALLOW,
  LsmKind,
  lsmAccessLayout,
  lsmDirectoryRulesLayout,
  lsmInodeKeyLayout,
  lsmSubjectLayout,
  lsmVerdictLayout,
} from './lsm-layout';
import { BpfObject, closeFd, MapFlag, MapType, mapCreate, mapDelete, mapUpdate } from './native';

// --- loading -----------------------------------------------------------------

/** Names in errors of an object that reuses the main object's pinned maps. */
export interface PinnedObjectNames {
  /** Names the object file, such as 'BPF LSM object'. */
  file: string;
  /** Names the object in the load order, such as 'LSM object'. */
  object: string;
}

/**
 * Opens and loads the object at path with every map pinned in pinDirectory.
 * The maps of sharedMaps must be pinned there already, because libbpf would
 * otherwise create and pin separate ones. The object's own maps are reused
 * when an earlier agent pinned them, and created and pinned otherwise.
 * Throws when the file or a shared pin is missing, or when a pinned map does
 * not match the object's declaration. Nothing is attached.
 */
export function openOnPinnedMaps(
  path: string,
  pinDirectory: string,
  sharedMaps: readonly string[],
  names: PinnedObjectNames,
): BpfObject {
  if (!existsSync(path)) throw new Error(`${names.file} ${path} not found: run \`make\``);
  const missing = sharedMaps.filter((name) => !existsSync(join(pinDirectory, name)));
  if (missing.length > 0) {
    throw new Error(
      `pinned maps of the main BPF object not found in ${pinDirectory}: ${missing.join(', ')}; ` +
        `load the main object with pinning before the ${names.object}`,
    );
  }
  const object = new BpfObject(path);
  try {
    // Maps libbpf makes for global data (.rodata and the like) are not shared state.
    for (const name of object.mapNames().filter((n) => !n.includes('.'))) {
      object.setMapPinPath(name, join(pinDirectory, name));
    }
    object.load();
  } catch (error) {
    object.close();
    throw error;
  }
  return object;
}

// --- rule sets ---------------------------------------------------------------

export type LsmRuleKind = 'exec' | 'file';

/** Exec and file postures of one subject. */
export interface LsmSubjectPostures {
  id: number;
  /** Applies to an exec that no rule matched when the subject has exec Allow rules. */
  execPosture: KernelAction;
  /** Applies to an open that no rule matched when the subject has file Allow rules. */
  filePosture: KernelAction;
  /**
   * Marks the subject as having exec Allow rules even when none of them produced a map entry
   * (every path missing or a glob), so that its exec posture still applies as its policies state.
   */
  hasExecAllow?: boolean;
  /** Marks the subject as having file Allow rules, as hasExecAllow does for exec. */
  hasFileAllow?: boolean;
}

/** Fields common to exact-file and directory rules. */
export interface PathRuleBase {
  /** Identity id of the subject; 0 is the processes without an identity. */
  subject: number;
  kind: LsmRuleKind;
  action: KernelAction.Allow | KernelAction.Audit | KernelAction.Block;
  /** File rules only: the action applies to opens for reading, and an open with write intent is blocked. */
  readOnly?: boolean;
  /** Index into the generation's rule table, reported in decision records. */
  ruleIndex: number;
}

/** A rule on one file, by the inode that resolveInode returns for its path. */
export interface LsmInodeRule extends PathRuleBase {
  /** Device in the kernel's encoding (major << 20 | minor), see kernelDeviceNumber. */
  dev: number;
  ino: bigint | number;
}

/** Fields of a directory rule that do not depend on how the directory is keyed. */
export interface DirectoryRuleBase extends PathRuleBase {
  /** Applies to every entry below the directory at any depth, not only to its direct entries. */
  recursive: boolean;
}

/** A rule set of subjects, exact-file rules and directory rules of type D. */
export interface PathRuleSet<D extends DirectoryRuleBase> {
  subjects: Iterable<LsmSubjectPostures>;
  inodeRules: Iterable<LsmInodeRule>;
  directoryRules: Iterable<D>;
}

// --- files -------------------------------------------------------------------

/**
 * Converts a st_dev from stat() (glibc's encoding) to the kernel's s_dev
 * encoding, major << 20 | minor, which the BPF programs read from the inode.
 */
export function kernelDeviceNumber(statDev: bigint | number): number {
  const dev = BigInt(statDev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  if (major >= 1n << 12n || minor >= 1n << 20n) {
    throw new RangeError(
      `device ${major}:${minor} does not fit the kernel's 12-bit major and 20-bit minor`,
    );
  }
  return Number((major << 20n) | minor);
}

/**
 * Returns the (device, inode) that an exact-file rule on path matches, following
 * symlinks as exec and open do. A file created at the path later has another
 * inode: until the rules are compiled again, only directory rules cover it.
 * NOTE: on file systems whose stat() reports another device or inode than the
 * kernel's inode (btrfs subvolumes, overlayfs), the rule does not match.
 */
export function resolveInode(path: string): { dev: number; ino: bigint } {
  const stats = statSync(path, { bigint: true });
  return { dev: kernelDeviceNumber(stats.dev), ino: stats.ino };
}

// --- encoders ----------------------------------------------------------------

/** The strongest action of the rules on one key for one access, and the first such rule. */
export interface LsmVerdict {
  action: KernelAction;
  ruleIndex: number;
}

/** Verdicts for opens without and with write intent; exec decisions use read. */
export interface LsmAccessVerdicts {
  read: LsmVerdict;
  write: LsmVerdict;
}

const NO_VERDICT: LsmVerdict = { action: KernelAction.None, ruleIndex: 0 };

export function encodeLsmSubject(
  flags: number,
  execPosture: KernelAction,
  filePosture: KernelAction,
): Buffer {
  const out = Buffer.alloc(lsmSubjectLayout.size);
  out.writeUInt32LE(flags >>> 0, lsmSubjectLayout.offsetOf('flags'));
  out.writeUInt8(execPosture, lsmSubjectLayout.offsetOf('exec_posture'));
  out.writeUInt8(filePosture, lsmSubjectLayout.offsetOf('file_posture'));
  return out;
}

function writeVerdict(out: Buffer, at: number, verdict: LsmVerdict): void {
  out.writeUInt32LE(verdict.ruleIndex >>> 0, at + lsmVerdictLayout.offsetOf('rule_index'));
  out.writeUInt8(verdict.action, at + lsmVerdictLayout.offsetOf('action'));
}

function writeAccess(out: Buffer, at: number, access: LsmAccessVerdicts): void {
  writeVerdict(out, at + lsmAccessLayout.offsetOf('read'), access.read);
  writeVerdict(out, at + lsmAccessLayout.offsetOf('write'), access.write);
}

export function encodeLsmAccess(access: LsmAccessVerdicts): Buffer {
  const out = Buffer.alloc(lsmAccessLayout.size);
  writeAccess(out, 0, access);
  return out;
}

export function encodeInodeKey(
  subject: number,
  kind: LsmKind,
  dev: number,
  ino: bigint | number,
): Buffer {
  const out = Buffer.alloc(lsmInodeKeyLayout.size);
  out.writeBigUInt64LE(BigInt(ino), lsmInodeKeyLayout.offsetOf('ino'));
  out.writeUInt32LE(dev >>> 0, lsmInodeKeyLayout.offsetOf('dev'));
  out.writeUInt32LE(subject >>> 0, lsmInodeKeyLayout.offsetOf('subject'));
  out.writeUInt32LE(kind, lsmInodeKeyLayout.offsetOf('kind'));
  return out;
}

/** Encodes a directory's verdicts: direct from its non-recursive rules, subtree from its recursive ones. */
export function encodeDirectoryRules(
  direct: LsmAccessVerdicts,
  subtree: LsmAccessVerdicts,
): Buffer {
  const out = Buffer.alloc(lsmDirectoryRulesLayout.size);
  writeAccess(out, lsmDirectoryRulesLayout.offsetOf('direct'), direct);
  writeAccess(out, lsmDirectoryRulesLayout.offsetOf('subtree'), subtree);
  return out;
}

// --- compiling ---------------------------------------------------------------

/** Returns the kernel's value of a rule kind; throws RangeError for any other string. */
export function kindValue(kind: LsmRuleKind): LsmKind {
  if (kind === 'exec') return LsmKind.Exec;
  if (kind === 'file') return LsmKind.File;
  throw new RangeError(`invalid rule kind ${JSON.stringify(kind)}: expected 'exec' or 'file'`);
}

/** Returns the stronger verdict: the higher action, or the lower rule index among equal actions. */
function stronger(current: LsmVerdict, candidate: LsmVerdict): LsmVerdict {
  if (candidate.action === KernelAction.None) return current;
  if (candidate.action > current.action) return candidate;
  if (candidate.action === current.action && candidate.ruleIndex < current.ruleIndex)
    return candidate;
  return current;
}

function validateRule(rule: PathRuleBase): void {
  if (![KernelAction.Allow, KernelAction.Audit, KernelAction.Block].includes(rule.action)) {
    throw new RangeError(
      `rule ${rule.ruleIndex}: invalid action ${rule.action}: expected Allow, Audit or Block`,
    );
  }
  if (rule.readOnly && rule.kind !== 'file') {
    throw new RangeError(
      `rule ${rule.ruleIndex}: readOnly applies to file rules only, got kind ${rule.kind}`,
    );
  }
}

/** Adds a rule's contribution to the verdicts of its key: a readOnly rule blocks opens with write intent. */
function addRule(access: LsmAccessVerdicts, rule: PathRuleBase): LsmAccessVerdicts {
  const read = { action: rule.action, ruleIndex: rule.ruleIndex };
  const write = rule.readOnly ? { action: KernelAction.Block, ruleIndex: rule.ruleIndex } : read;
  return { read: stronger(access.read, read), write: stronger(access.write, write) };
}

interface SubjectEntry {
  flags: number;
  execPosture: KernelAction;
  filePosture: KernelAction;
}

/** The map entries of a rule set, keyed by the hex of the encoded key. */
export interface CompiledPathRuleSet {
  subjects: Map<number, SubjectEntry>;
  inodes: Map<string, { key: Buffer; access: LsmAccessVerdicts }>;
  directories: Map<string, { key: Buffer; direct: LsmAccessVerdicts; subtree: LsmAccessVerdicts }>;
}

function subjectEntry(compiled: CompiledPathRuleSet, id: number): SubjectEntry {
  let entry = compiled.subjects.get(id);
  if (!entry) {
    entry = { flags: 0, execPosture: KernelAction.None, filePosture: KernelAction.None };
    compiled.subjects.set(id, entry);
  }
  return entry;
}

/** Marks the subject as having Allow rules of the rule's kind, which turns its posture of that kind on. */
function noteAllowRule(compiled: CompiledPathRuleSet, rule: PathRuleBase): void {
  const entry = subjectEntry(compiled, rule.subject);
  if (rule.action !== KernelAction.Allow) return;
  entry.flags |= rule.kind === 'exec' ? LSM_SUBJECT_HAS_EXEC_ALLOW : LSM_SUBJECT_HAS_FILE_ALLOW;
}

/**
 * Merges the rules into one map entry per key, with directoryKey encoding the
 * key of each directory rule. Every subject with rules gets a subject entry,
 * which the kernel needs before it looks at any rule.
 */
export function compilePathRuleSet<D extends DirectoryRuleBase>(
  ruleSet: PathRuleSet<D>,
  directoryKey: (rule: D) => Buffer,
): CompiledPathRuleSet {
  const compiled: CompiledPathRuleSet = {
    subjects: new Map(),
    inodes: new Map(),
    directories: new Map(),
  };
  for (const subject of ruleSet.subjects) {
    const entry = subjectEntry(compiled, subject.id);
    entry.execPosture = subject.execPosture;
    entry.filePosture = subject.filePosture;
    if (subject.hasExecAllow) entry.flags |= LSM_SUBJECT_HAS_EXEC_ALLOW;
    if (subject.hasFileAllow) entry.flags |= LSM_SUBJECT_HAS_FILE_ALLOW;
  }

  for (const rule of ruleSet.inodeRules) {
    validateRule(rule);
    noteAllowRule(compiled, rule);
    const key = encodeInodeKey(rule.subject, kindValue(rule.kind), rule.dev, rule.ino);
    const id = key.toString('hex');
    const entry = compiled.inodes.get(id) ?? {
      key,
      access: { read: NO_VERDICT, write: NO_VERDICT },
    };
    entry.access = addRule(entry.access, rule);
    compiled.inodes.set(id, entry);
  }

  for (const rule of ruleSet.directoryRules) {
    validateRule(rule);
    noteAllowRule(compiled, rule);
    const key = directoryKey(rule);
    const id = key.toString('hex');
    const empty = { read: NO_VERDICT, write: NO_VERDICT };
    const entry = compiled.directories.get(id) ?? { key, direct: empty, subtree: empty };
    if (rule.recursive) entry.subtree = addRule(entry.subtree, rule);
    else entry.direct = addRule(entry.direct, rule);
    compiled.directories.set(id, entry);
  }
  return compiled;
}

// --- publishing --------------------------------------------------------------

/** One inner map of a generation: where it is published, how it is created, what it contains. */
export interface InnerMap {
  /** File descriptor of the outer map (array or hash of maps keyed by generation). */
  outer: number;
  /** Name of the inner map, at most 15 bytes (the kernel's BPF_OBJ_NAME_LEN less its NUL). */
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  entries: Iterable<readonly [key: Buffer, value: Buffer]>;
}

/**
 * Creates and fills each inner map, then publishes every one under generation
 * in its outer map, in order. On failure nothing stays published under
 * generation, and the error names the rule set (`publish <label> rule set`)
 * and the generation.
 */
export function publishGeneration(
  label: string,
  generation: number,
  innerMaps: readonly InnerMap[],
): void {
  const created: number[] = [];
  const inserted: number[] = [];
  try {
    // Fill the inner maps.
    for (const inner of innerMaps) {
      const fd = mapCreate({
        type: MapType.HASH,
        name: inner.name,
        keySize: inner.keySize,
        valueSize: inner.valueSize,
        maxEntries: inner.maxEntries,
        flags: MapFlag.NO_PREALLOC,
      });
      created.push(fd);
      for (const [key, value] of inner.entries) mapUpdate(fd, key, value, 0);
    }

    // Publish them under the generation.
    const key = encodeU32(generation);
    created.forEach((fd, i) => {
      mapUpdate(innerMaps[i].outer, key, encodeU32(fd), 0);
      inserted.push(innerMaps[i].outer);
    });
  } catch (cause) {
    for (const outer of inserted) mapDelete(outer, encodeU32(generation));
    throw new Error(
      `publish ${label} rule set generation ${generation}: ${(cause as Error).message}`,
      { cause },
    );
  } finally {
    // The outer maps hold their own references to the inner maps.
    for (const fd of created) closeFd(fd);
  }
}

/** Removes a generation from each outer map, in order. */
export function retireGeneration(outerMaps: readonly number[], generation: number): void {
  for (const outer of outerMaps) mapDelete(outer, encodeU32(generation));
}

/** File descriptors of the outer maps of exec and file rules, owned by their object. */
export interface PathRuleMapFds {
  subjects: number;
  inodes: number;
  directories: number;
}

/** Inner map names, limits and directory key size, which differ between the two objects. */
export interface PathRuleMapSpec {
  /** Names the rule set in errors, such as 'LSM'. */
  label: string;
  /** Names of the inner maps that each generation creates. */
  innerNames: { subjects: string; inodes: string; directories: string };
  maxInodeKeys: number;
  maxDirectoryKeys: number;
  /** Size of a directory rule's key, which depends on how the object keys directories. */
  directoryKeySize: number;
}

/** Yields the encoded entries of items one at a time, so that encoding errors occur while publishing. */
function* encodeEntries<T>(
  items: Iterable<T>,
  encode: (item: T) => readonly [Buffer, Buffer],
): Generator<readonly [Buffer, Buffer]> {
  for (const item of items) yield encode(item);
}

/** Returns the subject, inode and directory inner maps of a compiled rule set. */
export function pathRuleInnerMaps(
  maps: PathRuleMapFds,
  compiled: CompiledPathRuleSet,
  spec: PathRuleMapSpec,
): InnerMap[] {
  const subjects = encodeEntries(compiled.subjects, ([id, entry]) => [
    encodeU32(id),
    encodeLsmSubject(entry.flags, entry.execPosture, entry.filePosture),
  ]);
  const inodes = encodeEntries(compiled.inodes.values(), ({ key, access }) => [
    key,
    encodeLsmAccess(access),
  ]);
  const directories = encodeEntries(compiled.directories.values(), ({ key, direct, subtree }) => [
    key,
    encodeDirectoryRules(direct, subtree),
  ]);
  return [
    {
      outer: maps.subjects,
      name: spec.innerNames.subjects,
      keySize: 4,
      valueSize: lsmSubjectLayout.size,
      maxEntries: SIGIL_MAX_SUBJECTS,
      entries: subjects,
    },
    {
      outer: maps.inodes,
      name: spec.innerNames.inodes,
      keySize: lsmInodeKeyLayout.size,
      valueSize: lsmAccessLayout.size,
      maxEntries: spec.maxInodeKeys,
      entries: inodes,
    },
    {
      outer: maps.directories,
      name: spec.innerNames.directories,
      keySize: spec.directoryKeySize,
      valueSize: lsmDirectoryRulesLayout.size,
      maxEntries: spec.maxDirectoryKeys,
      entries: directories,
    },
  ];
}

/**
 * Writes a compiled rule set into fresh inner maps and publishes them under
 * generation, as publishGeneration does. Callers that publish a map more can
 * append its InnerMap to the result of pathRuleInnerMaps and call
 * publishGeneration themselves.
 */
export function publishPathRuleSet(
  maps: PathRuleMapFds,
  generation: number,
  compiled: CompiledPathRuleSet,
  spec: PathRuleMapSpec,
): void {
  publishGeneration(spec.label, generation, pathRuleInnerMaps(maps, compiled, spec));
}

/**
 * Removes a generation's exec and file rules. A program still running on it
 * keeps its inner maps alive until the kernel's RCU grace period ends.
 */
export function retirePathRuleSet(maps: PathRuleMapFds, generation: number): void {
  retireGeneration([maps.subjects, maps.inodes, maps.directories], generation);
}
