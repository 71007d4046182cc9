import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  encodeIdentity,
  encodeSettings,
  encodeU32,
  decodeIdentity,
  decodeSettings,
} from './codec';
import { DROP_REASON_COUNT, identityLayout, settingsLayout } from './layout';
import {
  BpfObject,
  Link,
  mapDelete,
  mapGetNextKey,
  mapLookup,
  mapUpdate,
  numPossibleCpus,
  RingBufferConsumer,
  ringBufferFill,
  ringBufferPositions,
  RingBufferPositions,
} from './native';
import {
  closeInnerMaps,
  createInnerMaps,
  EncodedChanges,
  encodeChanges,
  encodeRuleSet,
  InnerMaps,
  KernelRuleSet,
  KernelRuleSetChanges,
  writeChanges,
} from './rule-maps';

export { KernelRuleSet, KernelRuleSetChanges } from './rule-maps';

const BPF_ANY = 0;
const OUTER_MAPS = ['sigil_subjects', 'sigil_peer_rules', 'sigil_cidr_rules'] as const;

/**
 * Inner maps kept ready for the next generation, published under it in the outer maps, which no
 * program reads until the settings map switches to that generation. `behind` lists the changes
 * that the active maps have and these maps do not yet.
 */
interface Standby {
  maps: InnerMaps | null;
  behind: EncodedChanges[];
  /** Generation whose outer entries still point at these maps, from when they were active. */
  retiredGeneration: number | null;
  published: boolean;
  /** True for new, empty maps prepared before the first applyRuleSet, which writes into them. */
  empty: boolean;
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
 * The kernel's ring buffers: `process` carries fork, exec and exit records,
 * `events` the decision records (connect, bind, and the LSM decisions).
 */
export type EventRing = 'process' | 'events';

const RING_MAPS: Record<EventRing, string> = {
  process: 'sigil_process_events',
  events: 'sigil_events',
};

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
  { program: 'sigil_cgroup_attach', kind: 'tracepoint', target: 'cgroup/cgroup_attach_task' },
] as const;

const SOCKET_PROGRAMS = [
  'sigil_post_bind4',
  'sigil_post_bind6',
  'sigil_connect4',
  'sigil_connect6',
] as const;
const CONNECT_PROGRAMS: readonly string[] = ['sigil_connect4', 'sigil_connect6'];
const ACCEPT_TRACEPOINTS = [
  { program: 'sigil_accept', name: 'sys_exit_accept' },
  { program: 'sigil_accept4', name: 'sys_exit_accept4' },
] as const;

/**
 * The loaded Sigil BPF object: its programs, links and maps. Methods block
 * on bpf(2) calls, which return in microseconds; errors carry the operation
 * and the object name. One instance per agent.
 */
export class Datapath {
  private readonly object: BpfObject;
  private readonly links: Link[] = [];
  private readonly consumers: RingBufferConsumer[] = [];
  private generation = 0;
  /** Inner maps of the generation in force, when this Datapath applied it. */
  private active: InnerMaps | null = null;
  private standby: Standby | null = null;
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
      datapath.removeOtherGenerations();
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

  /**
   * Attaches the bind and connect programs to a cgroup v2 directory, normally the root. With
   * connect false only the bind programs are attached, for a node where the BPF LSM
   * socket_connect hook decides connects instead.
   */
  attachSocketPrograms(cgroupPath: string, options: { connect?: boolean } = {}): void {
    const connect = options.connect ?? true;
    for (const program of SOCKET_PROGRAMS) {
      if (!connect && CONNECT_PROGRAMS.includes(program)) continue;
      this.keep(this.object.attachCgroup(program, cgroupPath), program);
    }
  }

  /**
   * Attaches the programs of accept records: the sys_exit tracepoints of accept() and accept4(),
   * and the raw tracepoint on TCP state changes that records the clients of loopback
   * connections. The client program goes first, so no accept finds its entry missing. Needs
   * tracefs mounted.
   */
  attachAcceptTracking(): void {
    const state = 'sigil_tcp_state';
    this.keep(this.object.attachRawTracepoint(state, 'inet_sock_set_state'), state);
    for (const { program, name } of ACCEPT_TRACEPOINTS) {
      this.keep(this.object.attachTracepoint(program, 'syscalls', name), program);
    }
  }

