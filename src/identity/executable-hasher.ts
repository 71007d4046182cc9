/**
 * SHA-256 of process executables, read through /proc/<pid>/exe so that the digest belongs to the
 * file the process runs, even when that file was unlinked or lives in another mount namespace.
 */

import { closeSync, fstatSync, openSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

export interface ExecutableHasherOptions {
  /** Root of procfs; defaults to /proc. */
  procRoot?: string;
  /** Executables larger than this many bytes are not hashed. Defaults to no limit. */
  maxSizeBytes?: number;
  /** Number of digests kept, dropping the least recently used. Defaults to 1024. */
  maxEntries?: number;
}

const READ_CHUNK_BYTES = 1024 * 1024;

/**
 * The hashing thread. It reads a descriptor that the main thread opened (descriptors belong to
 * the process, so the thread can read them) and replies with the digest or the error's code and
 * message. It is kept as source text, so the same code runs from src/ under vitest and from
 * dist/ after tsc.
 */
const HASH_THREAD_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { readSync } = require('node:fs');
const buffer = Buffer.allocUnsafe(${READ_CHUNK_BYTES});
parentPort.on('message', ({ id, fd }) => {
  try {
    const hash = createHash('sha256');
    let position = 0;
    for (;;) {
      const bytesRead = readSync(fd, buffer, 0, buffer.length, position);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      position += bytesRead;
    }
    parentPort.postMessage({ id, digest: hash.digest('hex') });
  } catch (error) {
    parentPort.postMessage({ id, code: error.code, message: String(error.message) });
  }
});
`;

interface HashReply {
  id: number;
  digest?: string;
  code?: string;
  message?: string;
}

interface HashRequest {
  resolve: (digest: string) => void;
  reject: (error: Error) => void;
}

/**
 * One thread, shared by every hasher of the process, that computes SHA-256 digests off the main
 * thread, so that hashing a large executable does not hold up the event loop (events, gRPC,
 * attestation of other processes). Requests are served in order. The thread keeps the process
 * alive only while a request is pending, and is started again after it dies.
 */
class HashThread {
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, HashRequest>();

  /** Hashes the whole file open as `fd`, from offset 0. The caller keeps `fd` open until then. */
  hash(fd: number): Promise<string> {
    const worker = this.start();
    const id = this.nextId++;
    return new Promise<string>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) worker.ref();
      worker.postMessage({ id, fd });
    });
  }

  private start(): Worker {
    if (this.worker !== null) return this.worker;
    const worker = new Worker(HASH_THREAD_SOURCE, { eval: true });
    worker.unref();
    worker.on('message', (reply: HashReply) => {
      const request = this.pending.get(reply.id);
      if (request === undefined) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if (reply.digest !== undefined) {
        request.resolve(reply.digest);
        return;
      }
      const error: NodeJS.ErrnoException = new Error(`hash executable: ${reply.message}`);
      if (reply.code !== undefined) error.code = reply.code;
      request.reject(error);
    });
    const fail = (error: Error): void => {
      if (this.worker === worker) this.worker = null;
      const requests = [...this.pending.values()];
      this.pending.clear();
      for (const request of requests) request.reject(error);
    };
    worker.on('error', fail);
    worker.on('exit', (code) =>
      fail(new Error(`the executable hashing thread exited with code ${code}`)),
    );
    this.worker = worker;
    return worker;
  }
}

let sharedThread: HashThread | undefined;

/**
 * Hashes executables and caches each digest by the file's device, inode, size, modification
 * time and change time, so processes running the same unchanged binary share one hash.
 *
 * NOTE: A file rewritten in place with the same size within one file system timestamp tick
 * keeps its cache key, so its old digest would be returned.
 */
export class ExecutableHasher {
  private readonly procRoot: string;
  /** Null for no limit. */
  private readonly maxSizeBytes: bigint | null;
  private readonly maxEntries: number;
  /** Digests by file key, in least to most recently used order. */
  private readonly digests = new Map<string, string>();

  constructor(options: ExecutableHasherOptions = {}) {
    this.procRoot = options.procRoot ?? '/proc';
    const { maxSizeBytes } = options;
    if (maxSizeBytes !== undefined && !(Number.isSafeInteger(maxSizeBytes) && maxSizeBytes >= 0)) {
      throw new RangeError(`invalid maxSizeBytes ${maxSizeBytes}: expected an integer >= 0`);
    }
    this.maxSizeBytes = maxSizeBytes === undefined ? null : BigInt(maxSizeBytes);
    this.maxEntries = options.maxEntries ?? 1024;
    if (!(Number.isSafeInteger(this.maxEntries) && this.maxEntries >= 1)) {
      throw new RangeError(`invalid maxEntries ${this.maxEntries}: expected an integer >= 1`);
    }
  }

  /**
   * Returns the lowercase hex SHA-256 of the process's executable, or null when the process is
   * gone, has no executable (kernel threads, zombies) or the file is larger than `maxSizeBytes`.
   * Other errors reject. The file is read and hashed on a separate thread.
   */
  async hashExecutable(pid: number): Promise<string | null> {
    let fd: number;
    try {
      fd = openSync(`${this.procRoot}/${pid}/exe`, 'r');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH') {
        return null;
      }
      throw error;
    }
    try {
      return await this.hashOpenFile(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** Number of cached digests. */
  get size(): number {
    return this.digests.size;
  }

  private async hashOpenFile(fd: number): Promise<string | null> {
    const before = fstatSync(fd, { bigint: true });
    const key = `${before.dev}:${before.ino}:${before.size}:${before.mtimeNs}:${before.ctimeNs}`;
    const cached = this.digests.get(key);
    if (cached !== undefined) {
      this.digests.delete(key);
      this.digests.set(key, cached);
      return cached;
    }
    if (this.maxSizeBytes !== null && before.size > this.maxSizeBytes) {
      return null;
    }

    const digest = await (sharedThread ??= new HashThread()).hash(fd);

    // A file that changed while it was read gets no cache entry, so the next call reads it again.
    const after = fstatSync(fd, { bigint: true });
    const keyAfter = `${after.dev}:${after.ino}:${after.size}:${after.mtimeNs}:${after.ctimeNs}`;
    if (keyAfter === key) {
      this.digests.set(key, digest);
      if (this.digests.size > this.maxEntries) {
        const oldest = this.digests.keys().next().value as string;
        this.digests.delete(oldest);
      }
    }
    return digest;
  }
}
