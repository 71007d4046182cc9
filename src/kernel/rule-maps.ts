/**
 * The inner maps of one egress rule-set generation (subjects, peer rules, CIDR rules), and rule
 * sets and changes to them encoded for mapUpdateMany and mapDeleteMany. Datapath publishes these
 * maps in the outer maps under a generation.
 */
import { endianness } from 'node:os';
import { KernelRuleEntry, writeCidrKey, writeSubject } from './codec';
import {
  cidrKeyLayout,
  KernelAction,
  peerKeyLayout,
  ruleLayout,
  ruleListLayout,
  SIGIL_MAX_CIDR_KEYS,
  SIGIL_MAX_PEER_KEYS,
  SIGIL_MAX_SUBJECTS,
  SIGIL_RULES_PER_KEY,
  subjectLayout,
  SUBJECT_HAS_EGRESS_ALLOW,
  SUBJECT_NO_PEER_RULES,
} from './layout';
import { closeFd, mapCreate, mapDeleteMany, MapFlag, MapType, mapUpdateMany } from './native';

/** Value of the subjects map for one identity id. */
export interface KernelSubject {
  id: number;
  hasEgressAllow: boolean;
  egressPosture: KernelAction;
  /**
   * False when the rule set has no peer-rule entry of this subject, so the connect programs skip
   * the peer-rule lookup. Absent or true, they look the entry up.
   */
  hasPeerRules?: boolean;
  /**
   * The prefix lengths (0..128) of the subject's CIDR entries. The connect programs look up
   * only these lengths, so every CIDR entry of the subject needs its length here.
   */
  cidrPrefixLengths: readonly number[];
}

/** An entry of the peer-rule map. */
export interface KernelPeerRules {
  subject: number;
  peer: number;
  rules: readonly KernelRuleEntry[];
}

/** An entry of the CIDR-rule map; prefixLen counts address bits (0..128), IPv4-mapped. */
export interface KernelCidrRules {
  subject: number;
  prefixLen: number;
  addr: Buffer;
  rules: readonly KernelRuleEntry[];
}

/** The peer-rule entries of one subject: `lists[i]` is the rule list for the peer `peers[i]`. */
export interface KernelSubjectPeerRules {
  subject: number;
  peers: ArrayLike<number>;
  lists: readonly (readonly KernelRuleEntry[])[];
}

