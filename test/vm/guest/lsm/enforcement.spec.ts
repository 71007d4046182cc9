// Runs in the test VM (Linux 6.1 with BPF LSM). Loads the main BPF object
// through Datapath with its maps pinned, and the LSM object on the same pinned
// maps. Attaches process tracking and the four LSM programs, and no cgroup
// program. Gives test subject processes identities through the identity map,
// then checks what the hooks decide and what they report on the ring buffer.
// Fails, never skips, when the kernel, an object or a helper is missing.
import { ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import {
  constants as fsConstants,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, Server } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  ConnectRecord,
  decodeRecord,
  encodeAddress,
  encodeCidrKey,
  encodePeerKey,
  encodeRuleList,
  encodeSettings,
  encodeSubject,
  encodeU32,
  KernelRuleEntry,
} from '../../../../src/kernel/codec';
import {
  cidrKeyLayout,
  DecisionReason,
  identityLayout,
  KernelAction,
  peerKeyLayout,
  RecordType,
  recordHeaderLayout,
  ruleListLayout,
  SIGIL_MAX_CIDR_KEYS,
  SIGIL_MAX_PEER_KEYS,
  SIGIL_MAX_SUBJECTS,
  subjectLayout,
  SUBJECT_HAS_EGRESS_ALLOW,
  SETTINGS_REPORT_ALLOWED_ACCESS,
} from '../../../../src/kernel/layout';
import { decodeLsmRecord, LsmMatch, LsmRecord } from '../../../../src/kernel/lsm-layout';
import {
  ensureLsmHashSeed,
  LSM_PROGRAMS,
  LSM_SHARED_MAPS,
  LsmMapFds,
  lsmMapFds,
  LsmRuleSet,
  openLsmObject,
  publishLsmRuleSet,
  resolveInode,
  retireLsmRuleSet,
} from '../../../../src/kernel/lsm-maps';
import { Datapath, removePinnedState } from '../../../../src/kernel/datapath';
import {
  batchRecords,
  BpfObject,
  closeFd,
  Link,
  MapFlag,
  MapType,
  mapCreate,
  mapDelete,
  mapLookup,
  mapUpdate,
  objGet,
} from '../../../../src/kernel/native';

const PROJECT_ROOT = path.join(__dirname, '..', '..', '..', '..');
const MAIN_OBJECT = path.join(PROJECT_ROOT, 'bpf', '.output', 'sigil.bpf.o');
const LSM_OBJECT = path.join(PROJECT_ROOT, 'bpf', '.output', 'sigil-lsm.bpf.o');
const SUBJECT_SCRIPT = path.join(__dirname, 'subject.js');
const PIN_DIR = '/sys/fs/bpf/sigil-lsm-test';
const MAP_PIN_DIR = path.join(PIN_DIR, 'maps');
const BUSYBOX = '/bin/busybox';
const ROOT = '/tmp/sigil-lsm';
const RECORD_TIMEOUT_MS = 5_000;

// Identities of the test subjects.
const BLOCKED_SUBJECT = 1; // exact-file, directory and CIDR Block rules
const OTHER_SUBJECT = 2; // identified, no rules
const FILE_ALLOWLIST_SUBJECT = 3; // file Allow rules, file posture Block
const EXEC_ALLOWLIST_SUBJECT = 4; // exec Allow rules, exec posture Block
const EGRESS_ALLOWLIST_SUBJECT = 5; // peer Allow rule to PEER_SUBJECT, egress posture Block
const PEER_SUBJECT = 6; // listens for EGRESS_ALLOWLIST_SUBJECT

// Rule indexes, reported in the records.
const RULE = {
  blockedBinary: 10,
  blockedDirectoryExec: 11,
  secretFile: 12,
  readOnlyFile: 13,
  flatDirectory: 14,
  deepDirectory: 15,
  auditedFile: 16,
  allowedDirectory: 17,
  blockedInAllowed: 18,
  fileAllowlist: 19,
  execAllowlist: 20,
  blockedPort: 21,
  peerAllow: 22,
};

const PORT = { blocked: 7001, open: 7002, peer: 7003, peerDualStack: 7004 };

const FILES = {
  blockedBinary: `${ROOT}/exec/blocked/true`,
  hardlinkBinary: `${ROOT}/exec/hardlink/true`,
  symlinkBinary: `${ROOT}/exec/symlink/true`,
  freeBinary: `${ROOT}/exec/free/true`,
  otherBinary: `${ROOT}/exec/other/true`,
  deniedDirectoryBinary: `${ROOT}/exec/denied-dir/sub/true`,
  secret: `${ROOT}/files/secret.txt`,
  secretRenamed: `${ROOT}/files/secret-renamed.txt`,
  readOnly: `${ROOT}/files/read-only.txt`,
  flatDirectory: `${ROOT}/files/flat`,
  flatDirect: `${ROOT}/files/flat/a.txt`,
  flatNested: `${ROOT}/files/flat/sub/b.txt`,
  deepDirectory: `${ROOT}/files/deep`,
  deepDirect: `${ROOT}/files/deep/a.txt`,
  deepNested: `${ROOT}/files/deep/sub/b.txt`,
  audited: `${ROOT}/files/audited.txt`,
  allowedDirectory: `${ROOT}/files/allowed`,
  allowedFile: `${ROOT}/files/allowed/ok.txt`,
  blockedInAllowed: `${ROOT}/files/allowed/blocked.txt`,
  allowlistDirectory: `${ROOT}/files/allowlist`,
  allowlistFile: `${ROOT}/files/allowlist/listed.txt`,
  unlistedFile: `${ROOT}/files/unlisted.txt`,
};