  /**
   * Starts delivering ring-buffer batches to onBatch on the JavaScript thread, one consumer
   * thread per ring and one batch per event-loop turn, so the sockets and files that onBatch
   * writes to are served between two batches. Records of different rings arrive in no fixed
   * order relative to each other. JavaScript keeps at most two batches of a ring: the one being
   * handled and the next, which hides the hand-over from the consumer thread. While onBatch
   * falls behind, the consumer stops reading, the ring buffer fills, and the BPF programs count
   * the records they cannot write.
   */
  startEvents(
    onBatch: (batch: Buffer, count: number) => void,
    rings: readonly EventRing[] = ['process', 'events'],
  ): void {
    if (this.consumers.length > 0) throw new Error('the event consumers are already running');
    for (const ring of rings) {
      const waiting: [Buffer, number][] = [];
      let scheduled = false;
      const handleOne = () => {
        scheduled = false;
        // Batches still waiting when close() stopped the consumer are dropped with it.
        if (!this.consumers.includes(consumer)) return;
        const next = waiting.shift();
        if (!next) return;
        try {
          onBatch(next[0], next[1]);
        } finally {
          consumer.release();
          if (waiting.length > 0) schedule();
        }
      };
      const schedule = () => {
        if (scheduled) return;
        scheduled = true;
        setImmediate(handleOne);
      };
      const consumer: RingBufferConsumer = new RingBufferConsumer(
        this.fd(RING_MAPS[ring]),
        (batch, count) => {
          waiting.push([batch, count]);
          schedule();
        },
        { maxBatchBytes: EVENT_BATCH_BYTES, maxUnreleasedBatches: 2 },
      );
      this.consumers.push(consumer);
      consumer.start();
    }
  }

  /** Returns the consumer and producer positions of one ring buffer. */
  ringPositions(ring: EventRing): RingBufferPositions {
    return ringBufferPositions(this.fd(RING_MAPS[ring]));
  }

