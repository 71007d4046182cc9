import { describe, expect, it } from 'vitest';
import {
  formatIpv6,
  formatPrefix,
  maskAddress,
  parseCidr,
  parseIpAddress,
  prefixContains,
} from '../../src/policy/cidr';

const hex = (text: string) => parseIpAddress(text)!.addr.toString('hex');

describe('parseIpAddress', () => {
  it.each([
    ['10.1.2.3', 4, '00000000000000000000ffff0a010203'],
    ['0.0.0.0', 4, '00000000000000000000ffff00000000'],
    ['255.255.255.255', 4, '00000000000000000000ffffffffffff'],
    ['::', 6, '00000000000000000000000000000000'],
    ['::1', 6, '00000000000000000000000000000001'],
    ['2001:db8::1', 6, '20010db8000000000000000000000001'],
    ['2001:DB8:0:0:0:0:0:1', 6, '20010db8000000000000000000000001'],
    ['fe80::', 6, 'fe800000000000000000000000000000'],
    ['1:2:3:4:5:6:7::', 6, '00010002000300040005000600070000'],
    ['::ffff:10.1.2.3', 6, '00000000000000000000ffff0a010203'],
    ['::ffff:a01:203', 6, '00000000000000000000ffff0a010203'],
    ['1:2:3:4:5:6:1.2.3.4', 6, '00010002000300040005000601020304'],
  ])('parses %s', (text, family, expected) => {
    const parsed = parseIpAddress(text);
    expect(parsed?.family).toBe(family);
    expect(parsed?.addr.toString('hex')).toBe(expected);
  });

  it.each([
    '',
    '10.1.2',
    '10.1.2.3.4',
    '10.1.2.256',
    '010.1.2.3',
    '10.1.2.-1',
    ' 10.1.2.3',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '1::2::3',
    ':1::',
    '1:::2',
    '12345::',
    'g::1',
    '1.2.3.4::',
    '::1.2.3',
    'fe80::1%eth0',
    '1:2:3:4:5:6:7:8::',
    'localhost',
  ])('rejects %j', (text) => {
    expect(parseIpAddress(text)).toBeUndefined();
  });
});

describe('parseCidr', () => {
  it.each([
    ['10.0.0.0/8', '10.0.0.0/8', 104],
    ['127.0.0.2', '127.0.0.2/32', 128],
    ['0.0.0.0/0', '0.0.0.0/0', 96],
    ['192.168.1.128/25', '192.168.1.128/25', 121],
    ['2001:db8::/32', '2001:db8::/32', 32],
    ['2001:0DB8:0000::/32', '2001:db8::/32', 32],
    ['::1', '::1/128', 128],
    ['::/0', '::/0', 0],
    ['::ffff:10.0.0.0/104', '::ffff:10.0.0.0/104', 104],
    ['2001:db8:0:0:1:0:0:0/80', '2001:db8:0:0:1::/80', 80],
  ])('normalises %s to %s', (text, normalised, prefixLen) => {
    const result = parseCidr(text);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.cidr.text).toBe(normalised);
    expect(result.cidr.prefixLen).toBe(prefixLen);
  });

  it('stores IPv4 prefixes IPv4-mapped', () => {
    const result = parseCidr('10.1.0.0/16');
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.cidr.addr.toString('hex')).toBe('00000000000000000000ffff0a010000');
  });

  it.each([
    ['10.1.2.3/8', 'host bits are set after the prefix', 'use 10.0.0.0/8'],
    ['192.168.1.1/24', 'host bits are set after the prefix', 'use 192.168.1.0/24'],
    ['2001:db8::1/32', 'host bits are set after the prefix', 'use 2001:db8::/32'],
    ['::1/0', 'host bits are set after the prefix', 'use ::/0'],
    ['10.0.0.0/33', 'prefix length "33" is invalid', 'IPv4 prefix lengths are 0-32'],
    ['2001:db8::/129', 'prefix length "129" is invalid', 'IPv6 prefix lengths are 0-128'],
    ['10.0.0.0/', 'prefix length "" is invalid', 'IPv4 prefix lengths are 0-32'],
    ['10.0.0.0/08', 'prefix length "08" is invalid', 'IPv4 prefix lengths are 0-32'],
    ['10.0.0.0/8/8', 'prefix length "8/8" is invalid', 'IPv4 prefix lengths are 0-32'],
    ['10.0.0.0/-1', 'prefix length "-1" is invalid', 'IPv4 prefix lengths are 0-32'],
    ['10.0.0/8', '"10.0.0" is not an IPv4 or IPv6 address', 'expected an address or prefix'],
    ['example.org/8', '"example.org" is not an IPv4 or IPv6 address', 'expected an address'],
  ])('rejects %s', (text, reason, hint) => {
    const result = parseCidr(text);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.reason).toBe(reason);
    expect(result.hint).toContain(hint);
  });
});

describe('formatIpv6', () => {
  it.each([
    ['::', '::'],
    ['::1', '::1'],
    ['2001:db8::', '2001:db8::'],
    // RFC 5952: compress the longest zero run, the first one on a tie, and never a single group.
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['::ffff:10.1.2.3', '::ffff:10.1.2.3'],
  ])('formats %s as %s', (text, expected) => {
    expect(formatIpv6(parseIpAddress(text)!.addr)).toBe(expected);
  });
});

describe('formatPrefix', () => {
  it.each([
    ['::ffff:10.0.0.0', 104, '10.0.0.0/8'],
    ['::ffff:0.0.0.0', 96, '0.0.0.0/0'],
    ['::', 0, '::/0'],
    ['::ffff:0.0.0.0', 80, '::ffff:0.0.0.0/80'],
    ['2001:db8::', 32, '2001:db8::/32'],
  ])('formats %s/%i as %s', (address, prefixLen, expected) => {
    expect(formatPrefix(parseIpAddress(address)!.addr, prefixLen)).toBe(expected);
  });
});

describe('prefixContains', () => {
  it.each([
    ['10.0.0.0', 104, '10.255.1.2', true],
    ['10.0.0.0', 104, '11.0.0.0', false],
    ['10.1.2.0', 126, '10.1.2.3', true],
    ['10.1.2.0', 126, '10.1.2.4', false],
    ['::', 0, '2001:db8::1', true],
    ['::', 0, '10.1.2.3', true],
    ['::ffff:0.0.0.0', 96, '10.1.2.3', true],
    ['::ffff:0.0.0.0', 96, '2001:db8::1', false],
    ['2001:db8::', 33, '2001:db8:7fff::', true],
    ['2001:db8::', 33, '2001:db8:8000::', false],
    ['2001:db8::1', 128, '2001:db8::1', true],
    ['2001:db8::1', 128, '2001:db8::2', false],
  ])('%s/%i contains %s: %s', (network, prefixLen, address, expected) => {
    const result = prefixContains(
      parseIpAddress(network)!.addr,
      prefixLen,
      parseIpAddress(address)!.addr,
    );
    expect(result).toBe(expected);
  });
});

describe('maskAddress', () => {
  it('clears bits after the prefix', () => {
    expect(maskAddress(parseIpAddress('10.1.255.3')!.addr, 96 + 17).toString('hex')).toBe(
      hex('10.1.128.0'),
    );
  });

  it('leaves the input unchanged', () => {
    const addr = parseIpAddress('10.1.2.3')!.addr;
    maskAddress(addr, 100);
    expect(addr.toString('hex')).toBe(hex('10.1.2.3'));
  });
});
