import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  encodeCidrKey,
  encodeIdentity,
  encodePeerKey,
  encodeRuleList,
  encodeSettings,
  encodeSubject,
  encodeU32,
  decodeIdentity,
  decodeSettings,
  KernelRuleEntry,
} from './codec';
import {
  cidrKeyLayout,
  DROP_REASON_COUNT,
  identityLayout,
  KernelAction,
  peerKeyLayout,
  ruleListLayout,
  settingsLayout,
  SIGIL_MAX_CIDR_KEYS,
  SIGIL_MAX_PEER_KEYS,
  SIGIL_MAX_SUBJECTS,
  subjectLayout,
  SUBJECT_HAS_EGRESS_ALLOW,
} from './layout';
import {
  BpfObject,
  closeFd,
  Link,
  mapCreate,
  mapDelete,
  mapLookup,
  mapUpdate,
  numPossibleCpus,
  RingBufferConsumer,
} from './native';

const BPF_MAP_TYPE_HASH = 1;
const BPF_MAP_TYPE_LPM_TRIE = 11;
const BPF_F_NO_PREALLOC = 1;
const BPF_ANY = 0;

/** A compiled rule set in the form the kernel maps take. */
export interface KernelRuleSet {
  subjects: Iterable<{ id: number; hasEgressAllow: boolean; egressPosture: KernelAction }>;
  peerRules: Iterable<{ subject: number; peer: number; rules: readonly KernelRuleEntry[] }>;
  /** prefixLen counts address bits (0..128) in the IPv4-mapped space. */
  cidrRules: Iterable<{ subject: number; prefixLen: number; addr: Buffer; rules: readonly KernelRuleEntry[] }>;
}

/**
 * Steps of another enforcer that run inside Datapath.applyRuleSet, so that its
 * rules switch together with the egress rules, on the same generation.
 */
export interface RuleSetHooks {
  /** Publishes under generation before the switch. A throw leaves the old generation in force. */
  beforeSwitch?(generation: number): void;
  /** Runs after the switch to generation; previous is the generation it replaced, 0 for none. */
  afterSwitch?(generation: number, previous: number): void;
}

/**
 * Maximum bytes of one ring-buffer batch handed to the agent, framing included: about 580
 * connect records, a few milliseconds of work between two event-loop turns. grpc-js completes
 * about one message of a stream per turn, and a WatchBatches message holds up to 1,024 events,
 * so a turn's events fit in one message.
 */
const EVENT_BATCH_BYTES = 64 * 1024;

/** Default bpffs directory of the pinned maps and links. */
export const DEFAULT_PIN_DIR = '/sys/fs/bpf/sigil';

/** Returns the default path of the linked BPF object, relative to the package root. */
export function defaultBpfObjectPath(): string {
  return join(__dirname, '..', '..', 'bpf', '.output', 'sigil.bpf.o');
}

const PROCESS_PROGRAMS = [
  { program: 'sigil_process_fork', kind: 'raw_tp', target: 'sched_process_fork' },
  { program: 'sigil_process_exit', kind: 'raw_tp', target: 'sched_process_exit' },
  { program: 'sigil_process_exec', kind: 'tracepoint', target: 'sched/sched_process_exec' },
] as const;

const SOCKET_PROGRAMS = [
  'sigil_post_bind4',
  'sigil_post_bind6',
  'sigil_connect4',
  'sigil_connect6',
] as const;

/**
 * The loaded Sigil BPF object: its programs, links and maps. Methods block
 * on bpf(2) calls, which return in microseconds; errors carry the operation
 * and the object name. One instance per agent.
 */
export class Datapath {
  private readonly object: BpfObject;
  private readonly links: Link[] = [];
  private consumer: RingBufferConsumer | null = null;
  private generation = 0;
  private readonly fds: Record<string, number> = {};
  /** Pinned links of an earlier agent, removed once this one has attached its own. */
  private readonly earlierLinkPins: string[] = [];

  private constructor(
    object: BpfObject,
    private readonly pinDir: string | null,
  ) {
    this.object = object;
  }

  /**
   * Opens and loads the BPF object (verifier included); nothing is attached
   * yet. With pinDir, maps are pinned under pinDir/maps, and maps an earlier
   * agent pinned there are reused with their contents: identities, the rule
   * set in force and its generation carry over a restart.
   */
  static load(path = defaultBpfObjectPath(), pinDir: string | null = null): Datapath {
    if (!existsSync(path)) throw new Error(`BPF object ${path} not found: run \`make\``);
    const object = new BpfObject(path);
    if (pinDir) {
      mkdirSync(join(pinDir, 'maps'), { recursive: true });
      mkdirSync(join(pinDir, 'links'), { recursive: true });
      // Maps libbpf makes for global data (.rodata and the like) are not shared state.
      for (const name of object.mapNames().filter((n) => !n.includes('.'))) {
        object.setMapPinPath(name, join(pinDir, 'maps', name));
      }
    }
    try {
      object.load();
    } catch (cause) {
      const hint = pinDir ? `; if the pinned maps in ${pinDir} come from another Sigil version, run \`sigil uninstall\`` : '';
      throw new Error(`${(cause as Error).message}${hint}`, { cause });
    }
    const datapath = new Datapath(object, pinDir);
    for (const name of object.mapNames()) datapath.fds[name] = object.mapFd(name);
    if (pinDir) {
      datapath.earlierLinkPins.push(...readdirSync(join(pinDir, 'links')).map((n) => join(pinDir, 'links', n)));
      const settings = mapLookup(datapath.fd('sigil_settings'), encodeU32(0), settingsLayout.size);
      if (settings) datapath.generation = decodeSettings(settings).generation;
    }
    return datapath;
  }

