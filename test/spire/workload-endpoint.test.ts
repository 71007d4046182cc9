import { describe, expect, it } from 'vitest';
import { ExponentialBackoff } from '../../src/identity/spire/backoff';
import {
  grpcTarget,
  parseWorkloadEndpoint,
  resolveWorkloadEndpoint,
  WorkloadEndpointError,
} from '../../src/identity/spire/workload-endpoint';

describe('parseWorkloadEndpoint', () => {
  it.each([
    ['unix:///run/spire/api.sock', { kind: 'unix', path: '/run/spire/api.sock' }],
    ['tcp://127.0.0.1:8082', { kind: 'tcp', host: '127.0.0.1', port: 8082 }],
    ['tcp://[::1]:8082', { kind: 'tcp', host: '::1', port: 8082 }],
  ])('accepts %s', (address, expected) => {
    expect(parseWorkloadEndpoint(address)).toEqual(expected);
  });

  it.each([
    ['unix://host/api.sock', "form 'unix:///absolute/path'"],
    ['unix:/api.sock', "form 'unix:///absolute/path'"],
    ['unix:///', 'must name a file'],
    ['unix:///run/api.sock?x=1', 'query or fragment'],
    ['tcp://localhost:8082', 'IP address, not a host name'],
    ['tcp://127.0.0.1', 'needs a port'],
    ['tcp://127.0.0.1:8082/path', 'must not have a path'],
    ['tcp://user@127.0.0.1:8082', 'userinfo'],
    ['http://127.0.0.1:8082', "unsupported scheme 'http'"],
    ['/run/api.sock', "expected 'unix:///path'"],
  ])('rejects %s', (address, messagePart) => {
    expect(() => parseWorkloadEndpoint(address)).toThrow(WorkloadEndpointError);
    expect(() => parseWorkloadEndpoint(address)).toThrow(messagePart);
  });

  it('falls back to SPIFFE_ENDPOINT_SOCKET', () => {
    expect(resolveWorkloadEndpoint(undefined, { SPIFFE_ENDPOINT_SOCKET: 'unix:///tmp/a.sock' })).toEqual({
      kind: 'unix',
      path: '/tmp/a.sock',
    });
    expect(() => resolveWorkloadEndpoint(undefined, {})).toThrow(/SPIFFE_ENDPOINT_SOCKET is not set/);
  });

  it('builds gRPC targets', () => {
    expect(grpcTarget({ kind: 'unix', path: '/tmp/a.sock' })).toBe('unix:///tmp/a.sock');
    expect(grpcTarget({ kind: 'tcp', host: '::1', port: 1 })).toBe('[::1]:1');
  });
});

describe('ExponentialBackoff', () => {
  it('doubles up to the maximum and resets', () => {
    const backoff = new ExponentialBackoff({ initialDelayMs: 100, maxDelayMs: 350, jitter: 0 });
    expect([backoff.next(), backoff.next(), backoff.next(), backoff.next()]).toEqual([100, 200, 350, 350]);
    expect(backoff.attempts).toBe(4);
    backoff.reset();
    expect(backoff.next()).toBe(100);
  });

  it('keeps jittered delays within the range', () => {
    const backoff = new ExponentialBackoff({ initialDelayMs: 1000, maxDelayMs: 1000, jitter: 0.2 });
    for (let index = 0; index < 100; index++) {
      const delay = backoff.next();
      expect(delay).toBeGreaterThanOrEqual(800);
      expect(delay).toBeLessThanOrEqual(1000);
    }
  });

  it('rejects invalid options', () => {
    expect(() => new ExponentialBackoff({ initialDelayMs: 0 })).toThrow(RangeError);
    expect(() => new ExponentialBackoff({ initialDelayMs: 10, maxDelayMs: 5 })).toThrow(RangeError);
    expect(() => new ExponentialBackoff({ multiplier: 0.5 })).toThrow(RangeError);
  });
});