/** A test subject process (subject.js) and its request channel. */
class Subject {
  private readonly pending: ((reply: SubjectReply) => void)[] = [];
  private buffered = '';

  private constructor(readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.on('data', (chunk: Buffer) => {
      this.buffered += chunk.toString();
      let newline: number;
      while ((newline = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, newline);
        this.buffered = this.buffered.slice(newline + 1);
        this.pending.shift()?.(JSON.parse(line) as SubjectReply);
      }
    });
  }

  /** Starts subject.js and waits until it has loaded everything it needs. */
  static async start(): Promise<Subject> {
    const child = spawn(process.execPath, [SUBJECT_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const subject = new Subject(child);
    const ready = await subject.next(`subject.js did not start: ${stderr}`);
    if (!ready.ready || ready.pid !== child.pid) {
      throw new Error(`subject.js reported ${JSON.stringify(ready)}; stderr: ${stderr}`);
    }
    return subject;
  }

  get pid(): number {
    return this.child.pid!;
  }

  private next(timeoutMessage: string): Promise<SubjectReply> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(timeoutMessage)), 30_000);
      this.pending.push((reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
    });
  }

  request(request: Record<string, unknown>): Promise<SubjectReply> {
    const reply = this.next(`no reply from subject ${this.pid} to ${JSON.stringify(request)}`);
    this.child.stdin.write(`${JSON.stringify(request)}\n`);
    return reply;
  }

  open(file: string, flags: string | number = 'r'): Promise<SubjectReply> {
    return this.request({ op: 'open', path: file, flags });
  }

  exec(file: string): Promise<SubjectReply> {
    return this.request({ op: 'exec', path: file });
  }

  connect(port: number, host = '127.0.0.1'): Promise<SubjectReply> {
    return this.request({ op: 'connect', host, port });
  }

  listen(port: number, host: string): Promise<SubjectReply> {
    return this.request({ op: 'listen', host, port });
  }

  stop(): void {
    this.child.stdin.end();
    this.child.kill();
  }
}

interface SubjectReply {
  ok?: boolean;
  code?: string;
  message?: string;
  ready?: boolean;
  pid?: number;
  status?: number;
}

let datapath: Datapath | undefined;
/** File descriptors of the main object's pinned maps, opened with objGet. */
const mainMapFds = new Map<string, number>();
let lsm: BpfObject | undefined;
let lsmMaps: LsmMapFds;
const lsmLinks: Link[] = [];
const lsmRecords: LsmRecord[] = [];
const connectRecords: ConnectRecord[] = [];
const subjects = new Map<number, Subject>();
const servers: Server[] = [];
let generation = 0;

function subject(id: number): Subject {
  const found = subjects.get(id);
  if (!found) throw new Error(`no test subject with identity ${id}`);
  return found;
}

function makeFixtures(): void {
  rmSync(ROOT, { recursive: true, force: true });
  for (const file of Object.values(FILES)) mkdirSync(path.dirname(file), { recursive: true });
  for (const directory of [FILES.flatDirectory, FILES.deepDirectory])
    mkdirSync(directory, { recursive: true });
  for (const binary of [
    FILES.blockedBinary,
    FILES.freeBinary,
    FILES.otherBinary,
    FILES.deniedDirectoryBinary,
  ]) {
    copyFileSync(BUSYBOX, binary);
  }
  linkSync(FILES.blockedBinary, FILES.hardlinkBinary);
  symlinkSync('../blocked/true', FILES.symlinkBinary);
  for (const file of [
    FILES.secret,
    FILES.readOnly,
    FILES.flatDirect,
    FILES.flatNested,
    FILES.deepDirect,
    FILES.deepNested,
    FILES.audited,
    FILES.allowedFile,
    FILES.blockedInAllowed,
    FILES.allowlistFile,
    FILES.unlistedFile,
  ]) {
    writeFileSync(file, `contents of ${path.basename(file)}\n`);
  }
}

/** Returns a file descriptor of one of the main object's pinned maps. */
function mainMap(name: string): number {
  let fd = mainMapFds.get(name);
  if (fd === undefined) {
    fd = objGet(path.join(MAP_PIN_DIR, name));
    mainMapFds.set(name, fd);
  }
  return fd;
}