  /** Returns the fill of each ring buffer, from 0 to 1: data written and not yet consumed. */
  ringFill(): Record<EventRing, number> {
    return {
      process: ringBufferFill(this.fd(RING_MAPS.process)),
      events: ringBufferFill(this.fd(RING_MAPS.events)),
    };
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
   * Writes a rule set into empty inner maps, then switches the programs to it
   * with one write of the settings map, so a connect reads either the whole
   * old set or the whole new one. On failure the old set stays in force.
   * Returns the new generation. The previous generation stays in the outer
   * maps until prepareStandby or the next apply retires it.
   *
   * The empty maps are those that prepareStandby published before any rule set was applied.
   * Without them, this call creates and publishes new ones, and each of its three outer-map
   * writes waits for an RCU grace period.
   */
  applyRuleSet(ruleSet: KernelRuleSet, settingsFlags = 0, hooks: RuleSetHooks = {}): number {
    const generation = this.generation + 1;
    const encoded = encodeRuleSet(ruleSet);
    const standby = this.standby;
    this.standby = null;
    const prepared = standby?.empty && standby.published ? standby.maps : null;
    // A published standby's entries under this generation are replaced by the new maps.
    if (standby?.maps && !prepared) closeInnerMaps(standby.maps);
    let maps: InnerMaps | null = prepared;
    try {
      if (!prepared) {
        if (standby?.retiredGeneration) this.unpublish(standby.retiredGeneration);
        maps = createInnerMaps();
      }
      writeChanges(maps!, encoded);
      if (!prepared) this.publish(maps!, generation);
      this.switchTo(generation, settingsFlags, hooks);
    } catch (cause) {
      if (maps) {
        this.unpublish(generation);
        closeInnerMaps(maps);
      }
      throw new Error(`apply rule set generation ${generation}: ${(cause as Error).message}`, { cause });
    }

    // The previous generation is retired by prepareStandby, after a grace period: a program
    // that read the old generation from the settings map may still look up its inner maps.
    // The outer maps keep those maps alive until then.
    const previous = this.generation;
    if (this.active) closeInnerMaps(this.active);
    this.active = maps;
    // The standby starts empty and catches up with the whole set when it is prepared.
    this.standby = {
      maps: null,
      behind: [encoded],
      retiredGeneration: previous > 0 ? previous : null,
      published: false,
      empty: false,
    };
    this.generation = generation;
    hooks.afterSwitch?.(generation, previous);
    return generation;
  }

  /**
   * Applies the changes that turn the rule set in force into the next one, and returns the new
   * generation. The changes go into the standby inner maps, which are already published under
   * the next generation and which no program reads. Then one write of the settings map switches
   * the programs to them, so a connect reads either the whole old set or the whole new one, as
   * with applyRuleSet. The cost is the changed entries only, once prepareStandby has
   * run since the previous apply; otherwise this call runs it first. On failure the old set
   * stays in force. Throws when no rule set was applied by this Datapath yet.
   */
  applyRuleSetChanges(
    changes: KernelRuleSetChanges,
    settingsFlags = 0,
    hooks: RuleSetHooks = {},
  ): number {
    if (!this.canApplyChanges) {
      throw new Error(
        'apply rule set changes: no rule set to change (none applied by this agent, or a ' +
          'failed apply discarded the standby maps); call applyRuleSet',
      );
    }
    const generation = this.generation + 1;
    const encoded = encodeChanges(changes);
    try {
      this.prepareStandby();
      writeChanges(this.standby!.maps!, encoded);
      this.switchTo(generation, settingsFlags, hooks);
    } catch (cause) {
      // The standby maps may be half written, so they are dropped, and the next apply is whole.
      this.discardStandby();
      throw new Error(`apply rule set generation ${generation}: ${(cause as Error).message}`, { cause });
    }

    // The maps in force until now become the standby. Programs may still read them until a
    // grace period has passed, so prepareStandby changes them only after one.
    const previous = this.generation;
    const next = this.standby!.maps!;
    this.standby = {
      maps: this.active,
      behind: [encoded],
      retiredGeneration: previous,
      published: false,
      empty: false,
    };
    this.active = next;
    this.generation = generation;
    hooks.afterSwitch?.(generation, previous);
    return generation;
  }

  /**
   * Prepares the standby maps for the next applyRuleSetChanges: publishes them under the next
   * generation, retires the generation they served before, and writes the changes they lack.
   * Each outer-map write waits for an RCU grace period in the kernel (several milliseconds),
   * so the agent calls this after an apply, when the new rules are already in force.
   * Before the first applyRuleSet, publishes empty maps for it instead, which takes those
   * waits out of the first apply. Does nothing when the standby is ready.
   */
  prepareStandby(): void {
    if (!this.active) {
      this.prepareEmptyStandby();
      return;
    }
    const standby = this.standby;
    if (!standby) return;
    if (standby.published && standby.behind.length === 0) return;
    try {
      if (!standby.maps) standby.maps = createInnerMaps();
      if (!standby.published) {
        // The kernel waits for a grace period after each outer-map write, so once publish
        // returns no program still reads these maps through the generation they served before.
        this.publish(standby.maps, this.generation + 1);
        standby.published = true;
      }
      if (standby.retiredGeneration !== null) {
        this.unpublish(standby.retiredGeneration);
        standby.retiredGeneration = null;
      }
      while (standby.behind.length > 0) {
        writeChanges(standby.maps, standby.behind[0]);
        standby.behind.shift();
      }
    } catch (error) {
      this.discardStandby();
      throw new Error(`prepare standby rule maps: ${(error as Error).message}`, { cause: error });
    }
  }

  /** Creates empty inner maps and publishes them under the next generation, for applyRuleSet. */
  private prepareEmptyStandby(): void {
    if (this.standby?.empty && this.standby.published) return;
    this.discardStandby();
    const maps = createInnerMaps();
    try {
      this.publish(maps, this.generation + 1);
    } catch (error) {
      closeInnerMaps(maps);
      throw new Error(`prepare empty rule maps: ${(error as Error).message}`, { cause: error });
    }
    this.standby = { maps, behind: [], retiredGeneration: null, published: true, empty: true };
  }

  /** Whether applyRuleSetChanges can apply changes to the rule set in force. */
  get canApplyChanges(): boolean {
    return this.active !== null && this.standby !== null;
  }

  /**
   * Removes the outer-map entries of every generation but the one in force, such as the standby
   * maps of an earlier agent, so the outer maps have room for the next generations.
   */
  private removeOtherGenerations(): void {
    for (const outer of OUTER_MAPS) {
      const stale: Buffer[] = [];
      for (let key = mapGetNextKey(this.fd(outer), null, 4); key; key = mapGetNextKey(this.fd(outer), key, 4)) {
        if (key.readUInt32LE(0) !== this.generation) stale.push(key);
      }
      for (const key of stale) mapDelete(this.fd(outer), key);
    }
  }

  /** Publishes inner maps under generation in the outer maps; on failure removes what it wrote. */
  private publish(maps: InnerMaps, generation: number): void {
    const inners = [maps.subjects, maps.peerRules, maps.cidrRules];
    const key = encodeU32(generation);
    const inserted: string[] = [];
    try {
      OUTER_MAPS.forEach((outer, i) => {
        mapUpdate(this.fd(outer), key, encodeU32(inners[i]), BPF_ANY);
        inserted.push(outer);
      });
    } catch (error) {
      for (const outer of inserted) mapDelete(this.fd(outer), key);
      throw error;
    }
  }

  private unpublish(generation: number): void {
    for (const outer of OUTER_MAPS) mapDelete(this.fd(outer), encodeU32(generation));
  }

  /** Runs the hooks' beforeSwitch and switches the programs to generation. */
  private switchTo(generation: number, settingsFlags: number, hooks: RuleSetHooks): void {
    hooks.beforeSwitch?.(generation);
    mapUpdate(this.fd('sigil_settings'), encodeU32(0), encodeSettings(generation, settingsFlags), BPF_ANY);
  }

  /** Drops the standby maps and removes their outer entries. Deleting a missing entry is fine. */
  private discardStandby(): void {
    const standby = this.standby;
    this.standby = null;
    if (!standby) return;
    if (standby.published) this.unpublish(this.generation + 1);
    if (standby.retiredGeneration !== null) this.unpublish(standby.retiredGeneration);
    if (standby.maps) closeInnerMaps(standby.maps);
  }

  get currentGeneration(): number {
    return this.generation;
  }

  /**
   * Stops the consumer and releases the programs. Pinned links stay attached
   * and keep enforcing after this call; without pinning, enforcement ends.
   */
  close(): void {
    for (const consumer of this.consumers.splice(0)) consumer.stop();
    // The outer maps hold their own references to the inner maps they publish.
    if (this.active) closeInnerMaps(this.active);
    if (this.standby?.maps) closeInnerMaps(this.standby.maps);
    this.active = null;
    this.standby = null;
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
