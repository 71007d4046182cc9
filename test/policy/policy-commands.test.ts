import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CommandOutput,
  ExplainOptions,
  runPolicyCheck,
  runPolicyDiff,
  runPolicyExplain,
  runPolicySchema,
} from '../../src/cli/policy-commands';

const REPOSITORY = join(__dirname, '..', '..');
const EXAMPLES = join(REPOSITORY, 'examples', 'policies-doc');

/** Output that collects what a command writes. */
function capture(): CommandOutput & { stdout: string; stderr: string } {
  const output = {
    stdout: '',
    stderr: '',
    out(text: string) {
      output.stdout += text;
    },
    err(text: string) {
      output.stderr += text;
    },
  };
  return output;
}

const root = mkdtempSync(join(tmpdir(), 'sigil-policy-commands-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = join(root, name);
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, text);
  return file;
}

const policy = (name: string, spec: string) =>
  `apiVersion: sigil.dev/v1alpha1\nkind: IdentityPolicy\nmetadata: {name: ${name}}\nspec:\n${spec}`;

const WEB = 'spiffe://example.org/web';
const INVALID = write('invalid.yaml', policy('p', '  subject: {spiffeId: web}\n  mode: audit\n'));

describe('policy check', () => {
  it('prints warnings and the count for valid files', () => {
    const output = capture();
    expect(runPolicyCheck([join(EXAMPLES, '07-process.yaml')], output)).toBe(0);
    expect(output.stdout).toBe('1 policies in 1 files: valid\n');
    expect(output.stderr).toContain(':11:7: warning: process rule "runtime" of policy "web-exec"');
    expect(output.stderr.trim().split('\n')).toHaveLength(4);
  });

  it('prints every error and returns 1', () => {
    const output = capture();
    expect(runPolicyCheck([INVALID], output)).toBe(1);
    expect(output.stdout).toBe('');
    const errors = output.stderr.trim().split('\n');
    expect(errors).toHaveLength(2);
    expect(errors[0]).toContain(
      `${INVALID}:5:23: error: spec.subject.spiffeId: invalid SPIFFE ID "web"`,
    );
    expect(errors[1]).toContain(`${INVALID}:6:9: error: spec.mode: invalid mode "audit"`);
  });
});

describe('policy schema', () => {
  it('prints the committed JSON Schema', () => {
    const output = capture();
    expect(runPolicySchema(output)).toBe(0);
    expect(output.stdout).toBe(
      readFileSync(join(REPOSITORY, 'schema', 'identity-policy.schema.json'), 'utf8'),
    );
    expect(JSON.parse(output.stdout).title).toBe('Sigil IdentityPolicy');
  });
});

