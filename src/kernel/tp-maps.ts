/**
 * User-space side of the tracepoint-kill object (bpf/.output/sigil-tp.bpf.o).
 * This module opens the object on the main object's pinned maps and
 * publishes exec and file rule sets per generation, the way publishLsmRuleSet
 * does for the LSM object, with the same keys and values (lsm-layout.ts).
 *
 * One difference: the kernel matches a directory rule by the directory's
 * (device, inode), which this module reads with stat() when it publishes the
 * rule set, where the LSM object hashes the path. So a directory rule follows
 * its directory through renames and bind mounts, names the directory as it is
 * in the agent's mount namespace, and does not cover a directory created at
 * the path after the rule set was published.
 */
import { existsSync } from 'node:fs';
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
} from './lsm-layout';
import {
  compileLsmRuleSet,
  encodeDirectoryRules,
  encodeInodeKey,
  encodeLsmAccess,
  encodeLsmSubject,
  LsmAccessVerdicts,
  LsmInodeRule,
  LsmRuleKind,
  LsmSubjectPostures,
  LsmVerdict,
} from './lsm-maps';
import { SIGIL_TP_MAX_DIRECTORY_KEYS, SIGIL_TP_MAX_INODE_KEYS } from './tp-layout';
import { BpfObject, closeFd, MapFlag, MapType, mapCreate, mapDelete, mapUpdate } from './native';

/** Maps of the main object that the tracepoint-kill object reuses through their pins. */
export const TP_SHARED_MAPS = [
  'sigil_settings',
  'sigil_identities',
  'sigil_events',
  'sigil_drops',
] as const;

/** Programs of the object, each with the tracepoint its section names. */
export const TP_PROGRAMS = [
  { program: 'sigil_tp_exec', kind: 'raw_tp', target: 'sched_process_exec' },
  { program: 'sigil_tp_openat', kind: 'tracepoint', target: 'syscalls/sys_exit_openat' },
  { program: 'sigil_tp_openat2', kind: 'tracepoint', target: 'syscalls/sys_exit_openat2' },
  { program: 'sigil_tp_open', kind: 'tracepoint', target: 'syscalls/sys_exit_open' },
  { program: 'sigil_tp_creat', kind: 'tracepoint', target: 'syscalls/sys_exit_creat' },
  {
    program: 'sigil_tp_open_by_handle_at',
    kind: 'tracepoint',
    target: 'syscalls/sys_exit_open_by_handle_at',
  },
  // The syscalls tracepoints skip i386 system calls, so this one decides the opens made through that ABI.
  { program: 'sigil_tp_sys_exit_ia32', kind: 'raw_tp', target: 'sys_exit' },
] as const;

/** Returns the default path of the linked tracepoint-kill object, relative to the package root. */
export function defaultTpObjectPath(): string {
  return join(__dirname, '..', '..', 'bpf', '.output', 'sigil-tp.bpf.o');
}

/**
 * Opens and loads the tracepoint-kill object with every map pinned in
 * pinDirectory, where Datapath.load pinned the main object's maps
 * (pinDir/maps). The maps of TP_SHARED_MAPS must be pinned there already.
 * The object's rule maps are reused when an earlier agent pinned them, and
 * created and pinned otherwise. Throws when a shared pin is missing or a
 * pinned map does not match this object's declaration. Nothing is attached.
 */
