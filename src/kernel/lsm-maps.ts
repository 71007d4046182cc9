/**
 * User-space side of the BPF LSM object (bpf/.output/sigil-lsm.bpf.o). This
 * module opens the object on the main object's pinned maps, encodes its map
 * keys and values (layouts in lsm-layout.ts), and publishes exec and file rule
 * sets per generation, the way Datapath.applyRuleSet publishes egress rules.
 *
 * Rules of two kinds: exact-file rules match the (device, inode) of the file
 * that is opened or executed, so hard links, symlinks and renames reach the
 * same rule. Directory rules match the path that bpf_d_path resolves in the
 * kernel, as the process sees it (relative to its root, so a container's
 * paths). Block beats Audit beats Allow, and a subject's posture of a kind
 * applies when it has Allow rules of that kind and none matched.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { encodeU32 } from './codec';
import { KernelAction } from './layout';
import {
  LSM_SUBJECT_HAS_EXEC_ALLOW,
  LSM_SUBJECT_HAS_FILE_ALLOW,
  LsmKind,
  lsmAccessLayout,
  lsmConfigLayout,
  lsmDirectoryKeyLayout,
  lsmDirectoryRulesLayout,
  lsmInodeKeyLayout,
  lsmSubjectLayout,
  lsmVerdictLayout,
  SIGIL_LSM_FNV_OFFSET_BASIS,
  SIGIL_LSM_FNV_PRIME,
  SIGIL_LSM_MAX_DIRECTORY_KEYS,
  SIGIL_LSM_MAX_INODE_KEYS,
  SIGIL_LSM_PATH_BUFFER,
} from './lsm-layout';
import { SIGIL_MAX_SUBJECTS } from './layout';
import {
  BpfObject,
  closeFd,
  MapFlag,
  MapType,
  mapCreate,
  mapDelete,
  mapLookup,
  mapUpdate,
} from './native';

/** Maps of the main object that the LSM object reuses through their pins, by the same names. */
export const LSM_SHARED_MAPS = [
  'sigil_settings',
  'sigil_identities',
  'sigil_events',
  'sigil_process_events',
  'sigil_drops',
  'sigil_subjects',
  'sigil_peer_rules',
  'sigil_cidr_rules',
] as const;

/** Programs of the LSM object; BpfObject.attach attaches each to the hook its section names. */
export const LSM_PROGRAMS = [
  'sigil_lsm_bprm_check',
  'sigil_lsm_file_open',
  'sigil_lsm_socket_bind',
  'sigil_lsm_socket_connect',
] as const;

/** Returns the default path of the linked LSM object, relative to the package root. */
export function defaultLsmObjectPath(): string {
  return join(__dirname, '..', '..', 'bpf', '.output', 'sigil-lsm.bpf.o');
}

/**
 * Opens and loads the LSM object with every map pinned in pinDirectory, the
 * directory where the main object's maps are pinned (Datapath.load's
 * pinDir/maps). The maps of LSM_SHARED_MAPS must be pinned there already,
 * because libbpf would otherwise create and pin separate ones. The LSM
 * object's own maps are reused when an earlier agent pinned them, and created
 * and pinned otherwise. Throws when a shared pin is missing or a pinned map
 * does not match this object's declaration. Nothing is attached.
 */