describe('policy explain', () => {
  const files = [
    join(EXAMPLES, '01-egress.yaml'),
    join(EXAMPLES, '03-subjects.yaml'),
    join(EXAMPLES, '08-file.yaml'),
  ];
  const explain = (options: ExplainOptions, paths = files) => {
    const output = capture();
    const code = runPolicyExplain(paths, options, output);
    return { code, ...output };
  };

  it('prints the verdict, the deciding rule and every match', () => {
    const result = explain({ subject: WEB, connect: '169.254.169.254:80' });
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toBe(`verdict: Block by rule web-egress/no-metadata (${files[0]}:23)`);
    expect(lines).toContain('policies: web-egress, whole-domain, web-files');
    expect(lines).toContain('egress posture: Block (applies)');
    expect(lines).toContain(`  Block web-egress/no-metadata (${files[0]}:23)`);
    expect(lines.at(-1)).toBe(
      'enforcement: cgroup-sock (cgroup/connect4 and cgroup/connect6) applies egress rules',
    );
  });

  it('explains a posture decision', () => {
    const result = explain({ subject: WEB, connect: '[2001:db8::1]:443', protocol: 'UDP' });
    expect(result.stdout).toContain(
      'verdict: Block by the egress posture of web-egress, whole-domain, web-files\n',
    );
    expect(result.stdout).toContain('operation: connect [2001:db8::1]:443/udp\n');
    expect(result.stdout).toContain('matching rules:\n  none\n');
  });

  it('explains an unidentified process', () => {
    const result = explain({ unidentified: true, connect: '169.254.169.254:80' });
    expect(result.stdout).toContain('verdict: Block by rule unregistered/no-metadata');
    expect(result.stdout).toContain('subject: none (unidentified process)');
  });

  it('explains a read-only write', () => {
    const result = explain({ subject: WEB, open: '/etc/web/app.conf', write: true });
    expect(result.stdout).toContain(`verdict: Block by rule web-files/config (${files[2]}:11)`);
    expect(result.stdout).toContain('operation: open /etc/web/app.conf for writing');
    expect(result.stdout).toContain('  Block (readOnly rule, write) web-files/config');
    expect(result.stdout).toContain(
      'enforcement: bpf-lsm applies file rules, or tracepoint-kill where BPF LSM is not active; `sigil status` shows which this node runs',
    );
  });

  it('names the file rule that denies the open of an executed program', () => {
    const file = write(
      'exec-open.yaml',
      [
        'apiVersion: sigil.dev/v1alpha1',
        'kind: IdentityPolicy',
        'metadata: {name: web-files}',
        'spec:',
        `  subject: {spiffeId: ${WEB}}`,
        '  filePosture: Block',
        '  file:',
        '    - {name: config, action: Allow, paths: [/etc/web.conf]}',
        '  process:',
        '    - {name: tools, action: Allow, paths: [/usr/bin/curl]}',
        '',
      ].join('\n'),
    );
    const result = explain({ subject: WEB, exec: '/usr/bin/curl' }, [file]);
    expect(result.stdout).toContain(`verdict: Allow by rule web-files/tools (${file}:10)`);
    expect(result.stdout).toContain(
      'program open: Block by the file posture of web-files: execve() opens the program first, ' +
        'so the file rules deny the exec before the process rules apply\n',
    );
    const json = JSON.parse(explain({ subject: WEB, exec: '/usr/bin/curl', json: true }, [file]).stdout);
    expect(json.programOpen).toMatchObject({ kind: 'file', decision: { action: 'Block', denied: true } });
    expect(explain({ subject: WEB, exec: '/bin/sh' }, [files[0]]).stdout).not.toContain('program open');
  });

  it('prints JSON', () => {
    const result = explain({ subject: WEB, connect: '10.0.0.53:53', protocol: 'udp', json: true });
    expect(result.code).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json.subject).toBe(WEB);
    expect(json.operation).toEqual({
      kind: 'egress',
      address: '10.0.0.53',
      port: 53,
      protocol: 'UDP',
      peer: null,
    });
    expect(json.decision).toEqual({
      action: 'Allow',
      reason: 'rule',
      denied: false,
      policy: 'web-egress',
      rule: 'dns',
    });
    expect(json.decidingMatch).toMatchObject({ file: files[0], line: 17 });
    expect(json.enforced).toBe(true);
    expect(json.policies).toEqual(['web-egress', 'whole-domain', 'web-files']);
  });

  it.each<[string, ExplainOptions, string]>([
    ['no subject', { connect: '10.0.0.1:80' }, 'missing --subject <spiffe-id>'],
    [
      'two subjects',
      { subject: WEB, unidentified: true, connect: '10.0.0.1:80' },
      'give either --subject or --unidentified',
    ],
    [
      'invalid subject',
      { subject: 'web', connect: '10.0.0.1:80' },
      '--subject: invalid SPIFFE ID "web"',
    ],
    [
      'no operation',
      { subject: WEB },
      'give exactly one of --exec, --open, --connect, --accept and --capability, found none',
    ],
    [
      'two operations',
      { subject: WEB, exec: '/bin/sh', open: '/etc/hosts' },
      'found --exec and --open',
    ],
    [
      'write without open',
      { subject: WEB, exec: '/bin/sh', write: true },
      '--write works only with --open',
    ],
    [
      'peer with exec',
      { subject: WEB, exec: '/bin/sh', peer: WEB },
      '--peer works only with --connect or --accept',
    ],
    ['accept without from', { subject: WEB, accept: '80' }, '--accept needs --from <address>'],
    [
      'endpoint without port',
      { subject: WEB, connect: '10.0.0.1' },
      '--connect: invalid endpoint "10.0.0.1"',
    ],
    [
      'IPv6 without brackets',
      { subject: WEB, connect: '2001:db8::1:80' },
      '--connect: invalid endpoint',
    ],
    [
      'port out of range',
      { subject: WEB, connect: '10.0.0.1:65536' },
      '--connect: invalid port "65536"',
    ],
    [
      'invalid protocol',
      { subject: WEB, connect: '10.0.0.1:80', protocol: 'sctp' },
      '--protocol: invalid protocol "sctp"',
    ],
    [
      'invalid address',
      { subject: WEB, connect: '10.0.0:80' },
      'invalid connect query: address "10.0.0" is not IPv4 or IPv6',
    ],
    [
      'relative path',
      { subject: WEB, exec: 'bin/sh' },
      'invalid exec query: path "bin/sh" is not absolute',
    ],
  ])('rejects %s with exit code 2', (_name, options, message) => {
    const result = explain(options);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain(message);
  });

  it('returns 2 for invalid policy files', () => {
    const result = explain({ subject: WEB, exec: '/bin/sh' }, [INVALID]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('error: spec.mode: invalid mode "audit"');
  });
});

