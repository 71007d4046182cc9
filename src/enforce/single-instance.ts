import { connect } from 'node:net';

/**
 * Resolves true when something accepts connections on a unix socket path,
 * which means another agent serves it. Resolves false when the path is
 * missing or stale, such as one left behind by a killed agent.
 */
export function socketInUse(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(true);
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}