/** A compiled rule set in the form the kernel maps take. */
export interface KernelRuleSet {
  subjects: Iterable<KernelSubject>;
  peerRules: Iterable<KernelPeerRules>;
  /** More peer-rule entries, grouped by subject, which spares an object per entry. */
  peerRulesBySubject?: Iterable<KernelSubjectPeerRules>;
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
        MapType.HASH,
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

/** Returns the `struct sigil_subject` flags of a subject. */
export function subjectFlags(subject: KernelSubject): number {
  let flags = subject.hasEgressAllow ? SUBJECT_HAS_EGRESS_ALLOW : 0;
  if (subject.hasPeerRules === false) flags |= SUBJECT_NO_PEER_RULES;
  return flags;
}

export function encodeChanges(changes: KernelRuleSetChanges): EncodedChanges {
  const { upserts, removals } = changes;
  const subjects = [...upserts.subjects];
  const cidrs = [...upserts.cidrRules];

  const subjectKeys = Buffer.alloc(subjects.length * 4);
  const subjectValues = Buffer.alloc(subjects.length * subjectLayout.size);
  subjects.forEach((subject, i) => {
    subjectKeys.writeUInt32LE(subject.id >>> 0, i * 4);
    const flags = subjectFlags(subject);
    const { egressPosture, cidrPrefixLengths } = subject;
    writeSubject(subjectValues, i * subjectLayout.size, flags, egressPosture, cidrPrefixLengths);
  });

  const cidrKeys = Buffer.alloc(cidrs.length * cidrKeyLayout.size);
  const cidrValues = new Uint32Array(cidrs.length * LIST_WORDS);
  cidrs.forEach((entry, i) => {
    writeCidrKey(cidrKeys, i * cidrKeyLayout.size, entry.subject, entry.prefixLen, entry.addr);
    writeRuleListWords(cidrValues, i * LIST_WORDS, entry.rules);
  });

  const removedSubjects = [...removals.subjects];
  const removedPeers = [...removals.peerRules];
  const removedCidrs = [...removals.cidrRules];
  const subjectRemovals = Buffer.alloc(removedSubjects.length * 4);
  removedSubjects.forEach((id, i) => subjectRemovals.writeUInt32LE(id >>> 0, i * 4));
  const peerRemovals = new Uint32Array(removedPeers.length * PEER_KEY_WORDS);
  removedPeers.forEach((key, i) => {
    peerRemovals[i * PEER_KEY_WORDS] = key.subject;
    peerRemovals[i * PEER_KEY_WORDS + 1] = key.peer;
  });
  const cidrRemovals = Buffer.alloc(removedCidrs.length * cidrKeyLayout.size);
  removedCidrs.forEach((key, i) =>
    writeCidrKey(cidrRemovals, i * cidrKeyLayout.size, key.subject, key.prefixLen, key.addr),
  );

  return {
    upserts: [
      { keys: subjectKeys, values: subjectValues },
      encodePeerRules(upserts),
      { keys: cidrKeys, values: bytesOf(cidrValues) },
    ],
    removals: [subjectRemovals, bytesOf(peerRemovals), cidrRemovals],
  };
}

// The peer-rule keys and the rule lists are written as 32-bit words in host byte order, which
// is the byte order of the kernel's structs. These checks pin the word positions used below to
// the layouts that test/kernel/layout.test.ts checks against bpf/include/sigil.h.
const PEER_KEY_WORDS = peerKeyLayout.size / 4;
const LIST_WORDS = ruleListLayout.size / 4;
const LIST_RULES_WORD = ruleListLayout.offsetOf('rules') / 4;
const RULE_WORDS = ruleLayout.size / 4;
const LITTLE_ENDIAN = endianness() === 'LE';
if (
  peerKeyLayout.offsetOf('subject') !== 0 ||
  peerKeyLayout.offsetOf('peer') !== 4 ||
  ruleListLayout.offsetOf('count') !== 0 ||
  ruleListLayout.size % 4 !== 0 ||
  ruleListLayout.offsetOf('rules') % 4 !== 0 ||
  ruleLayout.size !== 12 ||
  ruleLayout.offsetOf('port_lo') !== 0 ||
  ruleLayout.offsetOf('port_hi') !== 2 ||
  ruleLayout.offsetOf('protocol') !== 4 ||
  ruleLayout.offsetOf('action') !== 5 ||
  ruleLayout.offsetOf('rule_index') !== 8
) {
  throw new Error(
    'src/kernel/rule-maps.ts: the word encoding of sigil_peer_key and sigil_rule_list does not ' +
      'match src/kernel/layout.ts; update writeRuleListWords and encodePeerRules',
  );
}

/** Returns the bytes of a word array, without a copy. */
function bytesOf(words: Uint32Array): Buffer {
  return Buffer.from(words.buffer, words.byteOffset, words.byteLength);
}

/**
 * Writes a `struct sigil_rule_list` at word `at` of a zero-filled array. Throws RangeError for a
 * list longer than SIGIL_RULES_PER_KEY and for a field out of its type's range.
 */
function writeRuleListWords(words: Uint32Array, at: number, rules: readonly KernelRuleEntry[]): void {
  if (rules.length > SIGIL_RULES_PER_KEY) {
    throw new RangeError(`a rule list can contain at most ${SIGIL_RULES_PER_KEY} rules, got ${rules.length}`);
  }
  words[at] = rules.length;
  let word = at + LIST_RULES_WORD;
  for (let i = 0; i < rules.length; i++) {
    const { portLo, portHi, protocol, action, ruleIndex } = rules[i];
    if (
      (portLo & 0xffff) !== portLo ||
      (portHi & 0xffff) !== portHi ||
      (protocol & 0xff) !== protocol ||
      (action & 0xff) !== action
    ) {
      throw new RangeError(
        `rule ${i} of a rule list: ports ${portLo}-${portHi} must be 0-65535 and protocol ` +
          `${protocol} and action ${action} 0-255`,
      );
    }
    // port_lo, port_hi: two u16; protocol, action: two u8 and a u16 of padding; rule_index.
    words[word] = LITTLE_ENDIAN ? portLo | (portHi << 16) : (portLo << 16) | portHi;
    words[word + 1] = LITTLE_ENDIAN ? protocol | (action << 8) : (protocol << 24) | (action << 16);
    words[word + 2] = ruleIndex;
    word += RULE_WORDS;
  }
}

/** Encodes the peer-rule entries of a rule set, both the single and the grouped ones. */
function encodePeerRules(ruleSet: KernelRuleSet): EncodedEntries {
  const single = [...ruleSet.peerRules];
  const grouped = ruleSet.peerRulesBySubject ? [...ruleSet.peerRulesBySubject] : [];
  let count = single.length;
  for (const group of grouped) count += group.peers.length;

  const keys = new Uint32Array(count * PEER_KEY_WORDS);
  const values = new Uint32Array(count * LIST_WORDS);
  let entry = 0;
  for (const { subject, peer, rules } of single) {
    keys[entry * PEER_KEY_WORDS] = subject;
    keys[entry * PEER_KEY_WORDS + 1] = peer;
    writeRuleListWords(values, entry * LIST_WORDS, rules);
    entry++;
  }
  for (const { subject, peers, lists } of grouped) {
    for (let i = 0; i < peers.length; i++) {
      keys[entry * PEER_KEY_WORDS] = subject;
      keys[entry * PEER_KEY_WORDS + 1] = peers[i];
      writeRuleListWords(values, entry * LIST_WORDS, lists[i]);
      entry++;
    }
  }
  return { keys: bytesOf(keys), values: bytesOf(values) };
}
