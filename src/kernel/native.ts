/**
 * Typed wrapper of the native addon (build/Release/sigil_native.node, sources in native/).
 *
 * The addon is thin: it owns libbpf handles, makes system calls and moves bytes. This module
 * checks every argument before the native call and throws TypeError or RangeError naming the
 * argument, so the native side only receives values of the right type and range.
 *
 * Errors from the kernel or libbpf are `NativeSystemError`s: the message reads
 * `<operation> <name>: <strerror> (errno N)`, and `errno` and `code` (such as 'EPERM') are set.
 * Calls on a closed object or destroyed link throw a plain Error naming that state.
 *
 * Every function and method is synchronous and blocks the calling thread for the system calls
 * it makes. Most make one or two bpf(2) calls; the slower ones (load and the probes) say so
 * on their symbol. Only RingBufferConsumer and trimFileCache run work on another thread.
 *
 * Calls into the kernel need root, or CAP_BPF with CAP_PERFMON and CAP_NET_ADMIN; mount needs
 * CAP_SYS_ADMIN.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';

/**
 * Path of the compiled addon. From src/kernel (vitest) and dist/kernel (tsc) alike, two levels up
 * is the package root.
 */
export const NATIVE_ADDON_PATH = path.join(
  __dirname,
  '..',
  '..',
  'build',
  'Release',
  'sigil_native.node',
);

/** Error thrown for a failed system call or libbpf call. */
export interface NativeSystemError extends Error {
  /** Positive errno value, or a libbpf error code from 4000 up. */
  errno: number;
  /** Symbolic name such as 'EPERM', 'ENOTSUPP' or 'LIBBPF_ERRNO__VERIFY'; 'UNKNOWN' otherwise. */
  code: string;
}

/** Returns whether `error` is an error thrown by the addon for a failed system call. */
export function isNativeSystemError(error: unknown): error is NativeSystemError {
  return (
    error instanceof Error &&
    typeof (error as Partial<NativeSystemError>).errno === 'number' &&
    typeof (error as Partial<NativeSystemError>).code === 'string'
  );
}

/** Program type names accepted by probeProgramType and probeHelper. */
export type ProgramTypeName =
  | 'cgroup_sock_addr'
  | 'cgroup_sock'
  | 'cgroup_skb'
  | 'cgroup_sockopt'
  | 'sock_ops'
  | 'tracepoint'
  | 'raw_tracepoint'
  | 'socket_filter'
  | 'lsm'
  | 'tracing'
  | 'kprobe';

/** Program types that the probes accept. */
export const PROGRAM_TYPE_NAMES: readonly ProgramTypeName[] = [
  'cgroup_sock_addr',
  'cgroup_sock',
  'cgroup_skb',
  'cgroup_sockopt',
  'sock_ops',
  'tracepoint',
  'raw_tracepoint',
  'socket_filter',
  'lsm',
  'tracing',
  'kprobe',
];

/** Map type names accepted by probeMapType. */
export type MapTypeName =
  | 'hash'
  | 'array'
  | 'percpu_hash'
  | 'percpu_array'
  | 'lru_hash'
  | 'ringbuf'
  | 'array_of_maps'
  | 'hash_of_maps'
  | 'lpm_trie'
  | 'sk_storage'
  | 'task_storage'
  | 'inode_storage';

/** Map types that probeMapType accepts. */
export const MAP_TYPE_NAMES: readonly MapTypeName[] = [
  'hash',
  'array',
  'percpu_hash',
  'percpu_array',
  'lru_hash',
  'ringbuf',
  'array_of_maps',
  'hash_of_maps',
  'lpm_trie',
  'sk_storage',
  'task_storage',
  'inode_storage',
];

/** Map types (enum bpf_map_type in linux/bpf.h), for mapCreate and MapInfo.type. */
export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  ARRAY_OF_MAPS: 12,
  HASH_OF_MAPS: 13,
  SK_STORAGE: 24,
  RINGBUF: 27,
  TASK_STORAGE: 29,
} as const;

/** Flags of mapUpdate (linux/bpf.h). */
export const MapUpdateFlag = {
  /** Create the entry or replace it. */
  ANY: 0,
  /** Create the entry; fail with EEXIST if it exists. */
  NOEXIST: 1,
  /** Replace the entry; fail with ENOENT if it does not exist. */
  EXIST: 2,
  /** Update a value that contains a bpf_spin_lock while holding that lock. */
  LOCK: 4,
} as const;

/** Map creation flags (map_flags in linux/bpf.h), for mapCreate. */
export const MapFlag = {
  NO_PREALLOC: 1,
  RDONLY_PROG: 1 << 7,
  WRONLY_PROG: 1 << 8,
  /** The inner map of a map-in-map may have a different max_entries than the template. */
  INNER_MAP: 1 << 12,
} as const;