describe('policy diff', () => {
  const OLD = write(
    'old/web.yaml',
    policy(
      'web',
      [
        `  subject: {spiffeId: ${WEB}}`,
        '  egress:',
        '    - {name: api, action: Allow, to: {cidrs: [10.1.0.0/16, 10.2.0.0/16]}, ports: [443]}',
        '    - {name: smtp, action: Block, ports: [25]}',
        '  process:',
        '    - {name: tools, action: Allow, directories: [/usr/bin]}',
        '',
      ].join('\n'),
    ),
  );
  // The old set with its CIDRs in another order, which changes nothing.
  const SAME = write(
    'same/web.yaml',
    readFileSync(OLD, 'utf8').replace('[10.1.0.0/16, 10.2.0.0/16]', '[10.2.0.0/16, 10.1.0.0/16]'),
  );
  const NEW = write(
    'new/web.yaml',
    policy(
      'web',
      [
        `  subject: {spiffeId: ${WEB}}`,
        '  mode: Audit',
        '  egress:',
        '    - {name: api, action: Allow, to: {cidrs: [10.1.0.0/16]}, ports: [443]}',
        '    - {name: smtp, action: Block, ports: [25]}',
        '  process:',
        '    - {name: tools, action: Allow, directories: [/usr/bin], recursive: true}',
        '    - {name: no-curl, action: Block, paths: [/usr/bin/curl]}',
        '',
      ].join('\n'),
    ) +
      '---\n' +
      policy('batch', '  subject: {spiffeId: spiffe://example.org/batch}\n'),
  );

  const diff = (oldPath: string, newPath: string, json = false) => {
    const output = capture();
    const code = runPolicyDiff(oldPath, newPath, { json }, output);
    return { code, ...output };
  };

  it('returns 0 for reordered objects', () => {
    const result = diff(dirname(OLD), dirname(SAME));
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^verdicts: 0 of \d+ sampled operations change\nno changes\n$/);
  });

  it('lists changed policies, rules and verdicts and returns 1', () => {
    const result = diff(OLD, NEW);
    expect(result.code).toBe(1);
    const lines = result.stdout.split('\n');
    expect(lines).toContain('  batch (subject spiffe://example.org/batch): added');
    expect(lines).toContain(`  web (subject ${WEB}): mode Enforce -> Audit`);
    expect(lines).toContain(`  subject ${WEB}, egress (connect):`);
    expect(lines).toContain(
      '    ~ web/api: Allow to cidrs 10.1.0.0/16, 10.2.0.0/16 ports 443 TCP and UDP',
    );
    expect(lines).toContain('      now: Allow to cidrs 10.1.0.0/16 ports 443 TCP and UDP');
    expect(lines).toContain(`  subject ${WEB}, process (exec):`);
    expect(lines).toContain('    + web/no-curl: Block exec of paths /usr/bin/curl');
    expect(lines).toContain(
      `  ${WEB}: connect 10.2.0.0:443/tcp: Allow by rule web/api (${OLD}:7) -> Audit (would be Block in Enforce mode) by the egress posture of web`,
    );
    expect(lines).toContain(
      `  ${WEB}: connect 192.0.2.1:25/tcp: Block by rule web/smtp (${OLD}:8) -> Audit (would be Block in Enforce mode) by rule web/smtp (${NEW}:9)`,
    );
    expect(lines).toContain(
      `  ${WEB}: exec /usr/bin/sample/nested: Block by the process posture of web -> Allow by rule web/tools (${NEW}:11)`,
    );
  });

  it('prints JSON', () => {
    const result = diff(OLD, NEW, true);
    const json = JSON.parse(result.stdout);
    expect(json.changed).toBe(true);
    expect(
      json.rules.map(
        (change: { rule: string; change: string }) => `${change.change} ${change.rule}`,
      ),
    ).toEqual(['changed api', 'added no-curl', 'changed tools']);
    const curl = json.verdicts.find(
      (change: { description: string }) => change.description === 'exec /usr/bin/curl',
    );
    expect(curl.before).toMatchObject({ action: 'Allow', reason: 'rule', rule: 'tools' });
    expect(curl.after).toMatchObject({
      action: 'Audit',
      reason: 'rule',
      rule: 'no-curl',
      wouldBlock: true,
    });
  });

  it('returns 2 for invalid files', () => {
    const result = diff(OLD, INVALID);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('invalid mode "audit"');
    expect(diff(OLD, join(root, 'missing.yaml')).code).toBe(2);
  });
});

