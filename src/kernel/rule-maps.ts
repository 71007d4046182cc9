/**
 * The inner maps of one egress rule-set generation (subjects, peer rules, CIDR rules), and rule
 * sets and changes to them encoded for mapUpdateMany and mapDeleteMany. Datapath publishes these
 * maps in the outer maps under a generation.
 */
import { KernelRuleEntry, writeCidrKey, writePeerKey, writeRuleList, writeSubject } from './codec';
import {
  cidrKeyLayout,
  KernelAction,
  peerKeyLayout,
  ruleListLayout,
  SIGIL_MAX_CIDR_KEYS,
  SIGIL_MAX_PEER_KEYS,
  SIGIL_MAX_SUBJECTS,
  subjectLayout,
  SUBJECT_HAS_EGRESS_ALLOW,
} from './layout';
import { closeFd, mapCreate, mapDeleteMany, MapFlag, MapType, mapUpdateMany } from './native';

/** Value of the subjects map for one identity id. */
export interface KernelSubject {
  id: number;
  hasEgressAllow: boolean;
  egressPosture: KernelAction;
}

/** An entry of the peer-rule map. */
export interface KernelPeerRules {
  subject: number;
  peer: number;
  rules: readonly KernelRuleEntry[];
}

/** An entry of the CIDR LPM trie; prefixLen counts address bits (0..128), IPv4-mapped. */
export interface KernelCidrRules {
  subject: number;
  prefixLen: number;
  addr: Buffer;
  rules: readonly KernelRuleEntry[];
}

/** A compiled rule set in the form the kernel maps take. */
export interface KernelRuleSet {
  subjects: Iterable<KernelSubject>;
  peerRules: Iterable<KernelPeerRules>;
  cidrRules: Iterable<KernelCidrRules>;
}

/**
 * Changes that turn one rule set into the next: entries to write and keys to delete. A key is
 * in at most one of the two.
 */
export interface KernelRuleSetChanges {
  upserts: KernelRuleSet;
  removals: {
    subjects: Iterable<number>;
    peerRules: Iterable<{ subject: number; peer: number }>;
    cidrRules: Iterable<{ subject: number; prefixLen: number; addr: Buffer }>;
  };
}

/** Keys (and values) of one map laid end to end. */
interface EncodedEntries {
  keys: Buffer;
  values: Buffer;
}

/** Changes to the three inner maps, encoded: [subjects, peer rules, CIDR rules]. */
export interface EncodedChanges {
  upserts: [EncodedEntries, EncodedEntries, EncodedEntries];
  removals: [Buffer, Buffer, Buffer];
}

/** File descriptors of one generation's inner maps; the caller that created them closes them. */
export interface InnerMaps {
  subjects: number;
  peerRules: number;
  cidrRules: number;
}

/** Creates empty inner maps with the sizes and flags of the outer maps' templates. */
export function createInnerMaps(): InnerMaps {
  const created: number[] = [];
  try {
    const create = (
      type: number,
      name: string,
      keySize: number,
      valueSize: number,
      max: number,
    ) => {
      const fd = mapCreate({
        type,
        name,
        keySize,
        valueSize,
        maxEntries: max,
        flags: MapFlag.NO_PREALLOC,
      });
      created.push(fd);
      return fd;
    };
    return {
      subjects: create(MapType.HASH, 'sigil_subj_in', 4, subjectLayout.size, SIGIL_MAX_SUBJECTS),
      peerRules: create(
        MapType.HASH,
        'sigil_peer_in',
        peerKeyLayout.size,
        ruleListLayout.size,
        SIGIL_MAX_PEER_KEYS,
      ),
      cidrRules: create(
        MapType.LPM_TRIE,
        'sigil_cidr_in',
        cidrKeyLayout.size,
        ruleListLayout.size,
        SIGIL_MAX_CIDR_KEYS,
      ),
    };
  } catch (error) {
    for (const fd of created) closeFd(fd);
    throw error;
  }
}

export function closeInnerMaps(maps: InnerMaps): void {
  closeFd(maps.subjects);
  closeFd(maps.peerRules);
  closeFd(maps.cidrRules);
}

/** Writes changes into inner maps: deletions first, then updates. */
export function writeChanges(maps: InnerMaps, changes: EncodedChanges): void {
  const fds = [maps.subjects, maps.peerRules, maps.cidrRules];
  fds.forEach((fd, i) => {
    if (changes.removals[i].length > 0) mapDeleteMany(fd, changes.removals[i]);
  });
  fds.forEach((fd, i) => {
    const { keys, values } = changes.upserts[i];
    if (keys.length > 0) mapUpdateMany(fd, keys, values);
  });
}

/** Encodes a whole rule set as changes to empty maps. */
export function encodeRuleSet(ruleSet: KernelRuleSet): EncodedChanges {
  return encodeChanges({
    upserts: ruleSet,
    removals: { subjects: [], peerRules: [], cidrRules: [] },
  });
}

export function encodeChanges(changes: KernelRuleSetChanges): EncodedChanges {
  const { upserts, removals } = changes;
  const subjects = [...upserts.subjects];
  const peers = [...upserts.peerRules];
  const cidrs = [...upserts.cidrRules];

  const subjectKeys = Buffer.alloc(subjects.length * 4);
  const subjectValues = Buffer.alloc(subjects.length * subjectLayout.size);
  subjects.forEach((subject, i) => {
    subjectKeys.writeUInt32LE(subject.id >>> 0, i * 4);
    const flags = subject.hasEgressAllow ? SUBJECT_HAS_EGRESS_ALLOW : 0;
    writeSubject(subjectValues, i * subjectLayout.size, flags, subject.egressPosture);
  });

  const peerKeys = Buffer.alloc(peers.length * peerKeyLayout.size);
  const peerValues = Buffer.alloc(peers.length * ruleListLayout.size);
  peers.forEach((entry, i) => {
    writePeerKey(peerKeys, i * peerKeyLayout.size, entry.subject, entry.peer);
    writeRuleList(peerValues, i * ruleListLayout.size, entry.rules);
  });

  const cidrKeys = Buffer.alloc(cidrs.length * cidrKeyLayout.size);
  const cidrValues = Buffer.alloc(cidrs.length * ruleListLayout.size);
  cidrs.forEach((entry, i) => {
    writeCidrKey(cidrKeys, i * cidrKeyLayout.size, entry.subject, entry.prefixLen, entry.addr);
    writeRuleList(cidrValues, i * ruleListLayout.size, entry.rules);
  });

  const removedSubjects = [...removals.subjects];
  const removedPeers = [...removals.peerRules];
  const removedCidrs = [...removals.cidrRules];
  const subjectRemovals = Buffer.alloc(removedSubjects.length * 4);
  removedSubjects.forEach((id, i) => subjectRemovals.writeUInt32LE(id >>> 0, i * 4));
  const peerRemovals = Buffer.alloc(removedPeers.length * peerKeyLayout.size);
  removedPeers.forEach((key, i) =>
    writePeerKey(peerRemovals, i * peerKeyLayout.size, key.subject, key.peer),
  );
  const cidrRemovals = Buffer.alloc(removedCidrs.length * cidrKeyLayout.size);
  removedCidrs.forEach((key, i) =>
    writeCidrKey(cidrRemovals, i * cidrKeyLayout.size, key.subject, key.prefixLen, key.addr),
  );

  return {
    upserts: [
      { keys: subjectKeys, values: subjectValues },
      { keys: peerKeys, values: peerValues },
      { keys: cidrKeys, values: cidrValues },
    ],
    removals: [subjectRemovals, peerRemovals, cidrRemovals],
  };
}