function collectRecords(batch: Buffer): void {
  for (const record of batchRecords(batch)) {
    const type = record.readUInt32LE(recordHeaderLayout.offsetOf('type'));
    if (type === RecordType.Connect) {
      const decoded = decodeRecord(record);
      if (decoded.type === 'connect') connectRecords.push(decoded);
      continue;
    }
    const decoded = decodeLsmRecord(record);
    if (decoded) lsmRecords.push(decoded);
  }
}

function createInnerMap(
  name: string,
  keySize: number,
  valueSize: number,
  maxEntries: number,
  type: number = MapType.HASH,
): number {
  return mapCreate({ type, name, keySize, valueSize, maxEntries, flags: MapFlag.NO_PREALLOC });
}

interface EgressRules {
  subjects: { id: number; posture: KernelAction; hasAllow: boolean }[];
  peerRules: { subject: number; peer: number; rules: KernelRuleEntry[] }[];
  cidrRules: { subject: number; address: string; prefixLen: number; rules: KernelRuleEntry[] }[];
}

const EGRESS_OUTER_MAPS = ['sigil_subjects', 'sigil_peer_rules', 'sigil_cidr_rules'];

/** Publishes egress rules under gen in the main object's outer maps, as Datapath.applyRuleSet does. */
function publishEgressRules(gen: number, rules: EgressRules): void {
  const created: number[] = [];
  const inserted: string[] = [];
  try {
    const subjectsMap = createInnerMap('test_subj', 4, subjectLayout.size, SIGIL_MAX_SUBJECTS);
    created.push(subjectsMap);
    for (const entry of rules.subjects) {
      const flags = entry.hasAllow ? SUBJECT_HAS_EGRESS_ALLOW : 0;
      // The connect programs look up only the prefix lengths that the subject entry lists.
      const lengths = rules.cidrRules
        .filter((cidr) => cidr.subject === entry.id)
        .map((cidr) => cidr.prefixLen);
      const value = encodeSubject(flags, entry.posture, [...new Set(lengths)]);
      mapUpdate(subjectsMap, encodeU32(entry.id), value);
    }
    const peers = createInnerMap(
      'test_peer',
      peerKeyLayout.size,
      ruleListLayout.size,
      SIGIL_MAX_PEER_KEYS,
    );
    created.push(peers);
    for (const entry of rules.peerRules) {
      mapUpdate(peers, encodePeerKey(entry.subject, entry.peer), encodeRuleList(entry.rules));
    }
    const cidrs = createInnerMap(
      'test_cidr',
      cidrKeyLayout.size,
      ruleListLayout.size,
      SIGIL_MAX_CIDR_KEYS,
    );
    created.push(cidrs);
    for (const entry of rules.cidrRules) {
      const key = encodeCidrKey(entry.subject, entry.prefixLen, encodeAddress(entry.address));
      mapUpdate(cidrs, key, encodeRuleList(entry.rules));
    }
    created.forEach((inner, i) => {
      mapUpdate(mainMap(EGRESS_OUTER_MAPS[i]), encodeU32(gen), encodeU32(inner));
      inserted.push(EGRESS_OUTER_MAPS[i]);
    });
  } catch (error) {
    for (const outer of inserted) mapDelete(mainMap(outer), encodeU32(gen));
    throw error;
  } finally {
    for (const fd of created) closeFd(fd);
  }
}

/**
 * Why the egress rules of the current generation are missing, or undefined.
 * The exec and file tests do not need them, so only the connect tests fail.
 */
let egressError: Error | undefined;
let settingsFlags = SETTINGS_REPORT_ALLOWED_ACCESS;

/** Publishes both rule sets under the next generation, switches to it and retires the previous one. */
function applyRules(lsmRules: LsmRuleSet, egressRules: EgressRules): number {
  const next = generation + 1;
  publishLsmRuleSet(lsmMaps, next, lsmRules);
  egressError = undefined;
  try {
    publishEgressRules(next, egressRules);
  } catch (cause) {
    egressError = new Error(
      `publishing the egress rules of generation ${next} in the main object's maps failed: ` +
        `${(cause as Error).message}. Linux 6.1 rejects inner maps with EINVAL when the outer ` +
        "map's template was declared with BTF types (__type): bpf/include/egress.bpf.h must " +
        'declare its outer maps with SIGIL_GENERATION_MAP, whose inner maps give key_size and ' +
        'value_size',
      { cause },
    );
  }
  // Allowed execs and opens are recorded too, so the tests can check the rule that allowed them.
  mapUpdate(mainMap('sigil_settings'), encodeU32(0), encodeSettings(next, settingsFlags));
  if (generation > 0) {
    retireLsmRuleSet(lsmMaps, generation);
    for (const outer of EGRESS_OUTER_MAPS) mapDelete(mainMap(outer), encodeU32(generation));
  }
  generation = next;
  return next;
}

const ALLOW = KernelAction.Allow;
const AUDIT = KernelAction.Audit;
const BLOCK = KernelAction.Block;