export function openTpObject(pinDirectory: string, path = defaultTpObjectPath()): BpfObject {
  if (!existsSync(path))
    throw new Error(`tracepoint-kill BPF object ${path} not found: run \`make\``);
  const missing = TP_SHARED_MAPS.filter((name) => !existsSync(join(pinDirectory, name)));
  if (missing.length > 0) {
    throw new Error(
      `pinned maps of the main BPF object not found in ${pinDirectory}: ${missing.join(', ')}; ` +
        'load the main object with pinning before the tracepoint-kill object',
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

/** File descriptors of the object's rule maps, owned by the object. */
export interface TpMapFds {
  subjects: number;
  inodes: number;
  directories: number;
}

export function tpMapFds(object: BpfObject): TpMapFds {
  return {
    subjects: object.mapFd('sigil_tp_subjects'),
    inodes: object.mapFd('sigil_tp_inodes'),
    directories: object.mapFd('sigil_tp_directories'),
  };
}

/** A rule on a directory, by the (device, inode) that stat() returned for its path. */
export interface TpDirectoryRule {
  subject: number;
  kind: LsmRuleKind;
  action: KernelAction.Allow | KernelAction.Audit | KernelAction.Block;
  readOnly?: boolean;
  ruleIndex: number;
  dev: number;
  ino: bigint | number;
  recursive: boolean;
}

/** A compiled exec and file rule set of the tracepoint-kill object. */
export interface TpRuleSet {
  subjects: Iterable<LsmSubjectPostures>;
  inodeRules: Iterable<LsmInodeRule>;
  directoryRules: Iterable<TpDirectoryRule>;
}

/** The map entries of a rule set, keyed by the hex of the encoded key. */
export interface CompiledTpRuleSet {
  subjects: Map<number, { flags: number; execPosture: KernelAction; filePosture: KernelAction }>;
  inodes: Map<string, { key: Buffer; access: LsmAccessVerdicts }>;
  directories: Map<string, { key: Buffer; direct: LsmAccessVerdicts; subtree: LsmAccessVerdicts }>;
}

const NO_VERDICT: LsmVerdict = { action: KernelAction.None, ruleIndex: 0 };

/** Returns the stronger verdict: the higher action, or the lower rule index among equal actions. */
function stronger(current: LsmVerdict, candidate: LsmVerdict): LsmVerdict {
  if (candidate.action > current.action) return candidate;
  if (candidate.action === current.action && candidate.ruleIndex < current.ruleIndex)
    return candidate;
  return current;
}

/** Adds a rule's contribution to the verdicts of its key: a readOnly rule blocks opens with write intent. */
function addRule(access: LsmAccessVerdicts, rule: TpDirectoryRule): LsmAccessVerdicts {
  const read = { action: rule.action, ruleIndex: rule.ruleIndex };
  const write = rule.readOnly ? { action: KernelAction.Block, ruleIndex: rule.ruleIndex } : read;
  return { read: stronger(access.read, read), write: stronger(access.write, write) };
}

/**
 * Merges the rules into one map entry per key. Subjects and exact-file rules
 * compile as compileLsmRuleSet compiles them; directory rules are keyed like
 * exact-file rules, by the directory's inode, in their own map.
 */
export function compileTpRuleSet(ruleSet: TpRuleSet): CompiledTpRuleSet {
  const directoryRules = [...ruleSet.directoryRules];
  // The hash seed only keys directory paths, which this object does not use.
  const base = compileLsmRuleSet(
    { subjects: ruleSet.subjects, inodeRules: ruleSet.inodeRules, directoryRules: [] },
    0n,
  );
  const compiled: CompiledTpRuleSet = {
    subjects: base.subjects,
    inodes: base.inodes,
    directories: new Map(),
  };
  for (const rule of directoryRules) {
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
    const subject = compiled.subjects.get(rule.subject) ?? {
      flags: 0,
      execPosture: KernelAction.None,
      filePosture: KernelAction.None,
    };
    if (rule.action === KernelAction.Allow) {
      subject.flags |=
        rule.kind === 'exec' ? LSM_SUBJECT_HAS_EXEC_ALLOW : LSM_SUBJECT_HAS_FILE_ALLOW;
    }
    compiled.subjects.set(rule.subject, subject);

    const kind = rule.kind === 'exec' ? LsmKind.Exec : LsmKind.File;
    const key = encodeInodeKey(rule.subject, kind, rule.dev, rule.ino);
    const id = key.toString('hex');
    const empty = { read: NO_VERDICT, write: NO_VERDICT };
    const entry = compiled.directories.get(id) ?? { key, direct: empty, subtree: empty };
    if (rule.recursive) entry.subtree = addRule(entry.subtree, rule);
    else entry.direct = addRule(entry.direct, rule);
    compiled.directories.set(id, entry);
  }
  return compiled;
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
 * Writes a rule set into fresh inner maps and publishes them under generation
 * in the object's outer maps. The programs use it once the caller writes
 * generation to sigil_settings (Datapath.applyRuleSet). On failure nothing
 * stays published under generation and the error names it.
 */
export function publishTpRuleSet(maps: TpMapFds, generation: number, ruleSet: TpRuleSet): void {
  const compiled = compileTpRuleSet(ruleSet);
  const created: number[] = [];
  const inserted: (typeof OUTER_MAPS)[number][] = [];
  try {
    // Fill the inner maps.
    const subjects = createInnerMap('sigil_tp_subj', 4, lsmSubjectLayout.size, SIGIL_MAX_SUBJECTS);
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
      'sigil_tp_ino',
      lsmInodeKeyLayout.size,
      lsmAccessLayout.size,
      SIGIL_TP_MAX_INODE_KEYS,
    );
    created.push(inodes);
    for (const { key, access } of compiled.inodes.values())
      mapUpdate(inodes, key, encodeLsmAccess(access), 0);
    const directories = createInnerMap(
      'sigil_tp_dir',
      lsmInodeKeyLayout.size,
      lsmDirectoryRulesLayout.size,
      SIGIL_TP_MAX_DIRECTORY_KEYS,
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
    throw new Error(
      `publish tracepoint-kill rule set generation ${generation}: ${(cause as Error).message}`,
      {
        cause,
      },
    );
  } finally {
    // The outer maps hold their own references to the inner maps.
    for (const fd of created) closeFd(fd);
  }
}

/** Removes a generation's rules; a program still running on it keeps its inner maps until RCU frees them. */
export function retireTpRuleSet(maps: TpMapFds, generation: number): void {
  for (const outer of OUTER_MAPS) mapDelete(maps[outer], encodeU32(generation));
}
