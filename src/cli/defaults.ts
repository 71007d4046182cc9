import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** Unix socket of the audit gRPC service. */
export const DEFAULT_SOCKET = '/run/sigil/sigil.sock';

/** State files of the agent; under /run, so they go away with the pins at reboot. */
export const DEFAULT_STATE_DIR = '/run/sigil';

const PACKAGE_ROOT = join(__dirname, '..', '..');
export const EXAMPLE_REGISTRATION = join(PACKAGE_ROOT, 'examples', 'registration.yaml');
export const EXAMPLE_POLICIES = join(PACKAGE_ROOT, 'examples', 'policies');

export const NODE_REGISTRATION = '/etc/sigil/registration.yaml';
export const NODE_POLICIES = '/etc/sigil/policies';

/** Returns the node's file when it exists, else the bundled example, and which one it chose. */
export function chooseDefault(nodePath: string, examplePath: string): { path: string; example: boolean } {
  return existsSync(nodePath) ? { path: nodePath, example: false } : { path: examplePath, example: true };
}
