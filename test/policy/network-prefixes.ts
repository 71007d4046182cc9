import { parseIpAddress } from '../../src/policy/cidr';

/** Formats an IPv4 network address with its host bits cleared, written apart from src/. */
export function ipv4Network(base: string, length: number): string {
  const value = base.split('.').reduce((sum, octet) => sum * 256 + Number(octet), 0);
  const mask = length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0;
  const network = (value & mask) >>> 0;
  const octets = [network >>> 24, (network >>> 16) & 0xff, (network >>> 8) & 0xff, network & 0xff];
  return `${octets.join('.')}/${length}`;
}

/** Formats an IPv6 network address in full eight-group form with its host bits cleared. */
export function ipv6Network(base: string, length: number): string {
  const bytes = parseIpAddress(base)!.addr;
  let value = BigInt(`0x${bytes.toString('hex')}`);
  value = length === 0 ? 0n : (value >> BigInt(128 - length)) << BigInt(128 - length);
  const hex = value.toString(16).padStart(32, '0');
  const groups = hex.match(/.{4}/g)!.map((group) => group.replace(/^0+(?=.)/, ''));
  return `${groups.join(':')}/${length}`;
}
