// Tests of the native addon through src/kernel/native.ts, against the running kernel. They need
// root and a built addon (`make native`), and compile test/kernel/fixtures/native_fixture.bpf.c
// with clang and bpftool in beforeAll. Tracefs and bpffs are mounted if they are missing and
// unmounted again afterwards.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  batchRecords,
  BpfObject,
  closeFd,
  isNativeSystemError,
  Link,
  mapCreate,
  MapFlag,
  mapDelete,
  mapDeleteMany,
  mapGetNextKey,
  mapLookup,
  MapType,
  mapUpdate,
  mapUpdateMany,
  MapUpdateFlag,
  mount,
  MountFlag,
  NATIVE_ADDON_PATH,
  nativeConstants,
  numPossibleCpus,
  objGet,
  objPin,
  perCpuValueSize,
  probeHelper,
  probeMapType,
  probeProgramType,
  RingBufferConsumer,
  ringBufferFill,
  ringBufferPositions,
  trimFileCache,
} from '../../src/kernel/native';

const FIXTURE_SOURCE = path.join(__dirname, 'fixtures', 'native_fixture.bpf.c');
const TRACEFS = '/sys/kernel/tracing';
const BPFFS = '/sys/fs/bpf';
const TRACEFS_MAGIC = 0x74726163;
const BPF_FS_MAGIC = 0xcafe4a11;

// Record kinds and sizes written by the fixture programs.
const RECORD_GETPPID = 1;
const RECORD_EXEC = 2;
const GETPPID_RECORD_BYTES = 9;
const EXEC_RECORD_BYTES = 29;
// The fixture's ring buffer is 16 KiB; each 9-byte record takes 24 bytes of it (header and
// padding), so about 680 records fit.
const RECORDS_TO_OVERFILL_RING = 3000;

const isRoot = process.getuid?.() === 0;

let workDir = '';
let objectPath = '';
let object: BpfObject;
const cleanups: Array<{ name: string; run: () => void | Promise<void> }> = [];

/** Registers a cleanup step; afterAll runs them in reverse order, each even if others fail. */
function onCleanup(name: string, run: () => void | Promise<void>): void {
  cleanups.push({ name, run });
}

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32LE(value);
  return buffer;
}

function u64(value: bigint): Buffer {
  const buffer = Buffer.alloc(8);
  buffer.writeBigUInt64LE(value);
  return buffer;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Blocks the JavaScript thread, so that no thread-safe function call is delivered meanwhile. */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Calls getppid(2) `count` times; the fixture records each call of this process. */
function callGetppid(count: number): void {
  for (let i = 0; i < count; i++) void process.ppid;
}

function mapFd(name: string): number {
  return object.mapFd(name);
}

function writeConfig(config: { denyPort?: number; denyEnabled?: boolean } = {}): void {
  const value = Buffer.alloc(8);
  value.writeUInt32LE(process.pid, 0);
  value.writeUInt16LE(config.denyPort ?? 0, 4);
  value.writeUInt8(config.denyEnabled ? 1 : 0, 6);
  mapUpdate(mapFd('fixture_config'), u32(0), value, MapUpdateFlag.ANY);
}

function readDrops(): number {
  return Number(mapLookup(mapFd('drops'), u32(0), 8)!.readBigUInt64LE());
}

function resetDrops(): void {
  mapUpdate(mapFd('drops'), u32(0), u64(0n));
}

/** Sums the per-CPU slots of index 0 of a per-CPU array map of u64 values. */
function sumPerCpu(fd: number): number {
  const value = mapLookup(fd, u32(0), perCpuValueSize(8))!;
  let sum = 0n;
  for (let offset = 0; offset < value.length; offset += 8) sum += value.readBigUInt64LE(offset);
  return Number(sum);
}

function attachGetppid(): Link {
  const link = object.attachTracepoint('record_getppid', 'syscalls', 'sys_enter_getppid');
  onCleanup('destroy getppid link', () => link.destroy());
  return link;
}

/** Reads and discards whatever earlier tests left in the ring buffer; returns the record count. */
async function drainEvents(): Promise<number> {
  let records = 0;
  const consumer = new RingBufferConsumer(mapFd('events'), (_batch, count) => {
    records += count;
  });
  consumer.start();
  let previous = -1;
  while (previous !== consumer.stats().records) {
    previous = consumer.stats().records;
    await sleep(150);
  }
  consumer.stop();
  return records;
}

interface Frame {
  length: number;
  record: Buffer;
}

/**
 * Parses a batch by hand, independently of batchRecords, and checks the framing: a u32 zero
 * after each length, zero padding to 8 bytes, and frames that end exactly at the batch end.
 */
function parseFrames(batch: Buffer): Frame[] {
  const frames: Frame[] = [];
  let offset = 0;
  while (offset < batch.length) {
    const length = batch.readUInt32LE(offset);
    expect(batch.readUInt32LE(offset + 4)).toBe(0);
    const record = batch.subarray(offset + 8, offset + 8 + length);
    expect(record.length).toBe(length);
    const padded = Math.ceil(length / 8) * 8;
    expect(
      [...batch.subarray(offset + 8 + length, offset + 8 + padded)].every((b) => b === 0),
    ).toBe(true);
    frames.push({ length, record });
    offset += 8 + padded;
  }
  expect(offset).toBe(batch.length);
  return frames;
}

function findCgroup2Root(): string {
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [before, after] = line.split(' - ');
    if (after?.startsWith('cgroup2 ')) return before.split(' ')[4];
  }
  throw new Error('no cgroup2 file system is mounted');
}