function lsmRules(): LsmRuleSet {
  const blocked = resolveInode(FILES.blockedBinary);
  const secret = resolveInode(FILES.secret);
  const readOnly = resolveInode(FILES.readOnly);
  const audited = resolveInode(FILES.audited);
  const blockedInAllowed = resolveInode(FILES.blockedInAllowed);
  return {
    subjects: [
      { id: BLOCKED_SUBJECT, execPosture: KernelAction.None, filePosture: KernelAction.None },
      { id: FILE_ALLOWLIST_SUBJECT, execPosture: KernelAction.None, filePosture: BLOCK },
      { id: EXEC_ALLOWLIST_SUBJECT, execPosture: BLOCK, filePosture: KernelAction.None },
    ],
    inodeRules: [
      {
        subject: BLOCKED_SUBJECT,
        kind: 'exec',
        ...blocked,
        action: BLOCK,
        ruleIndex: RULE.blockedBinary,
      },
      {
        subject: BLOCKED_SUBJECT,
        kind: 'file',
        ...secret,
        action: BLOCK,
        ruleIndex: RULE.secretFile,
      },
      {
        subject: BLOCKED_SUBJECT,
        kind: 'file',
        ...readOnly,
        action: ALLOW,
        readOnly: true,
        ruleIndex: RULE.readOnlyFile,
      },
      {
        subject: BLOCKED_SUBJECT,
        kind: 'file',
        ...audited,
        action: AUDIT,
        ruleIndex: RULE.auditedFile,
      },
      {
        subject: BLOCKED_SUBJECT,
        kind: 'file',
        ...blockedInAllowed,
        action: BLOCK,
        ruleIndex: RULE.blockedInAllowed,
      },
    ],
    directoryRules: [
      {
        subject: BLOCKED_SUBJECT,
        kind: 'exec',
        path: `${ROOT}/exec/denied-dir`,
        recursive: true,
        action: BLOCK,
        ruleIndex: RULE.blockedDirectoryExec,
      },
      {
        subject: BLOCKED_SUBJECT,
        kind: 'file',
        path: FILES.flatDirectory,
        recursive: false,
        action: BLOCK,
        ruleIndex: RULE.flatDirectory,
      },
      {
        subject: BLOCKED_SUBJECT,
        kind: 'file',
        path: `${FILES.deepDirectory}/`,
        recursive: true,
        action: BLOCK,
        ruleIndex: RULE.deepDirectory,
      },
      {
        subject: BLOCKED_SUBJECT,
        kind: 'file',
        path: FILES.allowedDirectory,
        recursive: true,
        action: ALLOW,
        ruleIndex: RULE.allowedDirectory,
      },
      {
        subject: FILE_ALLOWLIST_SUBJECT,
        kind: 'file',
        path: FILES.allowlistDirectory,
        recursive: true,
        action: ALLOW,
        ruleIndex: RULE.fileAllowlist,
      },
      {
        subject: EXEC_ALLOWLIST_SUBJECT,
        kind: 'exec',
        path: path.dirname(FILES.freeBinary),
        recursive: false,
        action: ALLOW,
        ruleIndex: RULE.execAllowlist,
      },
    ],
  };
}

function egressRules(): EgressRules {
  const tcp = 6;
  return {
    subjects: [
      { id: BLOCKED_SUBJECT, posture: KernelAction.None, hasAllow: false },
      { id: EGRESS_ALLOWLIST_SUBJECT, posture: BLOCK, hasAllow: true },
    ],
    peerRules: [
      {
        subject: EGRESS_ALLOWLIST_SUBJECT,
        peer: PEER_SUBJECT,
        rules: [
          { portLo: 0, portHi: 65535, protocol: tcp, action: ALLOW, ruleIndex: RULE.peerAllow },
        ],
      },
    ],
    cidrRules: [
      {
        subject: BLOCKED_SUBJECT,
        address: '127.0.0.1',
        prefixLen: 128,
        rules: [
          {
            portLo: PORT.blocked,
            portHi: PORT.blocked,
            protocol: tcp,
            action: BLOCK,
            ruleIndex: RULE.blockedPort,
          },
        ],
      },
    ],
  };
}

