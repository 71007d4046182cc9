/**
 * User-space side of the BPF LSM object (bpf/.output/sigil-lsm.bpf.o). This
 * module opens the object on the main object's pinned maps, encodes the keys
 * and values that only this object uses (layouts in lsm-layout.ts), and
 * publishes exec and file rule sets per generation through path-rule-maps.ts,
 * the way Datapath.applyRuleSet publishes egress rules.
 *
 * Rules of two kinds: exact-file rules match the (device, inode) of the file
 * that is opened or executed, so hard links, symlinks and renames reach the
 * same rule. Directory rules match the path that bpf_d_path resolves in the
 * kernel, as the process sees it (relative to its root, so a container's
 * paths). Block beats Audit beats Allow, and a subject's posture of a kind
 * applies when it has Allow rules of that kind and none matched.
 */
import { randomBytes } from 'node:crypto';
import { join, posix } from 'node:path';
import { encodeU32 } from './codec';
import {
  LsmKind,
  LSM_SUBJECT_NO_EXEC_DIRECTORIES,
  LSM_SUBJECT_NO_FILE_DIRECTORIES,
  LSM_SUBJECT_NO_EXEC_INODES,
  LSM_SUBJECT_NO_FILE_INODES,
  lsmConfigLayout,
  lsmDirectoryKeyLayout,
  SIGIL_LSM_FNV_OFFSET_BASIS,
  SIGIL_LSM_FNV_PRIME,
  SIGIL_LSM_MAX_DIRECTORY_KEYS,
  SIGIL_LSM_MAX_INODE_KEYS,
  SIGIL_LSM_PATH_BUFFER,
} from './lsm-layout';
import { BpfObject, mapLookup, mapUpdate } from './native';
import {
  CompiledPathRuleSet,
  compilePathRuleSet,
  DirectoryRuleBase,
  kindValue,
  openOnPinnedMaps,
  PathRuleMapFds,
  PathRuleMapSpec,
  PathRuleSet,
  publishPathRuleSet,
  retirePathRuleSet,
} from './path-rule-maps';

export {
  encodeDirectoryRules,
  encodeInodeKey,
  encodeLsmAccess,
  encodeLsmSubject,
  kernelDeviceNumber,
  resolveInode,
} from './path-rule-maps';
export type {
  LsmAccessVerdicts,
  LsmInodeRule,
  LsmRuleKind,
  LsmSubjectPostures,
  LsmVerdict,
} from './path-rule-maps';

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
 * pinDir/maps). The maps of LSM_SHARED_MAPS must be pinned there already, and
 * the LSM object's own maps are reused or pinned as openOnPinnedMaps
 * describes. Nothing is attached.
 */
export function openLsmObject(pinDirectory: string, path = defaultLsmObjectPath()): BpfObject {
  return openOnPinnedMaps(path, pinDirectory, LSM_SHARED_MAPS, {
    file: 'BPF LSM object',
    object: 'LSM object',
  });
}