export function openLsmObject(pinDirectory: string, path = defaultLsmObjectPath()): BpfObject {
  if (!existsSync(path)) throw new Error(`BPF LSM object ${path} not found: run \`make\``);
  const missing = LSM_SHARED_MAPS.filter((name) => !existsSync(join(pinDirectory, name)));
  if (missing.length > 0) {
    throw new Error(
      `pinned maps of the main BPF object not found in ${pinDirectory}: ${missing.join(', ')}; ` +
        'load the main object with pinning before the LSM object',
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

/** File descriptors of the LSM object's own maps that rule sets are written to. */
export interface LsmMapFds {
  config: number;
  subjects: number;
  inodes: number;
  directories: number;
}

/** Returns the file descriptors of a loaded LSM object's rule maps, owned by the object. */
export function lsmMapFds(object: BpfObject): LsmMapFds {
  return {
    config: object.mapFd('sigil_lsm_config'),
    subjects: object.mapFd('sigil_lsm_subjects'),
    inodes: object.mapFd('sigil_lsm_inodes'),
    directories: object.mapFd('sigil_lsm_directories'),
  };
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
interface LsmRuleBase {
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
export interface LsmInodeRule extends LsmRuleBase {
  /** Device in the kernel's encoding (major << 20 | minor), see kernelDeviceNumber. */
  dev: number;
  ino: bigint | number;
}

/** A rule on a directory's entries: directly in it, or at any depth when recursive. */
export interface LsmDirectoryRule extends LsmRuleBase {
  /** Absolute path inside the subject's root (a container's path). A trailing '/' is optional. */
  path: string;
  recursive: boolean;
}

/** A compiled exec and file rule set in the form the kernel maps take. */
export interface LsmRuleSet {
  subjects: Iterable<LsmSubjectPostures>;
  inodeRules: Iterable<LsmInodeRule>;
  directoryRules: Iterable<LsmDirectoryRule>;
}

// --- files and paths ---------------------------------------------------------

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

/**
 * Returns the string that a directory rule's key hashes: the normalized
 * absolute path with one trailing '/' ("/" for the root). Throws for a relative
 * path, a NUL byte, or a path too long for the kernel's path buffer.
 */
export function directoryKeyPath(path: string): string {
  if (!path.startsWith('/'))
    throw new RangeError(`directory rule path must be absolute, got ${JSON.stringify(path)}`);
  if (path.includes('\0'))
    throw new RangeError(`directory rule path contains a NUL byte: ${JSON.stringify(path)}`);
  const normalized = posix.normalize(path);
  const keyPath = normalized.endsWith('/') ? normalized : `${normalized}/`;
  // The kernel hashes at most SIGIL_LSM_PATH_BUFFER - 1 bytes of a path, so a longer prefix never matches.
  if (Buffer.byteLength(keyPath) > SIGIL_LSM_PATH_BUFFER - 1) {
    throw new RangeError(
      `directory rule path is longer than ${SIGIL_LSM_PATH_BUFFER - 2} bytes: ${path.slice(0, 64)}...`,
    );
  }
  return keyPath;
}

const UINT64_MASK = (1n << 64n) - 1n;

/**
 * Returns the seeded 64-bit FNV-1a hash of the UTF-8 bytes of text, as
 * bpf/lsm/path.bpf.h computes it. With R directory keys, a kernel lookup hits
 * a directory it does not name with probability about R / 2^64 per lookup.
 */
export function pathHash(text: string, seed: bigint): bigint {
  let hash = (SIGIL_LSM_FNV_OFFSET_BASIS ^ seed) & UINT64_MASK;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash = ((hash ^ BigInt(byte)) * SIGIL_LSM_FNV_PRIME) & UINT64_MASK;
  }
  return hash;
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

export function encodeLsmConfig(hashSeed: bigint): Buffer {
  const out = Buffer.alloc(lsmConfigLayout.size);
  out.writeBigUInt64LE(hashSeed & UINT64_MASK, lsmConfigLayout.offsetOf('hash_seed'));
  return out;
}

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

export function encodeDirectoryKey(subject: number, kind: LsmKind, hash: bigint): Buffer {
  const out = Buffer.alloc(lsmDirectoryKeyLayout.size);
  out.writeBigUInt64LE(hash & UINT64_MASK, lsmDirectoryKeyLayout.offsetOf('hash'));
  out.writeUInt32LE(subject >>> 0, lsmDirectoryKeyLayout.offsetOf('subject'));
  out.writeUInt32LE(kind, lsmDirectoryKeyLayout.offsetOf('kind'));
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

function kindValue(kind: LsmRuleKind): LsmKind {
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

function validateRule(rule: LsmRuleBase): void {
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
function addRule(access: LsmAccessVerdicts, rule: LsmRuleBase): LsmAccessVerdicts {
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
export interface CompiledLsmRuleSet {
  subjects: Map<number, SubjectEntry>;
  inodes: Map<string, { key: Buffer; access: LsmAccessVerdicts }>;
  directories: Map<string, { key: Buffer; direct: LsmAccessVerdicts; subtree: LsmAccessVerdicts }>;
}

function subjectEntry(compiled: CompiledLsmRuleSet, id: number): SubjectEntry {
  let entry = compiled.subjects.get(id);
  if (!entry) {
    entry = { flags: 0, execPosture: KernelAction.None, filePosture: KernelAction.None };
    compiled.subjects.set(id, entry);
  }
  return entry;
}

/** Marks the subject as having Allow rules of the rule's kind, which turns its posture of that kind on. */
function noteAllowRule(compiled: CompiledLsmRuleSet, rule: LsmRuleBase): void {
  const entry = subjectEntry(compiled, rule.subject);
  if (rule.action !== KernelAction.Allow) return;
  entry.flags |= rule.kind === 'exec' ? LSM_SUBJECT_HAS_EXEC_ALLOW : LSM_SUBJECT_HAS_FILE_ALLOW;
}

/**
 * Merges the rules into one map entry per key. Every subject with rules gets
 * a subject entry, which the kernel needs before it looks at any rule.
 */
export function compileLsmRuleSet(ruleSet: LsmRuleSet, hashSeed: bigint): CompiledLsmRuleSet {
  const compiled: CompiledLsmRuleSet = {
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
    const hash = pathHash(directoryKeyPath(rule.path), hashSeed);
    const key = encodeDirectoryKey(rule.subject, kindValue(rule.kind), hash);
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

/**
 * Returns the hash seed of the directory rules, after writing a random one if
 * none is set (0). A seed that an earlier agent left in the pinned map stays,
 * because the directory keys of the rule set in force were hashed with it.
 */
export function ensureLsmHashSeed(maps: LsmMapFds): bigint {
  const current = readLsmHashSeed(maps);
  if (current !== 0n) return current;
  let seed = 0n;
  while (seed === 0n) seed = randomBytes(8).readBigUInt64LE(0);
  mapUpdate(maps.config, encodeU32(0), encodeLsmConfig(seed), 0);
  return seed;
}

/** Returns the hash seed that the kernel programs use. */
export function readLsmHashSeed(maps: LsmMapFds): bigint {
  const value = mapLookup(maps.config, encodeU32(0), lsmConfigLayout.size);
  if (!value) throw new Error('sigil_lsm_config has no entry 0');
  return value.readBigUInt64LE(lsmConfigLayout.offsetOf('hash_seed'));
}

function createInnerMap(
  name: string,
  keySize: number,
  valueSize: number,
  maxEntries: number,
): number {
  return mapCreate({
    type: MapType.HASH,
    name,
    keySize,
    valueSize,
    maxEntries,
    flags: MapFlag.NO_PREALLOC,
  });
}

const OUTER_MAPS = ['subjects', 'inodes', 'directories'] as const;

/**
 * Writes an exec and file rule set into fresh inner maps and publishes them
 * under generation in the LSM object's outer maps. The programs use it once
 * the caller writes generation to sigil_settings, together with the egress
 * rules of that generation (Datapath.applyRuleSet). On failure nothing stays
 * published under generation and the error names it.
 */
export function publishLsmRuleSet(maps: LsmMapFds, generation: number, ruleSet: LsmRuleSet): void {
  const compiled = compileLsmRuleSet(ruleSet, readLsmHashSeed(maps));
  const created: number[] = [];
  const inserted: (typeof OUTER_MAPS)[number][] = [];
  try {
    // Fill the inner maps.
    const subjects = createInnerMap('sigil_lsm_subj', 4, lsmSubjectLayout.size, SIGIL_MAX_SUBJECTS);
    created.push(subjects);
    for (const [id, entry] of compiled.subjects) {
      mapUpdate(
        subjects,
        encodeU32(id),
        encodeLsmSubject(entry.flags, entry.execPosture, entry.filePosture),
        0,
      );
    }

    const inodes = createInnerMap(
      'sigil_lsm_ino',
      lsmInodeKeyLayout.size,
      lsmAccessLayout.size,
      SIGIL_LSM_MAX_INODE_KEYS,
    );
    created.push(inodes);
    for (const { key, access } of compiled.inodes.values())
      mapUpdate(inodes, key, encodeLsmAccess(access), 0);

    const directories = createInnerMap(
      'sigil_lsm_dir',
      lsmDirectoryKeyLayout.size,
      lsmDirectoryRulesLayout.size,
      SIGIL_LSM_MAX_DIRECTORY_KEYS,
    );
    created.push(directories);
    for (const { key, direct, subtree } of compiled.directories.values()) {
      mapUpdate(directories, key, encodeDirectoryRules(direct, subtree), 0);
    }

    // Publish them under the generation.
    const key = encodeU32(generation);
    created.forEach((inner, i) => {
      mapUpdate(maps[OUTER_MAPS[i]], key, encodeU32(inner), 0);
      inserted.push(OUTER_MAPS[i]);
    });
  } catch (cause) {
    for (const outer of inserted) mapDelete(maps[outer], encodeU32(generation));
    throw new Error(`publish LSM rule set generation ${generation}: ${(cause as Error).message}`, {
      cause,
    });
  } finally {
    // The outer maps hold their own references to the inner maps.
    for (const fd of created) closeFd(fd);
  }
}

/**
 * Removes a generation's exec and file rules. A program still running on it
 * keeps its inner maps alive until the kernel's RCU grace period ends.
 */
export function retireLsmRuleSet(maps: LsmMapFds, generation: number): void {
  for (const outer of OUTER_MAPS) mapDelete(maps[outer], encodeU32(generation));
}