describe('bin/sigil policy', () => {
  let registered = false;
  beforeAll(() => {
    // bin/sigil loads dist/, so build it from the current sources first.
    execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: REPOSITORY, stdio: 'pipe' });
    const help = spawnSync('node', ['bin/sigil', 'policy', '--help'], {
      cwd: REPOSITORY,
      encoding: 'utf8',
    });
    registered = help.stdout.includes('schema');
  }, 120_000);

  const sigil = (...args: string[]) =>
    spawnSync('node', ['bin/sigil', 'policy', ...args], { cwd: REPOSITORY, encoding: 'utf8' });

  it('checks valid files', () => {
    const result = sigil('check', 'examples/policies-doc');
    expect(result.status).toBe(0);
    expect(result.stdout).toBe('13 policies in 10 files: valid\n');
  });

  it('exits 1 for invalid files', () => {
    const result = sigil('check', INVALID);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('error: spec.mode: invalid mode "audit"');
  });

  // NOTE: these need `registerPolicyCommands(policy)` in src/cli/main.ts; until then they skip.
  it('runs schema, explain and diff when main.ts registers them', (context) => {
    if (!registered) context.skip();
    expect(sigil('check', 'examples/policies-doc').stderr).toContain(
      'warning: process rule "runtime"',
    );
    expect(sigil('schema').stdout).toBe(
      readFileSync(join(REPOSITORY, 'schema', 'identity-policy.schema.json'), 'utf8'),
    );
    const explain = sigil(
      'explain',
      'examples/policies-doc/07-process.yaml',
      '--subject',
      WEB,
      '--exec',
      '/usr/bin/curl',
    );
    expect(explain.status).toBe(0);
    expect(explain.stdout).toContain('verdict: Block by rule web-exec/no-downloaders');
    const changed = sigil(
      'diff',
      'examples/policies-doc/diff-old',
      'examples/policies-doc/diff-new',
    );
    expect(changed.status).toBe(1);
  });
});
