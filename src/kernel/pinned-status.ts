import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { decodeIdentity, decodeSettings, encodeU32 } from './codec';
import { identityLayout, settingsLayout } from './layout';
import { closeFd, mapGetNextKey, mapLookup, objGet } from './native';

/** Pinned state under a bpffs directory: the enforcement that runs without an agent. */
export interface PinnedStatus {
  pinDir: string;
  /** Pinned program links by program name, each with the pid of the agent that attached it. */
  links: { program: string; agentPid: number }[];
  /** Rule-set generation the programs read, or null when the settings map is not pinned. */
  generation: number | null;
  /** Processes with a non-zero identity id in the identity map, or null when it is not pinned. */
  identifiedProcesses: number | null;
}

function withPinnedMap<T>(path: string, use: (fd: number) => T): T | null {
  if (!existsSync(path)) return null;
  const fd = objGet(path);
  try {
    return use(fd);
  } finally {
    closeFd(fd);
  }
}

/**
 * Reads the pinned state under pinDir without changing it. Returns null when
 * nothing is pinned there. Blocks on bpf(2) calls: one per identity entry.
 */
export function readPinnedStatus(pinDir: string): PinnedStatus | null {
  if (!existsSync(pinDir)) return null;
  const linksDir = join(pinDir, 'links');
  const links = existsSync(linksDir)
    ? readdirSync(linksDir).map((name) => {
        const dash = name.lastIndexOf('-');
        return { program: name.slice(0, dash), agentPid: Number(name.slice(dash + 1)) };
      })
    : [];
  const generation = withPinnedMap(join(pinDir, 'maps', 'sigil_settings'), (fd) => {
    const value = mapLookup(fd, encodeU32(0), settingsLayout.size);
    return value ? decodeSettings(value).generation : 0;
  });
  const identifiedProcesses = withPinnedMap(join(pinDir, 'maps', 'sigil_identities'), (fd) => {
    let count = 0;
    let key = mapGetNextKey(fd, null, 4);
    while (key) {
      const value = mapLookup(fd, key, identityLayout.size);
      if (value && decodeIdentity(value).id !== 0) count++;
      key = mapGetNextKey(fd, key, 4);
    }
    return count;
  });
  return { pinDir, links, generation, identifiedProcesses };
}