/** mount(2) flags (sys/mount.h). */
export const MountFlag = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  REMOUNT: 32,
  BIND: 4096,
  REC: 16384,
  PRIVATE: 1 << 18,
  SHARED: 1 << 20,
  RELATIME: 1 << 21,
} as const;

/** Result of a feature probe. */
export interface ProbeResult {
  supported: boolean;
  /** strerror text when the probe itself failed, for example for helper probes of lsm programs. */
  error?: string;
}

/** Definition of a map as the BPF object declares it (before load) or created it (after). */
export interface MapInfo {
  /** A MapType value. */
  type: number;
  keySize: number;
  /** Size of one value; per-CPU maps return more bytes per lookup (see perCpuValueSize). */
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** Options of mapCreate. */
export interface MapCreateOptions {
  /** A MapType value. */
  type: number;
  /** Up to 15 characters of [A-Za-z0-9_.]; may be empty. */
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** MapFlag bits; default 0. */
  flags?: number;
  /** For ARRAY_OF_MAPS and HASH_OF_MAPS: a map whose type and sizes the inner maps must match. */
  innerMapFd?: number;
}

/** Counters of a RingBufferConsumer. */
export interface RingBufferStats {
  /** Records copied out of the ring buffer. */
  records: number;
  /** Batches queued for onBatch. */
  batches: number;
  /** Record bytes copied, without framing. */
  bytes: number;
  /** Records consumed from the ring buffer but discarded by stop() before onBatch received them. */
  discardedRecords: number;
}

/** Options of RingBufferConsumer. */
export interface RingBufferConsumerOptions {
  /**
   * Maximum size of one batch in bytes, framing included, from 16 to 2^30; default 1 MiB. A record
   * whose frame is larger goes out alone in an oversized batch.
   */
  maxBatchBytes?: number;
  /**
   * Maximum time in ms between two reads of the ring buffer when no wakeup arrives, from 1 to
   * 60000; default 100. Records submitted with BPF_RB_NO_WAKEUP wait up to this long.
   */
  pollTimeoutMs?: number;
  /** Maximum batches waiting for onBatch before the thread blocks, 1 to 65536; default 64. */
  maxQueuedBatches?: number;
  /**
   * Release mode, from 1 to 65536: the thread hands over at most this many batches that have not
   * been released with release(), and stops reading the ring buffer while it waits. 0 (the
   * default) turns it off. Node runs queued onBatch calls back to back in one event-loop turn;
   * calling release() from setImmediate after each batch lets I/O run between batches.
   */
  maxUnreleasedBatches?: number;
  /**
   * Receives a failure of the consumer thread, after which the thread has ended; call stop() to
   * release the consumer. Without onError, the failure is thrown as an uncaught exception.
   */
  onError?: (error: NativeSystemError) => void;
}

/** Positions of a ring buffer, in bytes written since the map was created. */
export interface RingBufferPositions {
  consumerPosition: bigint;
  /** Includes records reserved but not yet submitted. */
  producerPosition: bigint;
  /** Data area size in bytes (the map's max_entries). */
  size: number;
}

/** Receives one batch: `count` framed records (see batchRecords). */
export type BatchHandler = (batch: Buffer, count: number) => void;

interface NativeLink {
  pin(path: string): void;
  unpin(): void;
  destroy(): void;
  readonly fd: number;
  readonly pinPath: string | null;
  readonly description: string;
}

interface NativeBpfObject {
  load(): void;
  programNames(): string[];
  mapNames(): string[];
  mapFd(name: string): number;
  mapInfo(name: string): MapInfo;
  setMapPinPath(name: string, path: string): void;
  pinMap(name: string, path: string): void;
  unpinMap(name: string, path?: string): void;
  setProgramAutoload(name: string, autoload: boolean): void;
  attachCgroup(programName: string, cgroupPath: string): NativeLink;
  attachTracepoint(programName: string, category: string, name: string): NativeLink;
  attachRawTracepoint(programName: string, tracepointName: string): NativeLink;
  attach(programName: string): NativeLink;
  close(): void;
  readonly path: string;
  readonly loaded: boolean;
  readonly closed: boolean;
}

interface NativeRingBufferConsumer {
  start(): void;
  stop(): void;
  release(): void;
  stats(): RingBufferStats;
  readonly running: boolean;
}

interface NativeAddon {
  BpfObject: new (path: string) => NativeBpfObject;
  RingBufferConsumer: new (
    mapFd: number,
    onBatch: BatchHandler,
    options: RingBufferConsumerOptions,
  ) => NativeRingBufferConsumer;
  probeProgramType(type: string): ProbeResult;
  probeMapType(type: string): ProbeResult;
  probeHelper(progType: string, helperName: string): ProbeResult;
  mapUpdate(fd: number, key: Uint8Array, value: Uint8Array, flags: number): void;
  mapUpdateMany(fd: number, keys: Uint8Array, values: Uint8Array, flags: number): void;
  mapDeleteMany(fd: number, keys: Uint8Array): number;
  mapLookup(fd: number, key: Uint8Array, valueSize: number): Buffer | null;
  mapDelete(fd: number, key: Uint8Array): boolean;
  mapGetNextKey(fd: number, key: Uint8Array | null, keySize: number): Buffer | null;
  mapCreate(options: MapCreateOptions): number;
  numPossibleCpus(): number;
  ringBufferPositions(mapFd: number): RingBufferPositions;
  closeFd(fd: number): void;
  trimFileCache(
    fd: number,
    from: number,
    keep: number,
    callback: (error: NativeSystemError | null, result?: FileCacheTrim) => void,
  ): void;
  objGet(path: string): number;
  objPin(fd: number, path: string): void;
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  constants: Record<string, number>;
}

let loadedAddon: NativeAddon | undefined;

/**
 * Loads the addon on first use, so that importing this module works where the addon is not
 * built. Throws 'native addon not built: run `make`' when the file is missing.
 */
function addon(): NativeAddon {
  if (loadedAddon) return loadedAddon;
  if (!existsSync(NATIVE_ADDON_PATH)) {
    throw new Error(`native addon not built: run \`make\` (missing ${NATIVE_ADDON_PATH})`);
  }
  try {
    loadedAddon = require(NATIVE_ADDON_PATH) as NativeAddon;
  } catch (cause) {
    throw new Error(`load native addon ${NATIVE_ADDON_PATH}: ${(cause as Error).message}`, {
      cause,
    });
  }
  return loadedAddon;
}

/** Returns the constants the addon was compiled with (linux/bpf.h, sys/mount.h) by C name. */
export function nativeConstants(): Record<string, number> {
  return { ...addon().constants };
}

// Argument checks. Each message starts with the function, names the argument, and shows the
// value received.

const FD_MAX = 0x7fffffff;
const UINT32_MAX = 0xffffffff;
const BPF_OBJ_NAME_MAX = 15;

function describeValue(value: unknown): string {
  if (typeof value === 'string') return `string ${JSON.stringify(value.slice(0, 80))}`;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${typeof value} ${String(value)}`;
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object'
    ? `an object (${value.constructor?.name ?? 'null prototype'})`
    : typeof value;
}

function checkString(where: string, name: string, value: unknown): asserts value is string {
  if (typeof value !== 'string') {
    throw new TypeError(`${where}: ${name} must be a string, got ${describeValue(value)}`);
  }
}

/** Checks a name or path for a C call: a non-empty string without NUL characters. */
function checkCString(where: string, name: string, value: unknown): asserts value is string {
  checkString(where, name, value);
  if (value.length === 0) throw new TypeError(`${where}: ${name} must not be empty`);
  if (value.includes('\0')) {
    throw new TypeError(
      `${where}: ${name} must not contain NUL characters, got ${describeValue(value)}`,
    );
  }
}

function checkInteger(
  where: string,
  name: string,
  value: unknown,
  min: number,
  max: number,
): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new TypeError(`${where}: ${name} must be an integer, got ${describeValue(value)}`);
  }
  if (value < min || value > max) {
    throw new RangeError(`${where}: ${name} must be from ${min} to ${max}, got ${value}`);
  }
}

function checkFd(where: string, name: string, value: unknown): asserts value is number {
  checkInteger(where, name, value, 0, FD_MAX);
}

function checkBytes(where: string, name: string, value: unknown): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(
      `${where}: ${name} must be a Buffer or Uint8Array, got ${describeValue(value)}`,
    );
  }
}

function checkBoolean(where: string, name: string, value: unknown): asserts value is boolean {
  if (typeof value !== 'boolean') {
    throw new TypeError(`${where}: ${name} must be a boolean, got ${describeValue(value)}`);
  }
}

function checkFunction(where: string, name: string, value: unknown): asserts value is Function {
  if (typeof value !== 'function') {
    throw new TypeError(`${where}: ${name} must be a function, got ${describeValue(value)}`);
  }
}

function checkOneOf<T extends string>(
  where: string,
  name: string,
  value: unknown,
  allowed: readonly T[],
): asserts value is T {
  checkString(where, name, value);
  if (!(allowed as readonly string[]).includes(value)) {
    throw new TypeError(
      `${where}: ${name} must be one of ${allowed.join(', ')}, got ${describeValue(value)}`,
    );
  }
}

// Feature probes. Each loads a minimal program or creates a minimal map, which takes about a
// millisecond.

/**
 * Probes whether the kernel supports a program type, with libbpf_probe_bpf_prog_type. `type` is
 * one of PROGRAM_TYPE_NAMES; another string throws TypeError.
 */
export function probeProgramType(type: string): ProbeResult {
  checkOneOf('probeProgramType', 'type', type, PROGRAM_TYPE_NAMES);
  return addon().probeProgramType(type);
}

/**
 * Probes whether the kernel supports a map type, with libbpf_probe_bpf_map_type. `type` is one of
 * MAP_TYPE_NAMES; another string throws TypeError.
 */
export function probeMapType(type: string): ProbeResult {
  checkOneOf('probeMapType', 'type', type, MAP_TYPE_NAMES);
  return addon().probeMapType(type);
}

/**
 * Probes whether programs of `progType` (one of PROGRAM_TYPE_NAMES) may call a helper, with
 * libbpf_probe_bpf_helper.
 * `helperName` is the helper's name with or without the "bpf_" prefix, such as
 * 'get_current_pid_tgid'; any helper in the build's linux/bpf.h is accepted, and an unknown name
 * throws TypeError. libbpf cannot probe helpers of lsm and tracing programs: those return
 * `{ supported: false, error: 'Operation not supported' }`. libbpf reports a helper as supported
 * unless the verifier names it unknown, so a true result can be optimistic.
 */
export function probeHelper(progType: string, helperName: string): ProbeResult {
  checkOneOf('probeHelper', 'progType', progType, PROGRAM_TYPE_NAMES);
  checkCString('probeHelper', 'helperName', helperName);
  return addon().probeHelper(progType, helperName);
}

const WRAP: unique symbol = Symbol('sigil.native.wrap');
const HANDLE: unique symbol = Symbol('sigil.native.handle');

/**
 * An attached BPF program (a libbpf bpf_link). Created by the attach methods of BpfObject.
 *
 * The program stays attached while the link is alive or pinned. destroy(), garbage collection
 * of an unreferenced Link, and the end of the process or worker thread close the link's file
 * descriptor, which detaches the program unless the link is pinned. Keep a reference to every
 * Link that enforcement depends on, or pin it.
 */
export class Link {
  private readonly [HANDLE]: NativeLink;

  private constructor(handle: NativeLink) {
    this[HANDLE] = handle;
  }

  /** Wraps a native link. Only this module has the WRAP symbol, so only it can call this. */
  static [WRAP](handle: NativeLink): Link {
    return new Link(handle);
  }

  /** Attachment of the link, such as "program deny_connect4 on cgroup /sys/fs/cgroup/x". */
  get description(): string {
    return this[HANDLE].description;
  }

  /** The link's file descriptor, owned by the link. Throws once the link is destroyed. */
  get fd(): number {
    return this[HANDLE].fd;
  }

  /** Path the link is pinned at through pin(), or null. */
  get pinPath(): string | null {
    return this[HANDLE].pinPath;
  }

  /**
   * Pins the link at `path`, which must be in a BPF file system (bpffs) whose parent directory
   * exists. A pinned link stays attached after destroy() and after the process exits, until the
   * pin is removed. Throws EEXIST if the path exists, and EINVAL if it is not in bpffs or the
   * link is already pinned.
   */
  pin(path: string): void {
    checkCString('Link.pin', 'path', path);
    this[HANDLE].pin(path);
  }

  /**
   * Removes the pin created by pin(). The link stays attached while this object lives. Throws if
   * the link is not pinned.
   */
  unpin(): void {
    this[HANDLE].unpin();
  }

  /**
   * Closes the link, which detaches the program unless the link is pinned. Calling it again does
   * nothing.
   */
  destroy(): void {
    this[HANDLE].destroy();
  }
}

/**
 * A BPF ELF object file opened with libbpf (bpf_object__open_file).
 *
 * Lifecycle: construct, optionally configure (setMapPinPath, setProgramAutoload), load(), then
 * attach programs and use maps. close() frees the object's programs and maps. Links created from
 * it stay attached until they are destroyed, because each link keeps its own reference to its
 * program. The end of the process or worker thread closes the object too.
 *
 * Errors: a missing or invalid file throws from the constructor; a failed load throws with the
 * last 40 lines of the libbpf and verifier log in the message. Names that the object does not
 * contain throw an Error that lists the names it has.
 */
export class BpfObject {
  private readonly [HANDLE]: NativeBpfObject;

  constructor(path: string) {
    checkCString('BpfObject', 'path', path);
    this[HANDLE] = new (addon().BpfObject)(path);
  }

  /** Path the object was opened from. */
  get path(): string {
    return this[HANDLE].path;
  }

  /** Whether load() succeeded and the object is not closed. */
  get loaded(): boolean {
    return this[HANDLE].loaded;
  }

  get closed(): boolean {
    return this[HANDLE].closed;
  }

  /**
   * Creates the maps and loads the programs into the kernel (bpf_object__load). Blocks while the
   * verifier runs, which can take from milliseconds to seconds for large programs. Can be called
   * once; after a failure, open the file again.
   */
  load(): void {
    this[HANDLE].load();
  }

  /** Names of all programs, including those with autoload turned off. */
  programNames(): string[] {
    return this[HANDLE].programNames();
  }

  /** Names of all maps, including libbpf's internal ones such as `<object>.rodata`. */
  mapNames(): string[] {
    return this[HANDLE].mapNames();
  }

  /** File descriptor of a map after load(). The object owns it: do not pass it to closeFd. */
  mapFd(name: string): number {
    checkCString('BpfObject.mapFd', 'name', name);
    return this[HANDLE].mapFd(name);
  }

  /** Definition of a map; available before load(). */
  mapInfo(name: string): MapInfo {
    checkCString('BpfObject.mapInfo', 'name', name);
    return this[HANDLE].mapInfo(name);
  }

  /**
   * Sets where load() looks for a pinned copy of the map (bpf_map__set_pin_path). If the path
   * contains a compatible map, load() reuses it instead of creating one; otherwise load() creates
   * the map and pins it there. An incompatible pinned map makes load() fail. Before load() only.
   */
  setMapPinPath(name: string, path: string): void {
    checkCString('BpfObject.setMapPinPath', 'name', name);
    checkCString('BpfObject.setMapPinPath', 'path', path);
    this[HANDLE].setMapPinPath(name, path);
  }

  /** Pins a loaded map at a path in bpffs (bpf_map__pin). */
  pinMap(name: string, path: string): void {
    checkCString('BpfObject.pinMap', 'name', name);
    checkCString('BpfObject.pinMap', 'path', path);
    this[HANDLE].pinMap(name, path);
  }

  /**
   * Removes a map's pin (bpf_map__unpin). Without `path`, removes the pin path set by
   * setMapPinPath or pinMap; a `path` different from that one throws EINVAL.
   */
  unpinMap(name: string, path?: string): void {
    checkCString('BpfObject.unpinMap', 'name', name);
    if (path !== undefined) checkCString('BpfObject.unpinMap', 'path', path);
    this[HANDLE].unpinMap(name, path);
  }

  /**
   * Chooses whether load() loads a program. Sections named "?..." start with autoload off.
   * Before load() only.
   */
  setProgramAutoload(name: string, autoload: boolean): void {
    checkCString('BpfObject.setProgramAutoload', 'name', name);
    checkBoolean('BpfObject.setProgramAutoload', 'autoload', autoload);
    this[HANDLE].setProgramAutoload(name, autoload);
  }

  /**
   * Attaches a cgroup program (cgroup/connect4, cgroup_skb/egress, sockops, ...) to the cgroup v2
   * directory `cgroupPath` through a bpf_link. The attach type comes from the program's section
   * name. Other programs attached to the same cgroup keep running.
   */
  attachCgroup(programName: string, cgroupPath: string): Link {
    checkCString('BpfObject.attachCgroup', 'programName', programName);
    checkCString('BpfObject.attachCgroup', 'cgroupPath', cgroupPath);
    return Link[WRAP](this[HANDLE].attachCgroup(programName, cgroupPath));
  }

  /**
   * Attaches a tracepoint program to `category`/`name`. libbpf reads the tracepoint id from
   * tracefs, so tracefs must be mounted at /sys/kernel/tracing (or debugfs at /sys/kernel/debug);
   * otherwise this throws ENOENT.
   */
  attachTracepoint(programName: string, category: string, name: string): Link {
    checkCString('BpfObject.attachTracepoint', 'programName', programName);
    checkCString('BpfObject.attachTracepoint', 'category', category);
    checkCString('BpfObject.attachTracepoint', 'name', name);
    return Link[WRAP](this[HANDLE].attachTracepoint(programName, category, name));
  }

  /** Attaches a raw tracepoint program to a tracepoint such as 'sched_process_exec', without tracefs. */
  attachRawTracepoint(programName: string, tracepointName: string): Link {
    checkCString('BpfObject.attachRawTracepoint', 'programName', programName);
    checkCString('BpfObject.attachRawTracepoint', 'tracepointName', tracepointName);
    return Link[WRAP](this[HANDLE].attachRawTracepoint(programName, tracepointName));
  }

  /**
   * Attaches a program where its section name says (bpf_program__attach), for sections that name
   * their target, such as "tracepoint/sched/sched_process_exec". Sections without a target, such
   * as "cgroup/connect4", throw EOPNOTSUPP: use attachCgroup for those.
   */
  attach(programName: string): Link {
    checkCString('BpfObject.attach', 'programName', programName);
    return Link[WRAP](this[HANDLE].attach(programName));
  }

  /** Frees the object (bpf_object__close). Calling it again does nothing. */
  close(): void {
    this[HANDLE].close();
  }
}

// Map operations on file descriptors. Each makes two system calls: one that reads the map's key
// and value sizes, so that a buffer of the wrong size throws RangeError instead of letting the
// kernel read or write past it, and the operation itself.

/**
 * Returns the value size that lookups and updates of a per-CPU map use: `valueSize` rounded up
 * to 8, times numPossibleCpus().
 */
export function perCpuValueSize(valueSize: number): number {
  checkInteger('perCpuValueSize', 'valueSize', valueSize, 1, UINT32_MAX);
  return Math.ceil(valueSize / 8) * 8 * numPossibleCpus();
}

/**
 * Creates or replaces a map entry. `flags` is a MapUpdateFlag value. Throws EEXIST for NOEXIST
 * on an existing key, ENOENT for EXIST on a missing key, E2BIG when the map is full.
 */
export function mapUpdate(
  fd: number,
  key: Uint8Array,
  value: Uint8Array,
  flags: number = MapUpdateFlag.ANY,
): void {
  checkFd('mapUpdate', 'fd', fd);
  checkBytes('mapUpdate', 'key', key);
  checkBytes('mapUpdate', 'value', value);
  checkInteger('mapUpdate', 'flags', flags, 0, UINT32_MAX);
  addon().mapUpdate(fd, key, value, flags);
}

/**
 * Writes many entries: `keys` and `values` are the keys and values laid end to end, each of the
 * map's exact size, and entry i is key i with value i. Uses one BPF_MAP_UPDATE_BATCH call where
 * the kernel has it for the map type (hash maps since Linux 5.6), and one update per entry
 * otherwise (LPM tries, for example). Throws like mapUpdate, naming the index of the entry that
 * failed; the entries before it stay written.
 */
export function mapUpdateMany(
  fd: number,
  keys: Uint8Array,
  values: Uint8Array,
  flags: number = MapUpdateFlag.ANY,
): void {
  checkFd('mapUpdateMany', 'fd', fd);
  checkBytes('mapUpdateMany', 'keys', keys);
  checkBytes('mapUpdateMany', 'values', values);
  checkInteger('mapUpdateMany', 'flags', flags, 0, UINT32_MAX);
  addon().mapUpdateMany(fd, keys, values, flags);
}

/**
 * Deletes the entries of many keys, laid end to end, and returns how many existed. A missing key
 * is skipped; any other failure throws, naming the index of the key.
 */
export function mapDeleteMany(fd: number, keys: Uint8Array): number {
  checkFd('mapDeleteMany', 'fd', fd);
  checkBytes('mapDeleteMany', 'keys', keys);
  return addon().mapDeleteMany(fd, keys);
}

/**
 * Returns a copy of the value stored under `key`, or null when there is none. `valueSize` must
 * equal the map's value size; for per-CPU maps pass perCpuValueSize(valueSize), and the Buffer
 * contains one 8-byte-aligned slot per possible CPU. For map-in-map and program array maps the
 * value is the inner object's u32 id.
 */
export function mapLookup(fd: number, key: Uint8Array, valueSize: number): Buffer | null {
  checkFd('mapLookup', 'fd', fd);
  checkBytes('mapLookup', 'key', key);
  checkInteger('mapLookup', 'valueSize', valueSize, 0, FD_MAX);
  return addon().mapLookup(fd, key, valueSize);
}

/** Deletes the entry under `key`. Returns false when there was none. Array maps throw EINVAL. */
export function mapDelete(fd: number, key: Uint8Array): boolean {
  checkFd('mapDelete', 'fd', fd);
  checkBytes('mapDelete', 'key', key);
  return addon().mapDelete(fd, key);
}

/**
 * Returns the key after `key` in the map's iteration order, the first key when `key` is null,
 * and null after the last key. In hash maps, a `key` that was deleted restarts at the first key.
 */
export function mapGetNextKey(fd: number, key: Uint8Array | null, keySize: number): Buffer | null {
  checkFd('mapGetNextKey', 'fd', fd);
  if (key !== null) checkBytes('mapGetNextKey', 'key', key);
  checkInteger('mapGetNextKey', 'keySize', keySize, 1, FD_MAX);
  return addon().mapGetNextKey(fd, key, keySize);
}

/**
 * Creates a map (bpf_map_create) and returns its file descriptor, which the caller owns and
 * closes with closeFd. An inner map for a map-in-map must match the type, key size, value size
 * and flags of the outer map's template, or inserting it throws EINVAL. Array inner maps must
 * also match maxEntries unless the template has MapFlag.INNER_MAP.
 */
export function mapCreate(options: MapCreateOptions): number {
  const where = 'mapCreate';
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`${where}: options must be an object, got ${describeValue(options)}`);
  }

  checkInteger(where, 'options.type', options.type, 1, FD_MAX);
  checkString(where, 'options.name', options.name);
  if (options.name.length > BPF_OBJ_NAME_MAX || !/^[A-Za-z0-9_.]*$/.test(options.name)) {
    throw new RangeError(
      `${where}: options.name must be at most ${BPF_OBJ_NAME_MAX} characters of [A-Za-z0-9_.], ` +
        `got ${describeValue(options.name)}`,
    );
  }
  checkInteger(where, 'options.keySize', options.keySize, 0, UINT32_MAX);
  checkInteger(where, 'options.valueSize', options.valueSize, 0, UINT32_MAX);
  checkInteger(where, 'options.maxEntries', options.maxEntries, 0, UINT32_MAX);
  const flags = options.flags ?? 0;
  checkInteger(where, 'options.flags', flags, 0, UINT32_MAX);

  const native: MapCreateOptions = {
    type: options.type,
    name: options.name,
    keySize: options.keySize,
    valueSize: options.valueSize,
    maxEntries: options.maxEntries,
    flags,
  };
  if (options.innerMapFd !== undefined) {
    checkFd(where, 'options.innerMapFd', options.innerMapFd);
    native.innerMapFd = options.innerMapFd;
  }

  return addon().mapCreate(native);
}

/**
 * Reads the consumer and producer positions of a ring buffer map from its control pages.
 * Throws EINVAL when the map is not a ring buffer.
 */
export function ringBufferPositions(mapFd: number): RingBufferPositions {
  checkFd('ringBufferPositions', 'mapFd', mapFd);
  return addon().ringBufferPositions(mapFd);
}

/**
 * Returns the fill of a ring buffer map from 0 to 1: the bytes written and not yet consumed,
 * over its size. Records are counted with their 8-byte ring buffer headers.
 */
export function ringBufferFill(mapFd: number): number {
  const { consumerPosition, producerPosition, size } = ringBufferPositions(mapFd);
  return Math.min(1, Number(producerPosition - consumerPosition) / size);
}

/** Closes a file descriptor returned by mapCreate or objGet. Throws EBADF if it is not open. */
export function closeFd(fd: number): void {
  checkFd('closeFd', 'fd', fd);
  addon().closeFd(fd);
}

/** Outcome of trimFileCache. */
export interface FileCacheTrim {
  /** Offset up to which the file's page cache was written back and released. */
  releasedTo: number;
  /** False when fd is not a regular file; nothing was done then. */
  regular: boolean;
}

/** Largest file offset trimFileCache accepts (2^52, well below the kernel's limit). */
const FILE_OFFSET_MAX = 2 ** 52;

/**
 * On a libuv worker thread: starts writeback of fd's dirty pages from offset `from` on, then
 * writes back and drops from the page cache the pages from `from` up to `keep` bytes before the
 * end of the file (sync_file_range(2), posix_fadvise(POSIX_FADV_DONTNEED)). For a file that is
 * only appended to, so that its page cache stays a bounded tail.
 */
export function trimFileCache(fd: number, from: number, keep: number): Promise<FileCacheTrim> {
  checkFd('trimFileCache', 'fd', fd);
  checkInteger('trimFileCache', 'from', from, 0, FILE_OFFSET_MAX);
  checkInteger('trimFileCache', 'keep', keep, 0, FILE_OFFSET_MAX);
  return new Promise((resolve, reject) => {
    addon().trimFileCache(fd, from, keep, (error, result) => {
      if (error) reject(error);
      else resolve(result as FileCacheTrim);
    });
  });
}

/** Number of possible CPUs (libbpf_num_possible_cpus), the slot count of per-CPU map values. */
export function numPossibleCpus(): number {
  return addon().numPossibleCpus();
}

/**
 * Opens a pinned map, program or link (bpf_obj_get) and returns a new file descriptor that the
 * caller owns. Throws ENOENT when nothing is pinned at `path`.
 */
export function objGet(path: string): number {
  checkCString('objGet', 'path', path);
  return addon().objGet(path);
}

/** Pins the BPF object behind `fd` (map, program or link) at a path in bpffs (bpf_obj_pin). */
export function objPin(fd: number, path: string): void {
  checkFd('objPin', 'fd', fd);
  checkCString('objPin', 'path', path);
  addon().objPin(fd, path);
}

/**
 * Calls mount(2), for example `mount('bpf', '/sys/fs/bpf', 'bpf', 0, '')`. `flags` is a sum of
 * MountFlag values, and `fstype` and `data` may be empty. A failure throws with mount's errno,
 * such as ENOENT for a missing target or EPERM without CAP_SYS_ADMIN.
 */
export function mount(
  source: string,
  target: string,
  fstype: string,
  flags: number,
  data: string = '',
): void {
  checkCString('mount', 'source', source);
  checkCString('mount', 'target', target);
  checkString('mount', 'fstype', fstype);
  checkInteger('mount', 'flags', flags, 0, UINT32_MAX);
  checkString('mount', 'data', data);
  for (const [name, value] of [
    ['fstype', fstype],
    ['data', data],
  ] as const) {
    if (value.includes('\0')) {
      throw new TypeError(
        `mount: ${name} must not contain NUL characters, got ${describeValue(value)}`,
      );
    }
  }
  addon().mount(source, target, fstype, flags, data);
}

const FRAME_HEADER_BYTES = 8;

/**
 * Yields the records of a batch from RingBufferConsumer, as views into the batch (no copy).
 * Each frame is a little-endian u32 record length, a u32 zero, the record, and zero padding to
 * a multiple of 8. Throws RangeError on a malformed batch.
 */
export function* batchRecords(batch: Buffer): Generator<Buffer> {
  checkBytes('batchRecords', 'batch', batch);
  let offset = 0;
  while (offset < batch.length) {
    if (batch.length - offset < FRAME_HEADER_BYTES) {
      throw new RangeError(`batchRecords: truncated frame header at offset ${offset}`);
    }
    const length = batch.readUInt32LE(offset);
    const start = offset + FRAME_HEADER_BYTES;
    const end = start + length;
    if (end > batch.length) {
      throw new RangeError(
        `batchRecords: record at offset ${offset} has length ${length}, ` +
          `past the batch end ${batch.length}`,
      );
    }
    yield batch.subarray(start, end);
    offset = start + Math.ceil(length / 8) * 8;
  }
}

/**
 * Reads a BPF ring buffer map on a dedicated thread and calls `onBatch` on the JavaScript thread
 * with batches of framed records (see batchRecords).
 *
 * Backpressure: at most `maxQueuedBatches` batches wait for `onBatch`. When the queue is full the
 * thread blocks, stops reading, and the ring buffer fills; the BPF side then gets failed
 * reserves and counts them. The consumer drops records only in stop(), which discards the
 * batches `onBatch` has not received yet (stats().discardedRecords).
 *
 * A running consumer keeps the event loop alive and is not garbage-collected. `onBatch` must not
 * keep `batch` past the call unless it copies it. An exception thrown by `onBatch` is reported
 * as an uncaught exception, like one from any other asynchronous callback.
 */
export class RingBufferConsumer {
  private readonly [HANDLE]: NativeRingBufferConsumer;

  /**
   * Prepares a consumer of the ring buffer map `mapFd`. Throws EINVAL if the map is not a ring
   * buffer. The map is mapped into memory here, so `mapFd` may be closed afterwards.
   */
  constructor(mapFd: number, onBatch: BatchHandler, options: RingBufferConsumerOptions = {}) {
    const where = 'RingBufferConsumer';
    checkFd(where, 'mapFd', mapFd);
    checkFunction(where, 'onBatch', onBatch);
    if (typeof options !== 'object' || options === null) {
      throw new TypeError(`${where}: options must be an object, got ${describeValue(options)}`);
    }
    const native: RingBufferConsumerOptions = {};
    if (options.maxBatchBytes !== undefined) {
      checkInteger(where, 'options.maxBatchBytes', options.maxBatchBytes, 16, 1 << 30);
      native.maxBatchBytes = options.maxBatchBytes;
    }
    if (options.pollTimeoutMs !== undefined) {
      checkInteger(where, 'options.pollTimeoutMs', options.pollTimeoutMs, 1, 60_000);
      native.pollTimeoutMs = options.pollTimeoutMs;
    }
    if (options.maxQueuedBatches !== undefined) {
      checkInteger(where, 'options.maxQueuedBatches', options.maxQueuedBatches, 1, 65_536);
      native.maxQueuedBatches = options.maxQueuedBatches;
    }
    if (options.maxUnreleasedBatches !== undefined) {
      checkInteger(where, 'options.maxUnreleasedBatches', options.maxUnreleasedBatches, 0, 65_536);
      native.maxUnreleasedBatches = options.maxUnreleasedBatches;
    }
    if (options.onError !== undefined) {
      checkFunction(where, 'options.onError', options.onError);
      native.onError = options.onError;
    }
    this[HANDLE] = new (addon().RingBufferConsumer)(mapFd, onBatch, native);
  }

  /** Whether the thread runs: true from start() until stop(). */
  get running(): boolean {
    return this[HANDLE].running;
  }

  /** Starts the thread. Throws if the consumer runs already or was stopped. */
  start(): void {
    this[HANDLE].start();
  }

  /**
   * Stops the thread and waits for it to exit, then frees the ring buffer mapping. The thread is
   * woken at once, without waiting for the poll timeout or for queue space, so stop() returns
   * promptly also when the queue is full or when called from inside `onBatch`. Batches not yet
   * delivered are discarded, and `onBatch` is not called after stop() returns. Calling it again
   * does nothing. A stopped consumer cannot be restarted.
   */
  stop(): void {
    this[HANDLE].stop();
  }

  /**
   * Releases one batch that onBatch received, in release mode (maxUnreleasedBatches), so the
   * thread may hand over the next. Does nothing when no batch is unreleased or the mode is off.
   */
  release(): void {
    this[HANDLE].release();
  }

  /** Counters since construction. Safe to call while the thread runs. */
  stats(): RingBufferStats {
    return this[HANDLE].stats();
  }
}