/** File descriptors of the LSM object's own maps that rule sets are written to. */
export interface LsmMapFds extends PathRuleMapFds {
  config: number;
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

/** A rule on a directory's entries: directly in it, or at any depth when recursive. */
export interface LsmDirectoryRule extends DirectoryRuleBase {
  /** Absolute path inside the subject's root (a container's path). A trailing '/' is optional. */
  path: string;
}

/** A compiled exec and file rule set in the form the kernel maps take. */
export type LsmRuleSet = PathRuleSet<LsmDirectoryRule>;

/** The map entries of a rule set, keyed by the hex of the encoded key. */
export type CompiledLsmRuleSet = CompiledPathRuleSet;

// --- paths -------------------------------------------------------------------

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

export function encodeLsmConfig(hashSeed: bigint): Buffer {
  const out = Buffer.alloc(lsmConfigLayout.size);
  out.writeBigUInt64LE(hashSeed & UINT64_MASK, lsmConfigLayout.offsetOf('hash_seed'));
  return out;
}

export function encodeDirectoryKey(subject: number, kind: LsmKind, hash: bigint): Buffer {
  const out = Buffer.alloc(lsmDirectoryKeyLayout.size);
  out.writeBigUInt64LE(hash & UINT64_MASK, lsmDirectoryKeyLayout.offsetOf('hash'));
  out.writeUInt32LE(subject >>> 0, lsmDirectoryKeyLayout.offsetOf('subject'));
  out.writeUInt32LE(kind, lsmDirectoryKeyLayout.offsetOf('kind'));
  return out;
}

// --- compiling ---------------------------------------------------------------

/**
 * Merges the rules into one map entry per key, with directory rules keyed by
 * the seeded hash of their path. Every subject with rules gets a subject
 * entry, which the kernel needs before it looks at any rule.
 */
export function compileLsmRuleSet(ruleSet: LsmRuleSet, hashSeed: bigint): CompiledLsmRuleSet {
  const compiled = compilePathRuleSet(ruleSet, (rule) => {
    const hash = pathHash(directoryKeyPath(rule.path), hashSeed);
    return encodeDirectoryKey(rule.subject, kindValue(rule.kind), hash);
  });
  markSubjectsWithoutDirectoryRules(compiled, ruleSet);
  markSubjectsWithoutInodeRules(compiled, ruleSet);
  return compiled;
}

/** Sets the NO_*_DIRECTORIES flags, which spare the kernel bpf_d_path for those subjects. */
function markSubjectsWithoutDirectoryRules(
  compiled: CompiledLsmRuleSet,
  ruleSet: LsmRuleSet,
): void {
  for (const entry of compiled.subjects.values()) {
    entry.flags |= LSM_SUBJECT_NO_EXEC_DIRECTORIES | LSM_SUBJECT_NO_FILE_DIRECTORIES;
  }
  for (const rule of ruleSet.directoryRules) {
    const entry = compiled.subjects.get(rule.subject);
    if (!entry) continue;
    const flag =
      rule.kind === 'exec' ? LSM_SUBJECT_NO_EXEC_DIRECTORIES : LSM_SUBJECT_NO_FILE_DIRECTORIES;
    entry.flags &= ~flag;
  }
}

/** Sets the NO_*_INODES flags, which spare the kernel the exact-file lookup for those subjects. */
function markSubjectsWithoutInodeRules(compiled: CompiledLsmRuleSet, ruleSet: LsmRuleSet): void {
  for (const entry of compiled.subjects.values()) {
    entry.flags |= LSM_SUBJECT_NO_EXEC_INODES | LSM_SUBJECT_NO_FILE_INODES;
  }
  for (const rule of ruleSet.inodeRules) {
    const entry = compiled.subjects.get(rule.subject);
    if (!entry) continue;
    const flag = rule.kind === 'exec' ? LSM_SUBJECT_NO_EXEC_INODES : LSM_SUBJECT_NO_FILE_INODES;
    entry.flags &= ~flag;
  }
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

/** Inner map names and limits of the LSM object's rule maps. */
export const LSM_RULE_MAPS: PathRuleMapSpec = {
  label: 'LSM',
  innerNames: { subjects: 'sigil_lsm_subj', inodes: 'sigil_lsm_ino', directories: 'sigil_lsm_dir' },
  maxInodeKeys: SIGIL_LSM_MAX_INODE_KEYS,
  maxDirectoryKeys: SIGIL_LSM_MAX_DIRECTORY_KEYS,
  directoryKeySize: lsmDirectoryKeyLayout.size,
};

/**
 * Writes an exec and file rule set into fresh inner maps and publishes them
 * under generation in the LSM object's outer maps. The programs use it once
 * the caller writes generation to sigil_settings, together with the egress
 * rules of that generation (Datapath.applyRuleSet). On failure nothing stays
 * published under generation and the error names it.
 */
export function publishLsmRuleSet(maps: LsmMapFds, generation: number, ruleSet: LsmRuleSet): void {
  const compiled = compileLsmRuleSet(ruleSet, readLsmHashSeed(maps));
  publishPathRuleSet(maps, generation, compiled, LSM_RULE_MAPS);
}

/**
 * Removes a generation's exec and file rules. A program still running on it
 * keeps its inner maps alive until the kernel's RCU grace period ends.
 */
export function retireLsmRuleSet(maps: LsmMapFds, generation: number): void {
  retirePathRuleSet(maps, generation);
}