  /** Whether an earlier agent's programs were found pinned, so enforcement never stopped. */
  get adoptedPinnedState(): boolean {
    return this.earlierLinkPins.length > 0;
  }

  /** Keeps a new link attached beyond this process, when pinning is on. bpffs rejects '.' in names. */
  private keep(link: Link, program: string): Link {
    if (this.pinDir) link.pin(join(this.pinDir, 'links', `${program}-${process.pid}`));
    this.links.push(link);
    return link;
  }

  /**
   * Removes the pins of an earlier agent's links, which detaches its programs.
   * Called after this agent's programs are attached, so enforcement has no gap:
   * for a moment both sets run, and both decide from the same maps.
   */
  releaseEarlierLinks(): void {
    for (const pin of this.earlierLinkPins.splice(0)) rmSync(pin, { force: true });
  }

  private fd(name: string): number {
    const fd = this.fds[name];
    if (fd === undefined) throw new Error(`BPF object has no map ${name}`);
    return fd;
  }

  /** Attaches the fork, exit and exec programs that keep the identity map current. */
  attachProcessTracking(): void {
    for (const { program, kind, target } of PROCESS_PROGRAMS) {
      if (kind === 'raw_tp') this.keep(this.object.attachRawTracepoint(program, target), program);
      else {
        const [category, name] = target.split('/');
        this.keep(this.object.attachTracepoint(program, category, name), program);
      }
    }
  }

  /** Attaches the bind and connect programs to a cgroup v2 directory, normally the root. */
  attachSocketPrograms(cgroupPath: string): void {
    for (const program of SOCKET_PROGRAMS) {
      this.keep(this.object.attachCgroup(program, cgroupPath), program);
    }
  }

  /**
   * Starts delivering ring-buffer batches to onBatch on the JavaScript thread, one batch per
   * event-loop turn, so the sockets and files that onBatch writes to are served between two
   * batches. JavaScript keeps at most two batches: the one being handled and the next, which
   * hides the hand-over from the consumer thread. While onBatch falls behind, the consumer stops
   * reading, the ring buffer fills, and the BPF programs count the records they cannot write.
   */
  startEvents(onBatch: (batch: Buffer, count: number) => void): void {
    if (this.consumer) throw new Error('the event consumer is already running');
    const waiting: [Buffer, number][] = [];
    let scheduled = false;
    const handleOne = () => {
      scheduled = false;
      // Batches still waiting when close() stopped the consumer are dropped with it.
      if (this.consumer !== consumer) return;
      const next = waiting.shift();
      if (!next) return;
      try {
        onBatch(next[0], next[1]);
      } finally {
        this.consumer?.release();
        if (waiting.length > 0) schedule();
      }
    };
    const schedule = () => {
      if (scheduled) return;
      scheduled = true;
      setImmediate(handleOne);
    };
    const consumer = new RingBufferConsumer(
      this.fd('sigil_events'),
      (batch, count) => {
        waiting.push([batch, count]);
        schedule();
      },
      { maxBatchBytes: EVENT_BATCH_BYTES, maxUnreleasedBatches: 2 },
    );
    this.consumer = consumer;
    consumer.start();
  }

  /**
   * Sets the identity of a process. startTicks is its start time in clock ticks (field 22 of
   * /proc/<pid>/stat); when it is not given, the start time the kernel recorded at fork is kept.
   */
  setIdentity(tgid: number, id: number, flags = 0, startTicks?: bigint): void {
    const fd = this.fd('sigil_identities');
    const key = encodeU32(tgid);
    let ticks = startTicks;
    if (ticks === undefined) {
      const current = mapLookup(fd, key, identityLayout.size);
      ticks = current ? decodeIdentity(current).startTicks : 0n;
    }
    mapUpdate(fd, key, encodeIdentity(id, flags, ticks), BPF_ANY);
  }

  clearIdentity(tgid: number): void {
    mapDelete(this.fd('sigil_identities'), encodeU32(tgid));
  }

  getIdentity(tgid: number): { id: number; flags: number; startTicks: bigint } | null {
    const value = mapLookup(this.fd('sigil_identities'), encodeU32(tgid), identityLayout.size);
    return value ? decodeIdentity(value) : null;
  }