/** Returns a function that resolves with the next line of `stream`, or rejects after 5 s. */
function lineReader(stream: Readable): () => Promise<string> {
  const pending: string[] = [];
  const waiting: Array<(line: string) => void> = [];
  readline.createInterface({ input: stream }).on('line', (line) => {
    const resolve = waiting.shift();
    if (resolve) resolve(line);
    else pending.push(line);
  });
  return () => {
    const line = pending.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for the child')), 5000);
      waiting.push((next) => {
        clearTimeout(timer);
        resolve(next);
      });
    });
  };
}

/** Mounts `fstype` at `target` unless it is mounted there; unmounts it in afterAll if it did. */
function ensureMounted(fstype: string, target: string, magic: number): void {
  if (fs.statfsSync(target).type === magic) return;
  mount(fstype, target, fstype, 0, '');
  onCleanup(`unmount ${target}`, () => {
    execFileSync('umount', [target]);
  });
}

function compileFixture(): string {
  const vmlinuxHeader = path.join(workDir, 'vmlinux.h');
  const headerFd = fs.openSync(vmlinuxHeader, 'w');
  try {
    execFileSync('bpftool', ['btf', 'dump', 'file', '/sys/kernel/btf/vmlinux', 'format', 'c'], {
      stdio: ['ignore', headerFd, 'pipe'],
    });
  } finally {
    fs.closeSync(headerFd);
  }
  const output = path.join(workDir, 'native_fixture.bpf.o');
  execFileSync('clang', [
    '-O2',
    '-g',
    '-Wall',
    '-target',
    'bpf',
    `-I${workDir}`,
    '-I/usr/include',
    '-c',
    FIXTURE_SOURCE,
    '-o',
    output,
  ]);
  return output;
}

