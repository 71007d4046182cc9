import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AccountDatabase } from '../../src/identity/account-database';

const directory = mkdtempSync(join(tmpdir(), 'sigil-accounts-'));
const passwdFile = join(directory, 'passwd');
const groupFile = join(directory, 'group');

afterAll(() => {
  rmSync(directory, { recursive: true, force: true });
});

writeFileSync(
  passwdFile,
  [
    'root:x:0:0:root:/root:/bin/bash',
    '# comment:x:5:5',
    '+nisuser:x:6:6',
    'web:x:4242:4242::/srv/web:/usr/sbin/nologin',
    'web-alias:x:4242:4242::/srv/web:/usr/sbin/nologin',
    'broken:x:notanumber:1',
    'short:x',
    '',
  ].join('\n'),
);
writeFileSync(groupFile, ['root:x:0:', 'web:x:4242:', 'extra:x:4343:web', ''].join('\n'));

describe('AccountDatabase', () => {
  const accounts = new AccountDatabase({ passwdFile, groupFile });

  it.each([
    [0, 'root'],
    [4242, 'web'],
    [5, null],
    [6, null],
    [1, null],
    [99999, null],
  ])('maps uid %i to %s', (uid, name) => {
    expect(accounts.userName(uid)).toBe(name);
  });

  it.each([
    [0, 'root'],
    [4242, 'web'],
    [4343, 'extra'],
    [1, null],
  ])('maps gid %i to %s', (gid, name) => {
    expect(accounts.groupName(gid)).toBe(name);
  });

  it('reads a changed file again', () => {
    const file = join(directory, 'passwd-changing');
    writeFileSync(file, 'old:x:7:7::/:/bin/sh\n');
    const changing = new AccountDatabase({ passwdFile: file, groupFile });
    expect(changing.userName(7)).toBe('old');
    writeFileSync(file, 'renamed:x:7:7::/:/bin/sh\n');
    expect(changing.userName(7)).toBe('renamed');
  });

  it('finds nothing in a missing file', () => {
    const missing = new AccountDatabase({
      passwdFile: join(directory, 'no-passwd'),
      groupFile: join(directory, 'no-group'),
    });
    expect(missing.userName(0)).toBeNull();
    expect(missing.groupName(0)).toBeNull();
  });

  it('reads /etc/passwd by default', () => {
    expect(new AccountDatabase().userName(0)).toBe('root');
  });
});