  /** Returns the kernel's drop counters summed over CPUs, indexed by drop reason. */
  readDrops(): bigint[] {
    const cpus = numPossibleCpus();
    const drops: bigint[] = [];
    for (let reason = 0; reason < DROP_REASON_COUNT; reason++) {
      const value = mapLookup(this.fd('sigil_drops'), encodeU32(reason), 8 * cpus);
      let total = 0n;
      for (let cpu = 0; value && cpu < cpus; cpu++) total += value.readBigUInt64LE(cpu * 8);
      drops.push(total);
    }
    return drops;
  }

  /**
   * Writes a rule set into fresh inner maps, then switches the programs to it
   * with one write of the settings map, so a connect reads either the whole
   * old set or the whole new one. On failure the old set stays in force.
   * Returns the new generation.
   */
  applyRuleSet(ruleSet: KernelRuleSet, settingsFlags = 0, hooks: RuleSetHooks = {}): number {
    const generation = this.generation + 1;
    const created: number[] = [];
    const outers = ['sigil_subjects', 'sigil_peer_rules', 'sigil_cidr_rules'];
    const inserted: string[] = [];
    try {
      const subjects = mapCreate({
        type: BPF_MAP_TYPE_HASH,
        name: 'sigil_subj_in',
        keySize: 4,
        valueSize: subjectLayout.size,
        maxEntries: SIGIL_MAX_SUBJECTS,
        flags: BPF_F_NO_PREALLOC,
      });
      created.push(subjects);
      for (const subject of ruleSet.subjects) {
        const flags = subject.hasEgressAllow ? SUBJECT_HAS_EGRESS_ALLOW : 0;
        mapUpdate(subjects, encodeU32(subject.id), encodeSubject(flags, subject.egressPosture), BPF_ANY);
      }

      const peers = mapCreate({
        type: BPF_MAP_TYPE_HASH,
        name: 'sigil_peer_in',
        keySize: peerKeyLayout.size,
        valueSize: ruleListLayout.size,
        maxEntries: SIGIL_MAX_PEER_KEYS,
        flags: BPF_F_NO_PREALLOC,
      });
      created.push(peers);
      for (const entry of ruleSet.peerRules) {
        mapUpdate(peers, encodePeerKey(entry.subject, entry.peer), encodeRuleList(entry.rules), BPF_ANY);
      }

      const cidrs = mapCreate({
        type: BPF_MAP_TYPE_LPM_TRIE,
        name: 'sigil_cidr_in',
        keySize: cidrKeyLayout.size,
        valueSize: ruleListLayout.size,
        maxEntries: SIGIL_MAX_CIDR_KEYS,
        flags: BPF_F_NO_PREALLOC,
      });
      created.push(cidrs);
      for (const entry of ruleSet.cidrRules) {
        const key = encodeCidrKey(entry.subject, entry.prefixLen, entry.addr);
        mapUpdate(cidrs, key, encodeRuleList(entry.rules), BPF_ANY);
      }

      // Publish the inner maps under the new generation, then switch to it.
      const key = encodeU32(generation);
      created.forEach((inner, i) => {
        mapUpdate(this.fd(outers[i]), key, encodeU32(inner), BPF_ANY);
        inserted.push(outers[i]);
      });
      hooks.beforeSwitch?.(generation);
      mapUpdate(this.fd('sigil_settings'), encodeU32(0), encodeSettings(generation, settingsFlags), BPF_ANY);
    } catch (cause) {
      for (const outer of inserted) mapDelete(this.fd(outer), encodeU32(generation));
      throw new Error(`apply rule set generation ${generation}: ${(cause as Error).message}`, { cause });
    } finally {
      // The outer maps hold their own references to the inner maps.
      for (const fd of created) closeFd(fd);
    }

    // Retire the previous generation. A program still running on it keeps its
    // inner map alive until the kernel's RCU grace period ends.
    if (this.generation > 0) {
      for (const outer of outers) mapDelete(this.fd(outer), encodeU32(this.generation));
    }
    const previous = this.generation;
    this.generation = generation;
    hooks.afterSwitch?.(generation, previous);
    return generation;
  }

  get currentGeneration(): number {
    return this.generation;
  }

  /**
   * Stops the consumer and releases the programs. Pinned links stay attached
   * and keep enforcing after this call; without pinning, enforcement ends.
   */
  close(): void {
    this.consumer?.stop();
    this.consumer = null;
    for (const link of this.links.splice(0)) link.destroy();
    this.object.close();
  }
}

/**
 * Removes every pinned map and link under pinDir, which detaches the
 * programs of every agent that pinned there. Returns whether anything was
 * pinned. An agent still running keeps its own links until it exits.
 */
export function removePinnedState(pinDir: string = DEFAULT_PIN_DIR): boolean {
  if (!existsSync(pinDir)) return false;
  rmSync(pinDir, { recursive: true, force: true });
  return true;
}
