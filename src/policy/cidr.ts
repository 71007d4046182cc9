import { Cidr } from './types';

/** Address bytes in the IPv6 space, which also stores IPv4 addresses as `::ffff:a.b.c.d`. */
export const ADDRESS_BYTES = 16;

/** Prefix length of `::ffff:0:0/96`, the IPv4-mapped block. */
export const IPV4_MAPPED_PREFIX_LEN = 96;

/** An address parsed into the IPv6 space, with the family it was written in. */
export interface ParsedAddress {
  addr: Buffer;
  family: 4 | 6;
}

/** Result of parsing a CIDR, with a reason and a suggested fix on failure. */
export type CidrParseResult =
  { ok: true; cidr: Cidr } | { ok: false; reason: string; hint: string };

const CIDR_EXAMPLES =
  'expected an address or prefix such as 10.0.0.0/8, 2001:db8::/32 or 127.0.0.2';

/** Parses dotted-quad IPv4 text into 4 bytes, or returns undefined when the text is not one. */
function parseIpv4Bytes(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const bytes: number[] = [];
  for (const part of parts) {
    // Leading zeros are rejected because some parsers read them as octal.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    bytes.push(value);
  }
  return bytes;
}

/** Parses colon-separated 16-bit groups (no `::`) into bytes, or returns undefined. */
function parseHexGroups(text: string): number[] | undefined {
  if (text === '') return [];
  const bytes: number[] = [];
  const groups = text.split(':');
  for (let i = 0; i < groups.length; i++) {
    const group = groups[i];
    if (i === groups.length - 1 && group.includes('.')) {
      const ipv4 = parseIpv4Bytes(group);
      if (!ipv4) return undefined;
      bytes.push(...ipv4);
      continue;
    }
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return undefined;
    const value = parseInt(group, 16);
    bytes.push(value >> 8, value & 0xff);
  }
  return bytes;
}

/** Parses IPv6 text, with an optional `::` and an optional trailing IPv4 part, into 16 bytes. */
function parseIpv6Bytes(text: string): number[] | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  if (halves.length === 1) {
    const bytes = parseHexGroups(text);
    return bytes?.length === ADDRESS_BYTES ? bytes : undefined;
  }
  const head = parseHexGroups(halves[0]);
  const tail = parseHexGroups(halves[1]);
  if (!head || !tail) return undefined;
  // An embedded IPv4 part is only valid at the very end of the address.
  if (halves[0].includes('.')) return undefined;
  // `::` stands for at least one zero group.
  const zeros = ADDRESS_BYTES - head.length - tail.length;
  if (zeros < 2) return undefined;
  return [...head, ...new Array<number>(zeros).fill(0), ...tail];
}

/** Parses IPv4 or IPv6 text into the IPv6 space, or returns undefined when it is neither. */
export function parseIpAddress(text: string): ParsedAddress | undefined {
  const ipv4 = parseIpv4Bytes(text);
  if (ipv4) {
    const addr = Buffer.alloc(ADDRESS_BYTES);
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr.set(ipv4, 12);
    return { addr, family: 4 };
  }
  if (!text.includes(':')) return undefined;
  const ipv6 = parseIpv6Bytes(text);
  return ipv6 ? { addr: Buffer.from(ipv6), family: 6 } : undefined;
}

/** Returns a copy of addr with every bit after the first prefixLen bits cleared. */
export function maskAddress(addr: Buffer, prefixLen: number): Buffer {
  const masked = Buffer.from(addr);
  for (let i = 0; i < ADDRESS_BYTES; i++) {
    const keep = Math.min(Math.max(prefixLen - i * 8, 0), 8);
    masked[i] &= (0xff00 >> keep) & 0xff;
  }
  return masked;
}

/** Returns whether the prefix `network/prefixLen` contains addr (both in the IPv6 space). */
export function prefixContains(network: Buffer, prefixLen: number, addr: Buffer): boolean {
  const fullBytes = prefixLen >> 3;
  for (let i = 0; i < fullBytes; i++) {
    if (network[i] !== addr[i]) return false;
  }
  const restBits = prefixLen & 7;
  if (restBits === 0) return true;
  const mask = (0xff00 >> restBits) & 0xff;
  return (network[fullBytes] & mask) === (addr[fullBytes] & mask);
}

/** Returns whether addr lies in `::ffff:0:0/96`. */
export function isIpv4Mapped(addr: Buffer): boolean {
  for (let i = 0; i < 10; i++) {
    if (addr[i] !== 0) return false;
  }
  return addr[10] === 0xff && addr[11] === 0xff;
}

/** Formats 16 address bytes as IPv6 text in the RFC 5952 form (`::ffff:a.b.c.d` when mapped). */
export function formatIpv6(addr: Buffer): string {
  if (isIpv4Mapped(addr)) return `::ffff:${addr.subarray(12).join('.')}`;
  const groups: number[] = [];
  for (let i = 0; i < ADDRESS_BYTES; i += 2) groups.push(addr.readUInt16BE(i));

  // RFC 5952 compresses the longest run of zero groups, the first on a tie, if it is 2 or longer.
  let bestStart = -1;
  let bestLength = 0;
  for (let start = 0; start < groups.length;) {
    if (groups[start] !== 0) {
      start++;
      continue;
    }
    let end = start;
    while (end < groups.length && groups[end] === 0) end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }

  const hex = groups.map((group) => group.toString(16));
  if (bestLength < 2) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLength).join(':');
  return `${head}::${tail}`;
}

/**
 * Formats a prefix of the IPv6 space. Prefixes inside `::ffff:0:0/96` print as IPv4
 * (`::ffff:10.0.0.0/104` prints as `10.0.0.0/8`), all others as IPv6.
 */
export function formatPrefix(addr: Buffer, prefixLen: number): string {
  if (prefixLen >= IPV4_MAPPED_PREFIX_LEN && isIpv4Mapped(addr)) {
    return `${addr.subarray(12).join('.')}/${prefixLen - IPV4_MAPPED_PREFIX_LEN}`;
  }
  return `${formatIpv6(addr)}/${prefixLen}`;
}

/**
 * Parses `address/length`, or a bare address as a /32 (IPv4) or /128 (IPv6) prefix.
 * Rejects host bits set after the prefix, and suggests the network address in the hint.
 */
export function parseCidr(text: string): CidrParseResult {
  const slash = text.indexOf('/');
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const address = parseIpAddress(addressText);
  if (!address) {
    return {
      ok: false,
      reason: `"${addressText}" is not an IPv4 or IPv6 address`,
      hint: CIDR_EXAMPLES,
    };
  }

  const familyBits = address.family === 4 ? 32 : 128;
  let familyLength = familyBits;
  if (slash >= 0) {
    const lengthText = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]*)$/.test(lengthText) || Number(lengthText) > familyBits) {
      return {
        ok: false,
        reason: `prefix length "${lengthText}" is invalid`,
        hint: `IPv${address.family} prefix lengths are 0-${familyBits}`,
      };
    }
    familyLength = Number(lengthText);
  }

  const prefixLen = familyLength + (address.family === 4 ? IPV4_MAPPED_PREFIX_LEN : 0);
  const network = maskAddress(address.addr, prefixLen);
  const normalised =
    address.family === 4
      ? `${network.subarray(12).join('.')}/${familyLength}`
      : `${formatIpv6(network)}/${familyLength}`;
  if (!network.equals(address.addr)) {
    return { ok: false, reason: 'host bits are set after the prefix', hint: `use ${normalised}` };
  }
  return { ok: true, cidr: { text: normalised, addr: network, prefixLen } };
}
