/**
 * SHA-256 of process executables, read through /proc/<pid>/exe so that the digest belongs to the
 * file the process runs, even when that file was unlinked or lives in another mount namespace.
 */

import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

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
   * Other errors throw.
   */
  hashExecutable(pid: number): string | null {
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
      return this.hashOpenFile(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** Number of cached digests. */
  get size(): number {
    return this.digests.size;
  }

  private hashOpenFile(fd: number): string | null {
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

    const hash = createHash('sha256');
    const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
    for (;;) {
      const bytesRead = readSync(fd, buffer, 0, buffer.length, null);
      if (bytesRead === 0) {
        break;
      }
      hash.update(buffer.subarray(0, bytesRead));
    }
    const digest = hash.digest('hex');

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
