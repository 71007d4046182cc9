/**
 * User-space side of the tracepoint-kill object (bpf/.output/sigil-tp.bpf.o).
 * This module opens the object on the main object's pinned maps and
 * publishes exec and file rule sets per generation through path-rule-maps.ts,
 * as publishLsmRuleSet does for the LSM object, with the same keys and values
 * (lsm-layout.ts).
 *
 * One difference: the kernel matches a directory rule by the directory's
 * (device, inode), which this module reads with stat() when it publishes the
 * rule set, where the LSM object hashes the path. So a directory rule follows
 * its directory through renames and bind mounts, names the directory as it is
 * in the agent's mount namespace, and does not cover a directory created at
 * the path after the rule set was published.
 */
import { join } from 'node:path';
import { lsmInodeKeyLayout } from './lsm-layout';
import { BpfObject } from './native';
import {
  CompiledPathRuleSet,
  compilePathRuleSet,
  DirectoryRuleBase,
  encodeInodeKey,
  kindValue,
  openOnPinnedMaps,
  PathRuleMapFds,
  PathRuleMapSpec,
  PathRuleSet,
  publishPathRuleSet,
  retirePathRuleSet,
} from './path-rule-maps';
import { SIGIL_TP_MAX_DIRECTORY_KEYS, SIGIL_TP_MAX_INODE_KEYS } from './tp-layout';

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
 * (pinDir/maps). The maps of TP_SHARED_MAPS must be pinned there already, and
 * the object's rule maps are reused or pinned as openOnPinnedMaps describes.
 * Nothing is attached.
 */
export function openTpObject(pinDirectory: string, path = defaultTpObjectPath()): BpfObject {
  return openOnPinnedMaps(path, pinDirectory, TP_SHARED_MAPS, {
    file: 'tracepoint-kill BPF object',
    object: 'tracepoint-kill object',
  });
}

/** File descriptors of the object's rule maps, owned by the object. */
export type TpMapFds = PathRuleMapFds;

export function tpMapFds(object: BpfObject): TpMapFds {
  return {
    subjects: object.mapFd('sigil_tp_subjects'),
    inodes: object.mapFd('sigil_tp_inodes'),
    directories: object.mapFd('sigil_tp_directories'),
  };
}

/** A rule on a directory, by the (device, inode) that stat() returned for its path. */
export interface TpDirectoryRule extends DirectoryRuleBase {
  dev: number;
  ino: bigint | number;
}

/** A compiled exec and file rule set of the tracepoint-kill object. */
export type TpRuleSet = PathRuleSet<TpDirectoryRule>;

/** The map entries of a rule set, keyed by the hex of the encoded key. */
export type CompiledTpRuleSet = CompiledPathRuleSet;

/**
 * Merges the rules into one map entry per key, as compileLsmRuleSet does,
 * except that directory rules are keyed like exact-file rules, by the
 * directory's inode, in their own map.
 */
export function compileTpRuleSet(ruleSet: TpRuleSet): CompiledTpRuleSet {
  return compilePathRuleSet(ruleSet, (rule) =>
    encodeInodeKey(rule.subject, kindValue(rule.kind), rule.dev, rule.ino),
  );
}

/** Inner map names and limits of the tracepoint-kill object's rule maps. */
export const TP_RULE_MAPS: PathRuleMapSpec = {
  label: 'tracepoint-kill',
  innerNames: { subjects: 'sigil_tp_subj', inodes: 'sigil_tp_ino', directories: 'sigil_tp_dir' },
  maxInodeKeys: SIGIL_TP_MAX_INODE_KEYS,
  maxDirectoryKeys: SIGIL_TP_MAX_DIRECTORY_KEYS,
  directoryKeySize: lsmInodeKeyLayout.size,
};

/**
 * Writes a rule set into fresh inner maps and publishes them under generation
 * in the object's outer maps. The programs use it once the caller writes
 * generation to sigil_settings (Datapath.applyRuleSet). On failure nothing
 * stays published under generation and the error names it.
 */
export function publishTpRuleSet(maps: TpMapFds, generation: number, ruleSet: TpRuleSet): void {
  publishPathRuleSet(maps, generation, compileTpRuleSet(ruleSet), TP_RULE_MAPS);
}

/** Removes a generation's rules; a program still running on it keeps its inner maps until RCU frees them. */
export function retireTpRuleSet(maps: TpMapFds, generation: number): void {
  retirePathRuleSet(maps, generation);
}