function listenLocally(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.destroy());
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/** Waits until a record at index `since` or later matches, and returns it. */
async function waitForRecord<T>(
  records: T[],
  description: string,
  matches: (record: T) => boolean,
  since = 0,
): Promise<T> {
  const deadline = Date.now() + RECORD_TIMEOUT_MS;
  for (;;) {
    const found = records.slice(since).find(matches);
    if (found) return found;
    if (Date.now() > deadline) {
      throw new Error(
        `no record ${description} within ${RECORD_TIMEOUT_MS} ms; got ${records.length} records`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function execRecord(subjectId: number, file: string): Promise<LsmRecord> {
  return waitForRecord(
    lsmRecords,
    `exec decision of subject ${subjectId} on ${file}`,
    (record) =>
      record.type === 'exec-decision' && record.subjectId === subjectId && record.path === file,
  );
}

function fileRecord(subjectId: number, file: string, writeIntent: boolean): Promise<LsmRecord> {
  return waitForRecord(
    lsmRecords,
    `file decision of subject ${subjectId} on ${file} (write intent ${writeIntent})`,
    (record) =>
      record.type === 'file-decision' &&
      record.subjectId === subjectId &&
      record.path === file &&
      record.writeIntent === writeIntent,
  );
}

beforeAll(async () => {
  const lsms = readFileSync('/sys/kernel/security/lsm', 'utf8').trim().split(',');
  if (!lsms.includes('bpf'))
    throw new Error(`BPF LSM is not active: /sys/kernel/security/lsm lists ${lsms}`);
  if (!existsSync(LSM_OBJECT)) throw new Error(`${LSM_OBJECT} not found: run make`);
  makeFixtures();

  if (!existsSync(MAIN_OBJECT)) throw new Error(`${MAIN_OBJECT} not found: run make`);
  removePinnedState(PIN_DIR);
  datapath = Datapath.load(MAIN_OBJECT, PIN_DIR);
  datapath.attachProcessTracking();
  datapath.startEvents(collectRecords);
  lsm = openLsmObject(MAP_PIN_DIR, LSM_OBJECT);
  lsmMaps = lsmMapFds(lsm);
  ensureLsmHashSeed(lsmMaps);
  for (const program of LSM_PROGRAMS) lsmLinks.push(lsm.attach(program));

  servers.push(await listenLocally(PORT.blocked), await listenLocally(PORT.open));
  for (const id of [
    BLOCKED_SUBJECT,
    OTHER_SUBJECT,
    FILE_ALLOWLIST_SUBJECT,
    EXEC_ALLOWLIST_SUBJECT,
    EGRESS_ALLOWLIST_SUBJECT,
    PEER_SUBJECT,
  ]) {
    const started = await Subject.start();
    datapath.setIdentity(started.pid, id);
    subjects.set(id, started);
  }
  applyRules(lsmRules(), egressRules());
});

afterAll(() => {
  for (const started of subjects.values()) started.stop();
  for (const server of servers) server.close();
  for (const link of lsmLinks.splice(0)) link.destroy();
  lsm?.close();
  datapath?.close();
  for (const fd of mainMapFds.values()) closeFd(fd);
  // The process-tracking links are pinned: removing the pins detaches them.
  removePinnedState(PIN_DIR);
});

describe('BPF LSM enforcement', () => {
  it('shares the main object maps', () => {
    for (const name of LSM_SHARED_MAPS) {
      expect({ name, pinned: existsSync(path.join(MAP_PIN_DIR, name)) }).toEqual({
        name,
        pinned: true,
      });
    }
    // Written through Datapath, read through the LSM object.
    const tgid = subject(BLOCKED_SUBJECT).pid;
    const identity = mapLookup(lsm!.mapFd('sigil_identities'), encodeU32(tgid), identityLayout.size);
    expect(identity?.readUInt32LE(0)).toBe(BLOCKED_SUBJECT);
    const settings = mapLookup(lsm!.mapFd('sigil_settings'), encodeU32(0), 16);
    expect(settings?.readUInt32LE(0)).toBe(generation);
  });

  describe('exec', () => {
    it('denies a blocked binary to its subject', async () => {
      const reply = await subject(BLOCKED_SUBJECT).exec(FILES.blockedBinary);
      expect(reply).toMatchObject({ ok: false, code: 'EPERM' });

      const record = await execRecord(BLOCKED_SUBJECT, FILES.blockedBinary);
      const inode = resolveInode(FILES.blockedBinary);
      expect(record).toMatchObject({
        action: BLOCK,
        reason: DecisionReason.Rule,
        denied: true,
        match: LsmMatch.Inode,
        ruleIndex: RULE.blockedBinary,
        generation,
        dev: inode.dev,
        ino: inode.ino,
        pathLength: FILES.blockedBinary.length + 1,
      });
    });

    it('runs the blocked binary for another identity', async () => {
      const reply = await subject(OTHER_SUBJECT).exec(FILES.blockedBinary);
      expect(reply).toMatchObject({ ok: true, status: 0 });

      const record = await execRecord(OTHER_SUBJECT, FILES.blockedBinary);
      expect(record).toMatchObject({
        action: KernelAction.None,
        reason: DecisionReason.NoPolicy,
        denied: false,
      });
    });

    it('runs the blocked binary without an identity', () => {
      const result = spawnSync(FILES.blockedBinary, [], { stdio: 'ignore' });
      expect(result.error).toBeUndefined();
      expect(result.status).toBe(0);
    });

    it('denies a hard link to the blocked binary', async () => {
      const reply = await subject(BLOCKED_SUBJECT).exec(FILES.hardlinkBinary);
      expect(reply).toMatchObject({ ok: false, code: 'EPERM' });

      const record = await execRecord(BLOCKED_SUBJECT, FILES.hardlinkBinary);
      expect(record).toMatchObject({
        denied: true,
        match: LsmMatch.Inode,
        ruleIndex: RULE.blockedBinary,
      });
      expect(record.ino).toBe(resolveInode(FILES.blockedBinary).ino);
    });

    it('denies a symlink to the blocked binary', async () => {
      const before = lsmRecords.length;
      const reply = await subject(BLOCKED_SUBJECT).exec(FILES.symlinkBinary);
      expect(reply).toMatchObject({ ok: false, code: 'EPERM' });

      // The kernel resolves the symlink, so the record names the target.
      const record = await waitForRecord(
        lsmRecords,
        'exec decision through the symlink',
        (entry) => entry.type === 'exec-decision' && entry.path === FILES.blockedBinary,
        before,
      );
      expect(record).toMatchObject({
        denied: true,
        match: LsmMatch.Inode,
        ruleIndex: RULE.blockedBinary,
      });
    });

    it('runs other binaries for the blocked subject', async () => {
      const reply = await subject(BLOCKED_SUBJECT).exec(FILES.freeBinary);
      expect(reply).toMatchObject({ ok: true, status: 0 });
    });

    it('denies binaries below a recursive exec directory rule', async () => {
      const reply = await subject(BLOCKED_SUBJECT).exec(FILES.deniedDirectoryBinary);
      expect(reply).toMatchObject({ ok: false, code: 'EPERM' });

      const record = await execRecord(BLOCKED_SUBJECT, FILES.deniedDirectoryBinary);
      expect(record).toMatchObject({
        denied: true,
        match: LsmMatch.Subtree,
        ruleIndex: RULE.blockedDirectoryExec,
      });
    });

    it('applies the exec posture outside the Allow rules', async () => {
      const allowlisted = subject(EXEC_ALLOWLIST_SUBJECT);
      expect(await allowlisted.exec(FILES.freeBinary)).toMatchObject({ ok: true, status: 0 });
      expect(await allowlisted.exec(FILES.otherBinary)).toMatchObject({ ok: false, code: 'EPERM' });

      const allowed = await execRecord(EXEC_ALLOWLIST_SUBJECT, FILES.freeBinary);
      expect(allowed).toMatchObject({
        action: ALLOW,
        reason: DecisionReason.Rule,
        match: LsmMatch.Directory,
        ruleIndex: RULE.execAllowlist,
        denied: false,
      });
      const denied = await execRecord(EXEC_ALLOWLIST_SUBJECT, FILES.otherBinary);
      expect(denied).toMatchObject({ action: BLOCK, reason: DecisionReason.Posture, denied: true });
    });
  });

  describe('file open', () => {
    it('denies a blocked file', async () => {
      const reply = await subject(BLOCKED_SUBJECT).open(FILES.secret);
      expect(reply).toMatchObject({ ok: false, code: 'EPERM' });

      const record = await fileRecord(BLOCKED_SUBJECT, FILES.secret, false);
      expect(record).toMatchObject({
        action: BLOCK,
        reason: DecisionReason.Rule,
        denied: true,
        match: LsmMatch.Inode,
        ruleIndex: RULE.secretFile,
        execOpen: false,
      });
    });

    it('opens the blocked file for another identity', async () => {
      expect(await subject(OTHER_SUBJECT).open(FILES.secret)).toMatchObject({ ok: true });
    });

    it('allows reads and denies writes under a readOnly rule', async () => {
      const blocked = subject(BLOCKED_SUBJECT);
      expect(await blocked.open(FILES.readOnly, 'r')).toMatchObject({ ok: true });
      expect(await blocked.open(FILES.readOnly, 'r+')).toMatchObject({ ok: false, code: 'EPERM' });
      expect(await blocked.open(FILES.readOnly, 'a')).toMatchObject({ ok: false, code: 'EPERM' });

      const read = await fileRecord(BLOCKED_SUBJECT, FILES.readOnly, false);
      expect(read).toMatchObject({ action: ALLOW, denied: false, ruleIndex: RULE.readOnlyFile });
      const write = await fileRecord(BLOCKED_SUBJECT, FILES.readOnly, true);
      expect(write).toMatchObject({ action: BLOCK, denied: true, ruleIndex: RULE.readOnlyFile });
    });

    it('treats a read-only open with O_TRUNC as a write', async () => {
      const { O_RDONLY, O_TRUNC } = fsConstants;
      const reply = await subject(BLOCKED_SUBJECT).open(FILES.readOnly, O_RDONLY | O_TRUNC);
      expect(reply).toMatchObject({ ok: false, code: 'EPERM' });
      expect(readFileSync(FILES.readOnly, 'utf8')).toBe('contents of read-only.txt\n');
    });

    it('limits a non-recursive directory rule to direct entries', async () => {
      const blocked = subject(BLOCKED_SUBJECT);
      expect(await blocked.open(FILES.flatDirect)).toMatchObject({ ok: false, code: 'EPERM' });
      expect(await blocked.open(FILES.flatNested)).toMatchObject({ ok: true });

      const direct = await fileRecord(BLOCKED_SUBJECT, FILES.flatDirect, false);
      expect(direct).toMatchObject({
        denied: true,
        match: LsmMatch.Directory,
        ruleIndex: RULE.flatDirectory,
      });
      const nested = await fileRecord(BLOCKED_SUBJECT, FILES.flatNested, false);
      expect(nested).toMatchObject({
        denied: false,
        action: KernelAction.None,
        match: LsmMatch.None,
      });
    });

    it('extends a recursive directory rule to the subtree', async () => {
      const blocked = subject(BLOCKED_SUBJECT);
      expect(await blocked.open(FILES.deepDirect)).toMatchObject({ ok: false, code: 'EPERM' });
      expect(await blocked.open(FILES.deepNested)).toMatchObject({ ok: false, code: 'EPERM' });

      const nested = await fileRecord(BLOCKED_SUBJECT, FILES.deepNested, false);
      expect(nested).toMatchObject({
        denied: true,
        match: LsmMatch.Subtree,
        ruleIndex: RULE.deepDirectory,
      });
    });

    it('applies a directory rule to the directory itself', async () => {
      expect(await subject(BLOCKED_SUBJECT).open(FILES.deepDirectory)).toMatchObject({
        ok: false,
        code: 'EPERM',
      });
      expect(await subject(BLOCKED_SUBJECT).open(FILES.flatDirectory)).toMatchObject({
        ok: false,
        code: 'EPERM',
      });
    });

    it('allows an audited file and reports it', async () => {
      expect(await subject(BLOCKED_SUBJECT).open(FILES.audited)).toMatchObject({ ok: true });
      const record = await fileRecord(BLOCKED_SUBJECT, FILES.audited, false);
      expect(record).toMatchObject({ action: AUDIT, denied: false, ruleIndex: RULE.auditedFile });
    });

    it('lets a Block rule win over an Allow rule', async () => {
      const blocked = subject(BLOCKED_SUBJECT);
      expect(await blocked.open(FILES.blockedInAllowed)).toMatchObject({
        ok: false,
        code: 'EPERM',
      });
      expect(await blocked.open(FILES.allowedFile)).toMatchObject({ ok: true });

      const allowed = await fileRecord(BLOCKED_SUBJECT, FILES.allowedFile, false);
      expect(allowed).toMatchObject({
        action: ALLOW,
        match: LsmMatch.Subtree,
        ruleIndex: RULE.allowedDirectory,
      });
      const denied = await fileRecord(BLOCKED_SUBJECT, FILES.blockedInAllowed, false);
      expect(denied).toMatchObject({
        action: BLOCK,
        match: LsmMatch.Inode,
        ruleIndex: RULE.blockedInAllowed,
      });
    });

    it('records an allowed open only when allowed access is reported', async () => {
      const blocked = subject(BLOCKED_SUBJECT);
      const before = lsmRecords.length;
      settingsFlags = 0;
      try {
        mapUpdate(mainMap('sigil_settings'), encodeU32(0), encodeSettings(generation, 0));
        expect(await blocked.open(FILES.allowedFile)).toMatchObject({ ok: true });
        expect(await blocked.open(FILES.blockedInAllowed)).toMatchObject({ ok: false, code: 'EPERM' });
        // The denial comes after the allowed open, so once it is here the other would be too.
        await waitForRecord(
          lsmRecords,
          'file decision of the denied open',
          (entry) => entry.type === 'file-decision' && entry.path === FILES.blockedInAllowed,
          before,
        );
        const allowedRecords = lsmRecords
          .slice(before)
          .filter((entry) => entry.type === 'file-decision' && entry.path === FILES.allowedFile);
        expect(allowedRecords).toEqual([]);
      } finally {
        settingsFlags = SETTINGS_REPORT_ALLOWED_ACCESS;
        mapUpdate(mainMap('sigil_settings'), encodeU32(0), encodeSettings(generation, settingsFlags));
      }
    });

    it('applies the file posture outside the Allow rules', async () => {
      const allowlisted = subject(FILE_ALLOWLIST_SUBJECT);
      expect(await allowlisted.open(FILES.allowlistFile)).toMatchObject({ ok: true });
      expect(await allowlisted.open(FILES.unlistedFile)).toMatchObject({
        ok: false,
        code: 'EPERM',
      });

      const denied = await fileRecord(FILE_ALLOWLIST_SUBJECT, FILES.unlistedFile, false);
      expect(denied).toMatchObject({ action: BLOCK, reason: DecisionReason.Posture, denied: true });
    });

    it('keeps denying a blocked file after a rename', async () => {
      renameSync(FILES.secret, FILES.secretRenamed);
      try {
        expect(await subject(BLOCKED_SUBJECT).open(FILES.secretRenamed)).toMatchObject({
          ok: false,
          code: 'EPERM',
        });
        const record = await fileRecord(BLOCKED_SUBJECT, FILES.secretRenamed, false);
        expect(record).toMatchObject({ match: LsmMatch.Inode, ruleIndex: RULE.secretFile });
      } finally {
        renameSync(FILES.secretRenamed, FILES.secret);
      }
    });
  });

  describe('connect', () => {
    beforeEach(() => {
      if (egressError) throw egressError;
    });

    it('denies a blocked destination without cgroup programs', async () => {
      const blocked = subject(BLOCKED_SUBJECT);
      expect(await blocked.connect(PORT.blocked)).toMatchObject({ ok: false, code: 'EPERM' });
      expect(await blocked.connect(PORT.open)).toMatchObject({ ok: true });

      const record = await waitForRecord(
        connectRecords,
        `connect of subject ${BLOCKED_SUBJECT} to port ${PORT.blocked}`,
        (entry) => entry.subjectId === BLOCKED_SUBJECT && entry.port === PORT.blocked,
      );
      expect(record).toMatchObject({
        tgid: blocked.pid,
        family: 'ipv4',
        address: '127.0.0.1',
        protocol: 6,
        action: BLOCK,
        reason: DecisionReason.Rule,
        ruleIndex: RULE.blockedPort,
        denied: true,
        generation,
      });
    });

    it('finds the identity of a local listener', async () => {
      const peer = subject(PEER_SUBJECT);
      expect(await peer.listen(PORT.peer, '127.0.0.1')).toMatchObject({ ok: true });
      expect(await peer.listen(PORT.peerDualStack, '::')).toMatchObject({ ok: true });
      const allowlisted = subject(EGRESS_ALLOWLIST_SUBJECT);

      expect(await allowlisted.connect(PORT.peer)).toMatchObject({ ok: true });
      expect(await allowlisted.connect(PORT.peerDualStack)).toMatchObject({ ok: true });
      expect(await allowlisted.connect(PORT.open)).toMatchObject({ ok: false, code: 'EPERM' });

      for (const port of [PORT.peer, PORT.peerDualStack]) {
        const allowed = await waitForRecord(
          connectRecords,
          `connect of subject ${EGRESS_ALLOWLIST_SUBJECT} to port ${port}`,
          (entry) => entry.subjectId === EGRESS_ALLOWLIST_SUBJECT && entry.port === port,
        );
        expect(allowed).toMatchObject({
          peerId: PEER_SUBJECT,
          peerTgid: peer.pid,
          action: ALLOW,
          reason: DecisionReason.Rule,
          ruleIndex: RULE.peerAllow,
          denied: false,
        });
      }
      const denied = await waitForRecord(
        connectRecords,
        `connect of subject ${EGRESS_ALLOWLIST_SUBJECT} to port ${PORT.open}`,
        (entry) => entry.subjectId === EGRESS_ALLOWLIST_SUBJECT && entry.port === PORT.open,
      );
      expect(denied).toMatchObject({
        peerId: 0,
        action: BLOCK,
        reason: DecisionReason.Posture,
        denied: true,
      });
    });
  });

  describe('records', () => {
    it('carry the process fields', async () => {
      const blocked = subject(BLOCKED_SUBJECT);
      const record = await fileRecord(BLOCKED_SUBJECT, FILES.secret, false);
      expect(record.tgid).toBe(blocked.pid);
      expect(record.ppid).toBe(process.pid);
      expect(record.uid).toBe(0);
      expect(record.comm).toBe('node');
      expect(record.cgroupId).toBeGreaterThan(0n);
      expect(record.ktimeNs).toBeGreaterThan(0n);
    });

    it('mark opens made by execve', async () => {
      const record = await waitForRecord(
        lsmRecords,
        'file decision of an exec open',
        (entry) =>
          entry.type === 'file-decision' && entry.execOpen && entry.path === FILES.freeBinary,
      );
      expect(record).toMatchObject({ writeIntent: false, denied: false });
    });

    it('counts no drops', () => {
      expect(datapath!.readDrops()).toEqual([0n, 0n]);
    });
  });

  describe('generations', () => {
    it('switches to a new rule set', async () => {
      const rules = lsmRules();
      rules.inodeRules = [...rules.inodeRules].filter(
        (rule) => rule.ruleIndex !== RULE.blockedBinary,
      );
      const next = applyRules(rules, egressRules());

      expect(await subject(BLOCKED_SUBJECT).exec(FILES.blockedBinary)).toMatchObject({
        ok: true,
        status: 0,
      });
      const record = await waitForRecord(
        lsmRecords,
        `exec decision of generation ${next}`,
        (entry) =>
          entry.type === 'exec-decision' &&
          entry.generation === next &&
          entry.path === FILES.blockedBinary,
      );
      expect(record).toMatchObject({ denied: false, action: KernelAction.None });
      expect(await subject(BLOCKED_SUBJECT).open(FILES.secret)).toMatchObject({
        ok: false,
        code: 'EPERM',
      });
    });
  });
});
