/**
 * User and group names from /etc/passwd and /etc/group, read directly from the files.
 *
 * NOTE: Accounts that only NSS modules such as LDAP or sssd provide are not found, so processes
 * of those users get no `unix:user` or `unix:group` selectors.
 */

import { readFileSync, statSync } from 'node:fs';

export interface AccountDatabaseOptions {
  /** Defaults to /etc/passwd. */
  passwdFile?: string;
  /** Defaults to /etc/group. */
  groupFile?: string;
}

/**
 * Maps uids and gids to names. Each lookup stats the file and reads it again only when its
 * device, inode, size or modification time changed.
 */
export class AccountDatabase {
  private readonly users: IdNameFile;
  private readonly groups: IdNameFile;

  constructor(options: AccountDatabaseOptions = {}) {
    this.users = new IdNameFile(options.passwdFile ?? '/etc/passwd');
    this.groups = new IdNameFile(options.groupFile ?? '/etc/group');
  }

  /** Returns the name of the first passwd entry with this uid, or null. */
  userName(uid: number): string | null {
    return this.users.lookup(uid);
  }

  /** Returns the name of the first group entry with this gid, or null. */
  groupName(gid: number): string | null {
    return this.groups.lookup(gid);
  }
}

/**
 * A colon-separated file whose lines start with `name:password:id:`, as in /etc/passwd and
 * /etc/group. A missing file has no entries.
 */
class IdNameFile {
  private fileStamp: string | null = null;
  private names = new Map<number, string>();

  constructor(private readonly path: string) {}

  lookup(id: number): string | null {
    this.refresh();
    return this.names.get(id) ?? null;
  }

  private refresh(): void {
    let stamp: string;
    try {
      const stat = statSync(this.path, { bigint: true });
      stamp = `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}`;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw error;
      }
      this.fileStamp = null;
      this.names = new Map();
      return;
    }
    if (stamp === this.fileStamp) {
      return;
    }
    this.names = parseIdNames(readFileSync(this.path, 'utf8'));
    this.fileStamp = stamp;
  }
}

function parseIdNames(text: string): Map<number, string> {
  const names = new Map<number, string>();
  for (const line of text.split('\n')) {
    // Lines starting with '+' or '-' are NIS compatibility entries, not accounts.
    if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) {
      continue;
    }
    const fields = line.split(':');
    if (fields.length < 3 || fields[0] === '' || !/^[0-9]+$/.test(fields[2])) {
      continue;
    }
    const id = Number(fields[2]);
    // getpwuid() and getgrgid() return the first matching line, so later duplicates lose.
    if (!names.has(id)) {
      names.set(id, fields[0]);
    }
  }
  return names;
}