describe('native addon (needs root)', () => {
  beforeAll(() => {
    // Kernel tests fail rather than skip without the privileges they need.
    if (!isRoot) throw new Error('the native addon tests load BPF programs: run them as root');
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sigil-native-test-'));
    onCleanup('remove work directory', () => fs.rmSync(workDir, { recursive: true, force: true }));
    ensureMounted('tracefs', TRACEFS, TRACEFS_MAGIC);
    ensureMounted('bpf', BPFFS, BPF_FS_MAGIC);
    objectPath = compileFixture();
    object = new BpfObject(objectPath);
    onCleanup('close fixture object', () => object.close());
    object.load();
    writeConfig();
  });

  afterAll(async () => {
    const failures: string[] = [];
    for (const { name, run } of cleanups.splice(0).reverse()) {
      try {
        await run();
      } catch (error) {
        failures.push(`${name}: ${(error as Error).message}`);
      }
    }
    if (failures.length > 0) throw new Error(`cleanup failed:\n${failures.join('\n')}`);
  });

  describe('probes', () => {
    it('report cgroup_sock_addr as supported', () => {
      expect(probeProgramType('cgroup_sock_addr')).toEqual({ supported: true });
    });

    it('return a boolean for lsm', () => {
      // Kernels differ: the lsm program type exists only with CONFIG_BPF_LSM.
      expect(typeof probeProgramType('lsm').supported).toBe('boolean');
    });

    it('report ring buffer maps and helpers', () => {
      expect(probeMapType('ringbuf').supported).toBe(true);
      expect(probeMapType('hash_of_maps').supported).toBe(true);
      expect(probeHelper('tracepoint', 'get_current_pid_tgid').supported).toBe(true);
      expect(probeHelper('cgroup_sock_addr', 'bpf_get_current_pid_tgid').supported).toBe(true);
    });

    it('report why a helper probe failed', () => {
      // libbpf cannot probe helpers of lsm programs.
      const result = probeHelper('lsm', 'get_current_task');
      expect(result.supported).toBe(false);
      expect(result.error).toBe('Operation not supported');
    });

    it('reject unknown names', () => {
      expect(() => probeProgramType('xdp_frags')).toThrow(TypeError);
      expect(() => probeMapType('queue')).toThrow(/must be one of hash, array/);
      expect(() => probeHelper('tracepoint', 'no_such_helper')).toThrow(TypeError);
    });
  });

  it('constants match the kernel headers', () => {
    const constants = nativeConstants();
    for (const [name, value] of Object.entries(MapType)) {
      expect(constants[`BPF_MAP_TYPE_${name}`], name).toBe(value);
    }
    for (const [name, value] of Object.entries(MapUpdateFlag)) {
      const cName = name === 'LOCK' ? 'BPF_F_LOCK' : `BPF_${name}`;
      expect(constants[cName], name).toBe(value);
    }
    for (const [name, value] of Object.entries(MapFlag)) {
      expect(constants[`BPF_F_${name}`], name).toBe(value);
    }
    for (const [name, value] of Object.entries(MountFlag)) {
      expect(constants[`MS_${name}`], name).toBe(value);
    }
  });

  it('addon path works from src and dist', () => {
    expect(NATIVE_ADDON_PATH).toBe(
      path.resolve(__dirname, '../../build/Release/sigil_native.node'),
    );

    // Build dist/kernel/native.js the way tsc lays it out, next to a link to the real build/.
    const packageRoot = path.join(workDir, 'package');
    fs.mkdirSync(path.join(packageRoot, 'dist', 'kernel'), { recursive: true });
    fs.symlinkSync(path.resolve(__dirname, '../../build'), path.join(packageRoot, 'build'));
    const source = fs.readFileSync(path.resolve(__dirname, '../../src/kernel/native.ts'), 'utf8');
    const output = ts.transpileModule(source, {
      // The options of tsconfig.json that change the emitted code.
      compilerOptions: {
        module: ts.ModuleKind.CommonJS,
        target: ts.ScriptTarget.ES2022,
        esModuleInterop: true,
      },
    });
    const compiled = path.join(packageRoot, 'dist', 'kernel', 'native.js');
    fs.writeFileSync(compiled, output.outputText);
    const script = `const native = require(${JSON.stringify(compiled)});
      console.log(JSON.stringify([native.NATIVE_ADDON_PATH, native.numPossibleCpus()]));`;
    const [addonPath, cpus] = JSON.parse(
      execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }),
    );
    expect(addonPath).toBe(path.join(packageRoot, 'build', 'Release', 'sigil_native.node'));
    expect(cpus).toBe(numPossibleCpus());

    fs.unlinkSync(path.join(packageRoot, 'build'));
    expect(() => execFileSync(process.execPath, ['-e', script], { stdio: 'pipe' })).toThrow(
      'native addon not built: run `make`',
    );
  });

  describe('argument checks', () => {
    it('name the argument in TypeError', () => {
      expect(() => mapLookup('3' as unknown as number, u32(0), 8)).toThrow(
        new TypeError('mapLookup: fd must be an integer, got string "3"'),
      );
      expect(() => mapUpdate(3, [1, 2] as unknown as Buffer, u32(0))).toThrow(
        'mapUpdate: key must be a Buffer or Uint8Array, got an array',
      );
      expect(() => new BpfObject('')).toThrow('BpfObject: path must not be empty');
      expect(() => object.pinMap('counters', `${BPFFS}/x\0y`)).toThrow(/NUL characters/);
    });

    it('report ranges in RangeError', () => {
      expect(() => mapLookup(-1, u32(0), 8)).toThrow(
        new RangeError('mapLookup: fd must be from 0 to 2147483647, got -1'),
      );
      expect(() =>
        mapCreate({
          type: MapType.HASH,
          name: 'a_name_too_long_',
          keySize: 4,
          valueSize: 4,
          maxEntries: 1,
        }),
      ).toThrow(RangeError);
      expect(() => new RingBufferConsumer(3, () => {}, { maxQueuedBatches: 0 })).toThrow(
        'RingBufferConsumer: options.maxQueuedBatches must be from 1 to 65536, got 0',
      );
      expect(() => new RingBufferConsumer(3, () => {}, { maxUnreleasedBatches: -1 })).toThrow(
        'RingBufferConsumer: options.maxUnreleasedBatches must be from 0 to 65536, got -1',
      );
    });

    it('check buffer sizes against the map', () => {
      const fd = mapFd('counters');
      expect(() => mapLookup(fd, Buffer.alloc(8), 8)).toThrow(
        /look up in map counters \(fd \d+\): key is 8 bytes but the map's keys are 4 bytes/,
      );
      expect(() => mapUpdate(fd, u32(1), u32(1))).toThrow(RangeError);
      expect(() => mapLookup(mapFd('getppid_calls'), u32(0), 8)).toThrow(
        new RegExp(`for each of ${numPossibleCpus()} possible CPUs`),
      );
    });
  });

  describe('BpfObject', () => {
    it('lists programs and maps', () => {
      expect(object.programNames()).toEqual([
        'record_getppid',
        'record_exec',
        'deny_connect4',
        'rejected_by_verifier',
      ]);
      expect(object.mapNames().sort()).toEqual([
        'counters',
        'drops',
        'events',
        'fixture_config',
        'getppid_calls',
        'outer',
      ]);
    });

    it('reports map definitions', () => {
      expect(object.mapInfo('outer')).toEqual({
        type: MapType.HASH_OF_MAPS,
        keySize: 4,
        valueSize: 4,
        maxEntries: 8,
        flags: 0,
      });
      expect(object.mapInfo('events').type).toBe(MapType.RINGBUF);
    });

    it('names the known maps for an unknown name', () => {
      expect(() => object.mapFd('nope')).toThrow(
        `get fd of map nope: BPF object ${objectPath} has no map named nope (maps: `,
      );
    });

    it('quotes the verifier log when load fails', () => {
      const failing = new BpfObject(objectPath);
      onCleanup('close failing object', () => failing.close());
      failing.setProgramAutoload('rejected_by_verifier', true);
      let error: unknown;
      try {
        failing.load();
      } catch (caught) {
        error = caught;
      }
      expect(isNativeSystemError(error)).toBe(true);
      const systemError = error as Error & { errno: number; code: string };
      expect(systemError.message).toMatch(
        new RegExp(`^load BPF object ${objectPath}: Permission denied \\(errno 13\\)\\n`),
      );
      expect(systemError.message).toContain("R0 invalid mem access 'map_value_or_null'");
      expect(systemError.errno).toBe(13);
      expect(systemError.code).toBe('EACCES');
      expect(() => failing.load()).toThrow('an earlier load failed; open the file again');
    });

    it('rejects calls in the wrong state', () => {
      const unloaded = new BpfObject(objectPath);
      expect(() => unloaded.mapFd('counters')).toThrow('is not loaded; call load() first');
      unloaded.close();
      unloaded.close();
      expect(unloaded.closed).toBe(true);
      expect(() => unloaded.programNames()).toThrow(`BPF object ${objectPath} is closed`);
      expect(() => object.setProgramAutoload('record_exec', false)).toThrow(
        'was already loaded; call this before load()',
      );
    });

    it('throws ENOENT for a missing file', () => {
      expect(() => new BpfObject(path.join(workDir, 'missing.o'))).toThrow(
        expect.objectContaining({ code: 'ENOENT', errno: 2 }),
      );
    });
  });

  describe('map operations', () => {
    it('round-trip update, lookup, next key and delete', () => {
      const fd = mapFd('counters');
      for (const key of [11, 12, 13]) mapUpdate(fd, u32(key), u64(BigInt(key) * 100n));
      expect(mapLookup(fd, u32(12), 8)!.readBigUInt64LE()).toBe(1200n);

      mapUpdate(fd, u32(12), u64(7n), MapUpdateFlag.EXIST);
      expect(mapLookup(fd, u32(12), 8)!.readBigUInt64LE()).toBe(7n);
      expect(() => mapUpdate(fd, u32(12), u64(1n), MapUpdateFlag.NOEXIST)).toThrow(
        expect.objectContaining({ code: 'EEXIST', errno: 17 }),
      );

      const keys: number[] = [];
      for (let key = mapGetNextKey(fd, null, 4); key !== null; key = mapGetNextKey(fd, key, 4)) {
        keys.push(key.readUInt32LE());
      }
      expect(keys.sort()).toEqual([11, 12, 13]);

      expect(mapDelete(fd, u32(12))).toBe(true);
      expect(mapDelete(fd, u32(12))).toBe(false);
      expect(mapLookup(fd, u32(12), 8)).toBeNull();
      for (const key of [11, 13]) mapDelete(fd, u32(key));
      expect(mapGetNextKey(fd, null, 4)).toBeNull();
    });

    it.each([
      ['hash map, batch update', MapType.HASH, 4],
      ['LPM trie, one update per entry', MapType.LPM_TRIE, 8],
    ])('write and delete many entries: %s', (_name, type, keySize) => {
      const fd = mapCreate({
        type,
        name: 'fixture_many',
        keySize,
        valueSize: 8,
        maxEntries: 64,
        flags: MapFlag.NO_PREALLOC,
      });
      onCleanup('close many-entries map', () => closeFd(fd));
      // LPM keys are a 4-byte prefix length, then the data; /32 keys match exactly.
      const key = (n: number) => {
        const bytes = Buffer.alloc(keySize);
        if (type === MapType.LPM_TRIE) bytes.writeUInt32LE(32, 0);
        bytes.writeUInt32BE(n, keySize - 4);
        return bytes;
      };
      const keys = Buffer.concat([1, 2, 3].map(key));
      const values = Buffer.concat([10n, 20n, 30n].map(u64));
      mapUpdateMany(fd, keys, values);
      for (const n of [1, 2, 3]) {
        expect(mapLookup(fd, key(n), 8)!.readBigUInt64LE()).toBe(BigInt(n) * 10n);
      }

      expect(() => mapUpdateMany(fd, keys, values.subarray(0, 16))).toThrow(
        /3 keys but 2 values/,
      );
      expect(() => mapUpdateMany(fd, keys.subarray(1), values)).toThrow(/not a multiple/);
      expect(() =>
        mapUpdateMany(fd, Buffer.concat([key(4), key(1)]), values.subarray(0, 16), 1),
      ).toThrow(expect.objectContaining({ code: 'EEXIST' }));

      expect(mapDeleteMany(fd, Buffer.concat([key(1), key(3), key(9)]))).toBe(2);
      expect(mapLookup(fd, key(1), 8)).toBeNull();
      expect(mapLookup(fd, key(2), 8)!.readBigUInt64LE()).toBe(20n);
    });

    it('return one slot per possible CPU for per-CPU maps', () => {
      writeConfig();
      const fd = mapFd('getppid_calls');
      expect(perCpuValueSize(8)).toBe(8 * numPossibleCpus());
      const link = attachGetppid();
      const before = sumPerCpu(fd);
      callGetppid(25);
      expect(sumPerCpu(fd) - before).toBe(25);
      link.destroy();
    });

    it('use a created map as an inner map of hash_of_maps', () => {
      writeConfig();
      const outer = mapFd('outer');
      const inner = mapCreate({
        type: MapType.HASH,
        name: 'fixture_inner',
        keySize: 4,
        valueSize: 8,
        maxEntries: 16,
      });
      onCleanup('close inner map', () => closeFd(inner));
      mapUpdate(outer, u32(1), u32(inner));
      onCleanup('remove inner map from outer', () => void mapDelete(outer, u32(1)));
      // User space reads back the inner map's id, not the fd it wrote.
      expect(mapLookup(outer, u32(1), 4)!.readUInt32LE()).toBeGreaterThan(0);

      const link = object.attach('record_getppid');
      onCleanup('destroy auto-attached link', () => link.destroy());
      expect(link.description).toBe(
        'program record_getppid (tracepoint/syscalls/sys_enter_getppid)',
      );
      callGetppid(5);
      link.destroy();
      expect(mapLookup(inner, u32(7), 8)!.readBigUInt64LE()).toBe(5n);

      const mismatched = mapCreate({
        type: MapType.HASH,
        name: 'fixture_small',
        keySize: 4,
        valueSize: 4,
        maxEntries: 16,
      });
      onCleanup('close mismatched map', () => closeFd(mismatched));
      expect(() => mapUpdate(outer, u32(2), u32(mismatched))).toThrow(
        expect.objectContaining({ code: 'EINVAL' }),
      );
    });

    it('pin and reopen a map by fd', () => {
      const pinDir = fs.mkdtempSync(path.join(BPFFS, 'sigil-native-test-'));
      onCleanup('remove map pin directory', () =>
        fs.rmSync(pinDir, { recursive: true, force: true }),
      );
      const pinPath = path.join(pinDir, 'counters');
      objPin(mapFd('counters'), pinPath);
      const fd = objGet(pinPath);
      mapUpdate(fd, u32(5), u64(55n));
      expect(mapLookup(mapFd('counters'), u32(5), 8)!.readBigUInt64LE()).toBe(55n);
      expect(mapDelete(mapFd('counters'), u32(5))).toBe(true);
      closeFd(fd);
      expect(() => closeFd(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
      expect(() => objGet(path.join(pinDir, 'missing'))).toThrow(
        expect.objectContaining({ code: 'ENOENT' }),
      );
    });

    it('reuse a pinned map through setMapPinPath', () => {
      const pinDir = fs.mkdtempSync(path.join(BPFFS, 'sigil-native-test-'));
      onCleanup('remove map pin directory', () =>
        fs.rmSync(pinDir, { recursive: true, force: true }),
      );
      const pinPath = path.join(pinDir, 'counters');
      object.pinMap('counters', pinPath);
      onCleanup('unpin counters', () => {
        if (fs.existsSync(pinPath)) object.unpinMap('counters', pinPath);
      });
      mapUpdate(mapFd('counters'), u32(99), u64(4242n));

      const second = new BpfObject(objectPath);
      onCleanup('close second object', () => second.close());
      second.setMapPinPath('counters', pinPath);
      second.load();
      expect(mapLookup(second.mapFd('counters'), u32(99), 8)!.readBigUInt64LE()).toBe(4242n);
      second.close();

      object.unpinMap('counters', pinPath);
      expect(fs.existsSync(pinPath)).toBe(false);
      expect(mapDelete(mapFd('counters'), u32(99))).toBe(true);
    });
  });

  it('mount throws with errno for a missing target', () => {
    const target = path.join(workDir, 'missing', 'mount-point');
    expect(() => mount('none', target, 'tmpfs', 0, '')).toThrow(
      `mount none on ${target} (tmpfs): No such file or directory (errno 2)`,
    );
  });

  describe('trimFileCache', () => {
    it('writes back and drops all but the kept tail of a file', async () => {
      const file = path.join(workDir, 'trim.bin');
      fs.writeFileSync(file, Buffer.alloc(8 << 20, 0x61));
      const fd = fs.openSync(file, 'r+');
      try {
        const result = await trimFileCache(fd, 0, 1 << 20);
        expect(result).toEqual({ releasedTo: 7 << 20, regular: true });
        const resident = Number(
          execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], {
            encoding: 'utf8',
          }).trim(),
        );
        // The kept 1 MiB, and at most one large folio (up to 2 MiB) that crosses the boundary.
        expect(resident).toBeLessThanOrEqual(3 << 20);
        // Nothing new past the released part: the offset stays.
        expect(await trimFileCache(fd, result.releasedTo, 1 << 20)).toEqual(result);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('does nothing on a device and names the descriptor on failure', async () => {
      const device = fs.openSync(os.devNull, 'w');
      try {
        expect(await trimFileCache(device, 0, 0)).toEqual({ releasedTo: 0, regular: false });
      } finally {
        fs.closeSync(device);
      }
      const closed = fs.openSync(os.devNull, 'r');
      fs.closeSync(closed);
      await expect(trimFileCache(closed, 0, 0)).rejects.toThrow(
        `fstat fd ${closed}: Bad file descriptor (errno 9)`,
      );
      expect(() => trimFileCache(3, -1, 0)).toThrow(
        new RangeError('trimFileCache: from must be from 0 to 4503599627370496, got -1'),
      );
    });
  });

  describe('cgroup connect4 program', () => {
    let cgroupPath = '';
    let child: ChildProcess;
    let nextLine: () => Promise<string>;
    let deniedPort = 0;
    let otherPort = 0;

    // Reads port numbers on stdin and prints "ok" or the error code of a connect to 127.0.0.7.
    const CHILD_SCRIPT = `
      const net = require('node:net');
      require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
        const socket = net.connect({ host: '127.0.0.7', port: Number(line) });
        socket.once('connect', () => { socket.destroy(); process.stdout.write('ok\\n'); });
        socket.once('error', (error) => process.stdout.write(error.code + '\\n'));
      });`;

    async function listen(): Promise<number> {
      const server = net.createServer((socket) => socket.destroy());
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.7', resolve));
      onCleanup(
        'close server',
        () => new Promise<void>((resolve) => server.close(() => resolve())),
      );
      return (server.address() as net.AddressInfo).port;
    }

    async function childConnect(port: number): Promise<string> {
      child.stdin!.write(`${port}\n`);
      return nextLine();
    }

    async function ownConnect(port: number): Promise<string> {
      return new Promise((resolve) => {
        const socket = net.connect({ host: '127.0.0.7', port });
        socket.once('connect', () => {
          socket.destroy();
          resolve('ok');
        });
        socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
      });
    }

    beforeAll(async () => {
      deniedPort = await listen();
      otherPort = await listen();
      cgroupPath = path.join(findCgroup2Root(), `sigil-native-test-${process.pid}`);
      fs.mkdirSync(cgroupPath);
      onCleanup('remove test cgroup', () => fs.rmdirSync(cgroupPath));

      child = spawn(process.execPath, ['-e', CHILD_SCRIPT], { stdio: ['pipe', 'pipe', 'inherit'] });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      onCleanup('stop child process', async () => {
        child.kill('SIGKILL');
        await exited;
      });
      nextLine = lineReader(child.stdout!);
      fs.writeFileSync(path.join(cgroupPath, 'cgroup.procs'), String(child.pid));
      expect(fs.readFileSync(`/proc/${child.pid}/cgroup`, 'utf8')).toContain(
        `0::/${path.basename(cgroupPath)}\n`,
      );
    });

    it('denies connect only while attached and configured', async () => {
      writeConfig({ denyPort: deniedPort, denyEnabled: true });
      expect(await childConnect(deniedPort)).toBe('ok');

      const link = object.attachCgroup('deny_connect4', cgroupPath);
      onCleanup('destroy connect4 link', () => link.destroy());
      expect(link.description).toBe(`program deny_connect4 on cgroup ${cgroupPath}`);
      expect(await childConnect(deniedPort)).toBe('EPERM');
      expect(await childConnect(otherPort)).toBe('ok');
      // The test process is outside the cgroup.
      expect(await ownConnect(deniedPort)).toBe('ok');

      writeConfig({ denyPort: deniedPort, denyEnabled: false });
      expect(await childConnect(deniedPort)).toBe('ok');

      writeConfig({ denyPort: deniedPort, denyEnabled: true });
      expect(await childConnect(deniedPort)).toBe('EPERM');
      link.destroy();
      expect(await childConnect(deniedPort)).toBe('ok');
      writeConfig();
    });

    it('names the program and cgroup in attach errors', () => {
      const missing = path.join(cgroupPath, 'missing');
      expect(() => object.attachCgroup('deny_connect4', missing)).toThrow(
        `open cgroup ${missing}: No such file or directory (errno 2)`,
      );
      expect(() => object.attach('deny_connect4')).toThrow(
        expect.objectContaining({ code: 'EOPNOTSUPP' }),
      );
    });
  });

  describe('RingBufferConsumer', () => {
    it('delivers exec records in framed batches', async () => {
      writeConfig();
      await drainEvents();
      const link = object.attachRawTracepoint('record_exec', 'sched_process_exec');
      onCleanup('destroy exec link', () => link.destroy());
      const batches: Array<{ batch: Buffer; count: number }> = [];
      const consumer = new RingBufferConsumer(mapFd('events'), (batch, count) => {
        batches.push({ batch: Buffer.from(batch), count });
      });
      onCleanup('stop exec consumer', () => consumer.stop());
      consumer.start();
      expect(consumer.running).toBe(true);

      const childPids: number[] = [];
      for (let i = 0; i < 5; i++) {
        const child = spawn('/bin/true');
        childPids.push(child.pid!);
        await new Promise((resolve) => child.once('exit', resolve));
      }
      const records = () => batches.reduce((sum, { count }) => sum + count, 0);
      await waitFor('5 exec records', () => records() >= 5);
      consumer.stop();
      link.destroy();
      expect(consumer.running).toBe(false);

      const seenPids: number[] = [];
      for (const { batch, count } of batches) {
        const frames = parseFrames(batch);
        expect(frames).toHaveLength(count);
        expect([...batchRecords(batch)].map((record) => record.length)).toEqual(
          frames.map((frame) => frame.length),
        );
        for (const { length, record } of frames) {
          expect(length).toBe(EXEC_RECORD_BYTES);
          expect(record.readUInt32LE(0)).toBe(RECORD_EXEC);
          expect(record.readUInt32LE(8)).toBe(process.pid);
          expect(record.subarray(12, 28).toString('latin1').replace(/\0+$/, '')).toBe('true');
          expect(record[28]).toBe(0x5a);
          seenPids.push(record.readUInt32LE(4));
        }
      }
      expect(seenPids.sort()).toEqual(childPids.sort());
      const stats = consumer.stats();
      expect(stats.records).toBe(5);
      expect(stats.bytes).toBe(5 * EXEC_RECORD_BYTES);
      expect(stats.batches).toBe(batches.length);
      expect(stats.discardedRecords).toBe(0);
    });

    it('splits batches at maxBatchBytes', async () => {
      writeConfig();
      await drainEvents();
      const link = attachGetppid();
      const batches: Buffer[] = [];
      let records = 0;
      const maxBatchBytes = 64;
      const consumer = new RingBufferConsumer(
        mapFd('events'),
        (batch, count) => {
          batches.push(Buffer.from(batch));
          records += count;
        },
        { maxBatchBytes },
      );
      onCleanup('stop batching consumer', () => consumer.stop());
      consumer.start();
      callGetppid(100);
      await waitFor('100 getppid records', () => records >= 100);
      consumer.stop();
      link.destroy();

      expect(records).toBe(100);
      for (const batch of batches) {
        expect(batch.length).toBeLessThanOrEqual(maxBatchBytes);
        for (const { length, record } of parseFrames(batch)) {
          expect(length).toBe(GETPPID_RECORD_BYTES);
          expect(record.readUInt32LE(0)).toBe(RECORD_GETPPID);
          expect(record.readUInt32LE(4)).toBe(process.pid);
          expect(record[8]).toBe(0xa5);
        }
      }
      // A 9-byte record takes a 24-byte frame, so two fit in 64 bytes.
      expect(batches.length).toBeGreaterThanOrEqual(50);
    });

    it('stops promptly from inside a slow onBatch', async () => {
      writeConfig();
      await drainEvents();
      resetDrops();
      const link = attachGetppid();
      let calls = 0;
      let deliveredRecords = 0;
      let stopMs = -1;
      let consumer: RingBufferConsumer | undefined;
      const stopped = new Promise<void>((resolve) => {
        consumer = new RingBufferConsumer(
          mapFd('events'),
          (_batch, count) => {
            calls++;
            deliveredRecords += count;
            sleepSync(20);
            if (calls === 3) {
              const start = performance.now();
              consumer!.stop();
              stopMs = performance.now() - start;
              resolve();
            }
          },
          { maxBatchBytes: 64, maxQueuedBatches: 1 },
        );
      });
      onCleanup('stop slow consumer', () => consumer!.stop());
      consumer!.start();
      // The JavaScript thread is busy here, so the queue fills, the thread blocks, and the ring
      // buffer overflows.
      callGetppid(RECORDS_TO_OVERFILL_RING);
      await stopped;
      link.destroy();
      // Let the thread-safe function finish, which counts the batches it discarded.
      await sleep(200);

      expect(calls).toBe(3);
      expect(stopMs).toBeGreaterThanOrEqual(0);
      expect(stopMs).toBeLessThan(1000);
      const drops = readDrops();
      expect(drops).toBeGreaterThan(0);
      const stats = consumer!.stats();
      expect(stats.discardedRecords).toBeGreaterThan(0);
      // Every record the thread consumed was either delivered or counted as discarded.
      expect(stats.records).toBe(deliveredRecords + stats.discardedRecords);
      // Every record the program produced was consumed, dropped by the kernel side, or is still
      // in the ring buffer.
      const leftInRing = await drainEvents();
      expect(stats.records + drops + leftInRing).toBe(RECORDS_TO_OVERFILL_RING);
    });

    it('stops promptly while its queue is full', async () => {
      writeConfig();
      await drainEvents();
      const link = attachGetppid();
      let calls = 0;
      const consumer = new RingBufferConsumer(mapFd('events'), () => calls++, {
        maxBatchBytes: 64,
        maxQueuedBatches: 1,
      });
      onCleanup('stop blocked consumer', () => consumer.stop());
      consumer.start();
      callGetppid(RECORDS_TO_OVERFILL_RING);
      // Without returning to the event loop, give the thread time to fill the queue and block.
      sleepSync(200);
      const start = performance.now();
      consumer.stop();
      const stopMs = performance.now() - start;
      link.destroy();
      await sleep(200);

      expect(stopMs).toBeLessThan(1000);
      expect(calls).toBe(0);
      const stats = consumer.stats();
      expect(stats.records).toBeGreaterThan(0);
      expect(stats.discardedRecords).toBe(stats.records);
      consumer.stop();
    });

    it('hands over no batch past maxUnreleasedBatches', async () => {
      writeConfig();
      await drainEvents();
      const link = attachGetppid();
      let calls = 0;
      let records = 0;
      const consumer = new RingBufferConsumer(
        mapFd('events'),
        (_batch, count) => {
          calls++;
          records += count;
        },
        { maxBatchBytes: 64, maxUnreleasedBatches: 1 },
      );
      onCleanup('stop release-mode consumer', () => consumer.stop());
      consumer.start();
      callGetppid(100);
      await waitFor('the first batch', () => calls === 1);
      // Without a release the thread waits, however long the event loop runs.
      await sleep(300);
      expect(calls).toBe(1);

      consumer.release();
      await waitFor('the second batch', () => calls === 2);
      await sleep(100);
      expect(calls).toBe(2);

      // Releasing every batch as it arrives delivers the rest.
      const releaseEach = setInterval(() => consumer.release(), 1);
      await waitFor('100 getppid records', () => records >= 100);
      clearInterval(releaseEach);
      consumer.stop();
      link.destroy();
      expect(records).toBe(100);
      expect(consumer.stats().discardedRecords).toBe(0);
    });

    it('stops promptly while waiting for a release', async () => {
      writeConfig();
      await drainEvents();
      const link = attachGetppid();
      let calls = 0;
      const consumer = new RingBufferConsumer(mapFd('events'), () => calls++, {
        maxBatchBytes: 64,
        maxUnreleasedBatches: 1,
      });
      onCleanup('stop waiting consumer', () => consumer.stop());
      consumer.start();
      callGetppid(100);
      await waitFor('the first batch', () => calls === 1);
      const start = performance.now();
      consumer.stop();
      const stopMs = performance.now() - start;
      link.destroy();
      await drainEvents();

      expect(stopMs).toBeLessThan(1000);
      expect(calls).toBe(1);
      const stats = consumer.stats();
      expect(stats.discardedRecords).toBeGreaterThan(0);
    });

    it('keeps working after the object and map fd are closed', async () => {
      const second = new BpfObject(objectPath);
      onCleanup('close object closed early', () => second.close());
      second.load();
      const config = Buffer.alloc(8);
      config.writeUInt32LE(process.pid, 0);
      mapUpdate(second.mapFd('fixture_config'), u32(0), config);
      const link = second.attachTracepoint('record_getppid', 'syscalls', 'sys_enter_getppid');
      onCleanup('destroy link of closed object', () => link.destroy());

      const pinDir = fs.mkdtempSync(path.join(BPFFS, 'sigil-native-test-'));
      onCleanup('remove events pin directory', () =>
        fs.rmSync(pinDir, { recursive: true, force: true }),
      );
      objPin(second.mapFd('events'), path.join(pinDir, 'events'));
      const eventsFd = objGet(path.join(pinDir, 'events'));
      let records = 0;
      const consumer = new RingBufferConsumer(eventsFd, (_batch, count) => {
        records += count;
      });
      onCleanup('stop consumer of closed object', () => consumer.stop());
      closeFd(eventsFd);
      second.close();
      consumer.start();

      callGetppid(5);
      await waitFor('5 records from the closed object', () => records >= 5);
      consumer.stop();
      link.destroy();
      expect(records).toBe(5);
    });

    it('rejects a second start and a restart', () => {
      const consumer = new RingBufferConsumer(mapFd('events'), () => {});
      onCleanup('stop lifecycle consumer', () => consumer.stop());
      consumer.start();
      expect(() => consumer.start()).toThrow('the consumer is already running');
      consumer.stop();
      consumer.stop();
      expect(() => consumer.start()).toThrow('the consumer was stopped');
    });

    it('rejects a map that is not a ring buffer', () => {
      expect(() => new RingBufferConsumer(mapFd('counters'), () => {})).toThrow(
        expect.objectContaining({
          code: 'EINVAL',
          message: expect.stringMatching(
            /^create ring buffer consumer for map fd \d+: Invalid argument/,
          ),
        }),
      );
    });
  });

  describe('ringBufferPositions', () => {
    it('measures unconsumed bytes and the fill', async () => {
      writeConfig();
      await drainEvents();
      const empty = ringBufferPositions(mapFd('events'));
      expect(empty.size).toBe(16 * 1024);
      expect(empty.producerPosition).toBe(empty.consumerPosition);
      expect(ringBufferFill(mapFd('events'))).toBe(0);

      const link = attachGetppid();
      callGetppid(100);
      const written = ringBufferPositions(mapFd('events'));
      // Each record takes its 8-byte header plus 9 bytes rounded up to 8: 24 bytes.
      expect(written.producerPosition - written.consumerPosition).toBe(100n * 24n);
      expect(written.consumerPosition).toBe(empty.consumerPosition);
      expect(ringBufferFill(mapFd('events'))).toBeCloseTo(2400 / 16384, 10);

      resetDrops();
      callGetppid(RECORDS_TO_OVERFILL_RING);
      link.destroy();
      expect(readDrops()).toBeGreaterThan(0);
      // Full means fewer free bytes than one more record needs.
      expect(ringBufferFill(mapFd('events'))).toBeGreaterThan(1 - 24 / 16384);

      const drained = await drainEvents();
      expect(drained).toBeGreaterThan(600);
      expect(ringBufferFill(mapFd('events'))).toBe(0);
    });

    it('rejects a map that is not a ring buffer', () => {
      expect(() => ringBufferPositions(mapFd('counters'))).toThrow(
        expect.objectContaining({
          code: 'EINVAL',
          message: expect.stringMatching(
            /^read ring buffer positions of map fd \d+: Invalid argument/,
          ),
        }),
      );
    });

    it('rejects a negative fd', () => {
      expect(() => ringBufferPositions(-1)).toThrow(/ringBufferPositions: mapFd must be from 0/);
    });
  });

  describe('Link', () => {
    it('pins and unpins in bpffs', async () => {
      writeConfig();
      const pinDir = fs.mkdtempSync(path.join(BPFFS, 'sigil-native-test-'));
      onCleanup('remove link pin directory', () =>
        fs.rmSync(pinDir, { recursive: true, force: true }),
      );
      const pinPath = path.join(pinDir, 'getppid_link');
      const calls = mapFd('getppid_calls');
      const countCalls = (count: number) => {
        const before = sumPerCpu(calls);
        callGetppid(count);
        return sumPerCpu(calls) - before;
      };

      const link = attachGetppid();
      expect(link.fd).toBeGreaterThan(2);
      expect(link.pinPath).toBeNull();
      expect(() => link.unpin()).toThrow('the link is not pinned');
      link.pin(pinPath);
      expect(link.pinPath).toBe(pinPath);
      expect(fs.existsSync(pinPath)).toBe(true);
      const pinnedFd = objGet(pinPath);
      closeFd(pinnedFd);
      link.unpin();
      expect(fs.existsSync(pinPath)).toBe(false);
      expect(countCalls(3)).toBe(3);

      // A pinned link survives destroy() and detaches when the pin goes away.
      link.pin(pinPath);
      link.destroy();
      link.destroy();
      expect(() => link.fd).toThrow('the link is destroyed');
      expect(countCalls(3)).toBe(3);
      fs.unlinkSync(pinPath);
      await waitFor('the unpinned link to detach', () => countCalls(1) === 0);
    });

    it('is released when a worker thread ends', async () => {
      writeConfig();
      const pinDir = fs.mkdtempSync(path.join(BPFFS, 'sigil-native-test-'));
      onCleanup('remove worker pin directory', () =>
        fs.rmSync(pinDir, { recursive: true, force: true }),
      );
      const pinPath = path.join(pinDir, 'worker_calls');
      // The worker loads its own copy of the fixture, attaches it, and starts a consumer whose
      // onBatch is slow, then stays alive until terminated.
      const workerCode = `
        const { parentPort, workerData } = require('node:worker_threads');
        const addon = require(workerData.addonPath);
        const object = new addon.BpfObject(workerData.objectPath);
        object.load();
        object.pinMap('getppid_calls', workerData.pinPath);
        const config = Buffer.alloc(8);
        config.writeUInt32LE(workerData.pid, 0);
        addon.mapUpdate(object.mapFd('fixture_config'), Buffer.alloc(4), config, 0);
        const link = object.attachTracepoint('record_getppid', 'syscalls', 'sys_enter_getppid');
        const consumer = new addon.RingBufferConsumer(object.mapFd('events'), () => {
          const end = Date.now() + 20;
          while (Date.now() < end);
        }, { maxBatchBytes: 64, maxQueuedBatches: 1 });
        consumer.start();
        globalThis.workerResources = { object, link, consumer };
        parentPort.postMessage('ready');`;
      const worker = new Worker(workerCode, {
        eval: true,
        workerData: { addonPath: NATIVE_ADDON_PATH, objectPath, pinPath, pid: process.pid },
      });
      onCleanup('terminate worker', () => worker.terminate().then(() => undefined));
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      });

      const pinnedCalls = objGet(pinPath);
      onCleanup('close pinned worker map', () => closeFd(pinnedCalls));
      callGetppid(RECORDS_TO_OVERFILL_RING);
      expect(sumPerCpu(pinnedCalls)).toBe(RECORDS_TO_OVERFILL_RING);
      // The worker's consumer is now blocked on a full queue behind a slow onBatch.
      await sleep(50);

      const start = performance.now();
      await worker.terminate();
      expect(performance.now() - start).toBeLessThan(5000);
      // The environment's cleanup hook destroyed the worker's link.
      await waitFor('the worker link to detach', () => {
        const before = sumPerCpu(pinnedCalls);
        callGetppid(1);
        return sumPerCpu(pinnedCalls) === before;
      });
      const detachedCount = sumPerCpu(pinnedCalls);
      callGetppid(10);
      expect(sumPerCpu(pinnedCalls)).toBe(detachedCount);
    });
  });
});
