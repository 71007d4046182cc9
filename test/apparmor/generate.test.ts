import { describe, expect, it } from 'vitest';
import { checkProfiles } from '../../src/apparmor/check';
import { generateProfiles, ProfileCheckError } from '../../src/apparmor/generate';
import { ProfileModel } from '../../src/apparmor/model';
import { ConfigError, formatIssue } from '../../src/util/config-error';
import {
  API,
  generateFor,
  policies,
  policyDocument,
  registration,
  ruleLines,
  WEB,
} from './helpers';

function onlyProfile(spec: Record<string, unknown>): string {
  const generation = generateFor(spec);
  expect(generation.profiles).toHaveLength(1);
  return generation.profiles[0].text;
}

function rulesOf(spec: Record<string, unknown>): string[] {
  return ruleLines(onlyProfile(spec));
}

function configErrorOf(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

const MODEL: ProfileModel = {
  name: 'sigil.example.org.web',
  spiffeId: WEB,
  attachments: [],
  complain: false,
  policies: ['web'],
  allowAllFiles: false,
  allowAllExec: false,
  allowAllNetwork: true,
  allowAllCapabilities: true,
  capabilities: [],
  network: [],
  files: [],
  execs: [],
  networkNotes: [],
};

describe('file rules', () => {
  it('allow-list grants read and write on a path', () => {
    const rules = rulesOf({ file: [{ action: 'Allow', paths: ['/etc/app.conf'] }] });
    expect(rules).toContain('"/etc/app.conf" rw,');
    expect(rules).not.toContain('file,');
  });

  it('directory rule covers the directory itself', () => {
    const rules = rulesOf({ file: [{ action: 'Allow', directories: ['/srv/www'] }] });
    expect(rules).toContain('"/srv/www/" rw,');
    expect(rules).toContain('"/srv/www/*" rw,');
    expect(rules).toContain('"/srv/www/*/" rw,');
    expect(rules).not.toContain('"/srv/www/**" rw,');
  });

  it('recursive directory covers every descendant', () => {
    const rules = rulesOf({
      file: [{ action: 'Allow', directories: ['/srv/www'], recursive: true }],
    });
    expect(rules).toContain('"/srv/www/" rw,');
    expect(rules).toContain('"/srv/www/**" rw,');
    expect(rules).not.toContain('"/srv/www/*" rw,');
  });

  it('root directory rule has no double slash', () => {
    const rules = rulesOf({ file: [{ action: 'Allow', directories: ['/'], recursive: true }] });
    expect(rules).toContain('"/" rw,');
    expect(rules).toContain('"/**" rw,');
  });

  it('readOnly grants read and denies write', () => {
    const rules = rulesOf({
      file: [{ action: 'Allow', readOnly: true, paths: ['/etc/app.conf'] }],
    });
    expect(rules).toContain('"/etc/app.conf" r,');
    expect(rules).toContain('audit deny "/etc/app.conf" w,');
  });

  it('Block becomes an audit deny rule', () => {
    const rules = rulesOf({ file: [{ action: 'Block', paths: ['/etc/shadow'] }] });
    expect(rules).toContain('audit deny "/etc/shadow" rw,');
    expect(rules).toContain('file,');
  });

  it('Audit becomes an audit allow rule', () => {
    const rules = rulesOf({ file: [{ action: 'Audit', paths: ['/etc/hosts'] }] });
    expect(rules).toContain('audit "/etc/hosts" rw,');
  });

  it('deny rules come before allow rules', () => {
    const rules = rulesOf({
      file: [
        { action: 'Allow', paths: ['/a'] },
        { action: 'Block', paths: ['/z'] },
      ],
    });
    expect(rules.indexOf('audit deny "/z" rw,')).toBeLessThan(rules.indexOf('"/a" rw,'));
  });

  it('Block inside an allowed directory keeps both rules', () => {
    // AppArmor subtracts deny rules from the allowed set, so Block still wins here.
    const rules = rulesOf({
      file: [
        { action: 'Allow', directories: ['/srv'], recursive: true },
        { action: 'Block', paths: ['/srv/secret'] },
      ],
    });
    expect(rules).toContain('"/srv/**" rw,');
    expect(rules).toContain('audit deny "/srv/secret" rw,');
  });

  it('same path from two rules is merged', () => {
    const rules = rulesOf({
      file: [
        { name: 'read', action: 'Allow', readOnly: true, paths: ['/a'] },
        { name: 'write', action: 'Allow', paths: ['/a'] },
      ],
    });
    expect(rules.filter((line) => line.startsWith('"/a"'))).toEqual(['"/a" rw,']);
  });

  it('paths are quoted with spaces kept', () => {
    const rules = rulesOf({ file: [{ action: 'Allow', paths: ['/srv/my files/a b.txt'] }] });
    expect(rules).toContain('"/srv/my files/a b.txt" rw,');
  });

  it('glob rule becomes an AppArmor pattern', () => {
    const rules = rulesOf({
      file: [{ action: 'Allow', glob: true, paths: ['/data/*/in/**/part-*.csv'] }],
    });
    expect(rules).toContain('"/data/*/in{,/**}/part-*.csv" rw,');
  });

  it('glob characters without glob are literal', () => {
    const set = policies(
      policyDocument('web', {
        subject: { spiffeId: WEB },
        file: [{ action: 'Allow', paths: ['/placeholder'] }],
      }),
    );
    // The loader rejects these characters without glob: true, so the rule is edited here to
    // test the generator on its own.
    const policy = set.policies[0];
    const rule = { ...policy.file[0], paths: ['/a*b', '/c?[d]', '/e^f', '/g\\h'] };
    set.policies[0] = { ...policy, file: [rule] };
    const rules = ruleLines(generateProfiles(set, null).profiles[0].text);
    expect(rules).toContain('"/a\\*b" rw,');
    expect(rules).toContain('"/c\\?\\[d\\]" rw,');
    expect(rules).toContain('"/e\\^f" rw,');
    expect(rules).toContain('"/g\\\\h" rw,');
  });
});

describe('postures and modes', () => {
  it('Block posture makes an enforcing allow-list', () => {
    const text = onlyProfile({ filePosture: 'Block', file: [{ action: 'Allow', paths: ['/a'] }] });
    expect(text).not.toContain('flags=(complain)');
    expect(ruleLines(text)).not.toContain('file,');
  });

  it('Audit posture puts the profile in complain mode', () => {
    const text = onlyProfile({ filePosture: 'Audit', file: [{ action: 'Allow', paths: ['/a'] }] });
    expect(text).toContain('profile sigil.example.org.web "/usr/bin/web" flags=(complain) {');
    expect(ruleLines(text)).not.toContain('file,');
  });

  it('without Allow rules the class stays open', () => {
    const rules = rulesOf({ file: [{ action: 'Block', paths: ['/a'] }] });
    expect(rules).toContain('file,');
    expect(rules).toContain('network,');
  });

  it('Audit mode turns Block into audit rules', () => {
    const text = onlyProfile({
      mode: 'Audit',
      file: [
        { action: 'Allow', paths: ['/a'] },
        { action: 'Block', paths: ['/b'] },
      ],
    });
    expect(text).toContain('flags=(complain)');
    expect(ruleLines(text)).toContain('audit "/b" rw,');
    expect(text).not.toContain('deny "/b"');
  });

  it('reports each rule and posture', () => {
    const generation = generateFor({
      filePosture: 'Audit',
      file: [
        { name: 'allowed', action: 'Allow', paths: ['/a'] },
        { name: 'blocked', action: 'Block', paths: ['/b'] },
        { name: 'audited', action: 'Audit', paths: ['/c'] },
      ],
    });
    const status = Object.fromEntries(generation.reports.map((r) => [r.rule, r.status]));
    expect(status.allowed).toBe('enforces');
    expect(status.audited).toBe('audits');
    expect(status['(posture)']).toBe('audits');
    expect(generation.reports.every((r) => r.file === 'policies.yaml')).toBe(true);
  });

  it('Block in complain mode is only audited', () => {
    const generation = generateFor({
      filePosture: 'Audit',
      file: [
        { action: 'Allow', paths: ['/a'] },
        { name: 'blocked', action: 'Block', paths: ['/b'] },
      ],
    });
    const blocked = generation.reports.find((r) => r.rule === 'blocked')!;
    expect(blocked.status).toBe('audits');
    expect(blocked.detail).toContain('complain mode');
    expect(ruleLines(generation.profiles[0].text)).toContain('audit deny "/b" rw,');
  });

  it('Block in enforce mode is enforced', () => {
    const generation = generateFor({ file: [{ name: 'blocked', action: 'Block', paths: ['/b'] }] });
    expect(generation.reports.find((r) => r.rule === 'blocked')?.status).toBe('enforces');
  });
});

describe('capability rules', () => {
  it('without Allow rules allows every capability and denies the blocked ones', () => {
    const rules = rulesOf({
      capability: [
        { name: 'no-raw', action: 'Block', capabilities: ['NET_RAW', 'SYS_ADMIN'] },
        { name: 'watch-ptrace', action: 'Audit', capabilities: ['SYS_PTRACE'] },
      ],
    });
    expect(rules).toContain('capability,');
    expect(rules).toContain('audit deny capability net_raw,');
    expect(rules).toContain('audit deny capability sys_admin,');
    expect(rules).toContain('audit capability sys_ptrace,');
  });

  it('with a Block posture allows only the listed capabilities', () => {
    const generation = generateFor({
      capabilityPosture: 'Block',
      capability: [{ name: 'low-ports', action: 'Allow', capabilities: ['NET_BIND_SERVICE'] }],
    });
    const rules = ruleLines(generation.profiles[0].text);
    expect(rules).not.toContain('capability,');
    expect(rules).toContain('capability net_bind_service,');
    expect(generation.profiles[0].text).not.toContain('flags=(complain)');
    const status = Object.fromEntries(
      generation.reports.filter((r) => r.kind === 'capability').map((r) => [r.rule, r.status]),
    );
    expect(status).toEqual({ 'low-ports': 'enforces', '(posture)': 'enforces' });
  });

  it('with an Audit posture puts the profile in complain mode', () => {
    const text = onlyProfile({
      capabilityPosture: 'Audit',
      capability: [{ action: 'Allow', capabilities: ['CHOWN'] }],
    });
    expect(text).toContain('flags=(complain)');
    expect(ruleLines(text)).toContain('capability chown,');
  });
});

describe('exec rules', () => {
  it('allowed path inherits the profile', () => {
    const rules = rulesOf({ process: [{ action: 'Allow', paths: ['/usr/bin/curl'] }] });
    expect(rules).toContain('"/usr/bin/curl" mrix,');
    expect(rules).not.toContain('"/**" ix,');
  });

  it('exec allow-list keeps files open without exec', () => {
    const rules = rulesOf({ process: [{ action: 'Allow', paths: ['/usr/bin/curl'] }] });
    expect(rules).not.toContain('file,');
    expect(rules).toContain('"/{,**}" mrwlk,');
  });

  it('open files and execs are file,', () => {
    const rules = rulesOf({ file: [{ action: 'Block', paths: ['/a'] }] });
    expect(rules).toContain('file,');
    expect(rules).not.toContain('"/{,**}" mrwlk,');
  });

  it('blocked path is an audit deny x rule', () => {
    const rules = rulesOf({ process: [{ action: 'Block', paths: ['/usr/bin/curl'] }] });
    expect(rules).toContain('audit deny "/usr/bin/curl" x,');
  });

  it('directory of executables covers its entries', () => {
    const rules = rulesOf({ process: [{ action: 'Allow', directories: ['/opt/bin'] }] });
    expect(rules).toContain('"/opt/bin/*" mrix,');
    expect(rules).not.toContain('"/opt/bin/" mrix,');
  });

  it('open exec class with a file allow-list allows every exec', () => {
    const rules = rulesOf({ file: [{ action: 'Allow', paths: ['/a'] }] });
    expect(rules).toContain('"/**" ix,');
  });

  function transitionSet(process: Record<string, unknown>[], withApiPolicy = true) {
    const documents = [policyDocument('web', { subject: { spiffeId: WEB }, process })];
    if (withApiPolicy) {
      documents.push(
        policyDocument('api', {
          subject: { spiffeId: API },
          file: [{ action: 'Block', paths: ['/x'] }],
        }),
      );
    }
    return generateProfiles(
      policies(...documents),
      registration({ [WEB]: ['unix:path:/usr/bin/web'], [API]: ['unix:path:/usr/bin/api'] }),
    );
  }

  it('exec of another profile executable moves to it', () => {
    const generation = transitionSet([{ action: 'Allow', paths: ['/usr/bin/api'] }]);
    const web = generation.profiles.find((p) => p.spiffeId === WEB)!;
    expect(ruleLines(web.text)).toContain('"/usr/bin/api" mrPx -> sigil.example.org.api,');
  });

  it('directory rule adds a literal transition', () => {
    const generation = transitionSet([{ action: 'Allow', directories: ['/usr/bin'] }]);
    const web = ruleLines(generation.profiles.find((p) => p.spiffeId === WEB)!.text);
    expect(web).toContain('"/usr/bin/*" mrix,');
    expect(web).toContain('"/usr/bin/api" mrPx -> sigil.example.org.api,');
    expect(web).not.toContain('"/usr/bin/web" mrPx -> sigil.example.org.web,');
  });

  it('executable without a profile is inherited', () => {
    const generation = transitionSet([{ action: 'Allow', paths: ['/usr/bin/api'] }], false);
    const web = ruleLines(generation.profiles[0].text);
    expect(web).toContain('"/usr/bin/api" mrix,');
    expect(web.join('\n')).not.toContain('Px');
  });
});

describe('network rules', () => {
  it('port and peer are a comment and a warning', () => {
    const generation = generateFor({
      egress: [
        { name: 'to-api', action: 'Allow', to: { spiffeId: API }, ports: [8443], protocol: 'TCP' },
      ],
    });
    const text = generation.profiles[0].text;
    expect(text).toContain(`# egress rule web/to-api: ports 8443; peer ${API} not expressible`);
    expect(text).toContain('# AppArmor 3.0 mediates sockets by address family and type only.');
    expect(generation.warnings.map(formatIssue)).toContainEqual(
      expect.stringMatching(/^policies\.yaml:\d+:\d+: warning: .*cannot express ports 8443/),
    );
  });

  it('egress allow-list alone keeps every socket', () => {
    const generation = generateFor({ egress: [{ action: 'Allow', protocol: 'TCP' }] });
    expect(ruleLines(generation.profiles[0].text)).toContain('network,');
    const posture = generation.reports.find((r) => r.kind === 'egress' && r.rule === '(posture)');
    expect(posture?.status).toBe('cannot-express');
  });

  it('allow-list in both directions lists socket types', () => {
    const rules = rulesOf({
      egress: [{ action: 'Allow', protocol: 'TCP' }],
      ingress: [{ action: 'Allow', protocol: 'TCP' }],
    });
    expect(rules).not.toContain('network,');
    expect(rules).toContain('network inet stream,');
    expect(rules).toContain('network inet6 stream,');
    expect(rules).toContain('network unix,');
    expect(rules).not.toContain('network inet dgram,');
  });

  it('protocol blocked both ways is denied', () => {
    const rules = rulesOf({
      egress: [{ action: 'Block', protocol: 'UDP' }],
      ingress: [{ action: 'Block', protocol: 'UDP' }],
    });
    expect(rules).toContain('audit deny network inet dgram,');
    expect(rules).toContain('audit deny network inet6 dgram,');
  });

  it('protocol blocked one way is not denied', () => {
    const generation = generateFor({ egress: [{ action: 'Block', protocol: 'UDP' }] });
    expect(generation.profiles[0].text).not.toContain('deny network');
    expect(generation.reports[0].status).toBe('cannot-express');
  });
});

describe('attachment', () => {
  it('attaches to the unix:path executable', () => {
    const text = onlyProfile({ file: [{ action: 'Block', paths: ['/a'] }] });
    expect(text).toContain('profile sigil.example.org.web "/usr/bin/web" {');
  });

  it('attaches by name without unix:path', () => {
    const generation = generateProfiles(
      policies(policyDocument('web', { subject: { spiffeId: WEB } })),
      registration({ [WEB]: ['unix:uid:1000'] }),
    );
    expect(generation.profiles[0].text).toContain('profile sigil.example.org.web {');
    expect(generation.profiles[0].attachments).toEqual([]);
  });

  it('warns that other selectors are not checked', () => {
    const generation = generateProfiles(
      policies(policyDocument('web', { subject: { spiffeId: WEB } })),
      registration({ [WEB]: ['unix:path:/usr/bin/web', 'unix:uid:1000'] }),
    );
    expect(generation.warnings.map((w) => w.message)).toContainEqual(
      expect.stringContaining('does not check the entry'),
    );
  });

  it('rejects one executable for two IDs', () => {
    const error = configErrorOf(() =>
      generateProfiles(
        policies(policyDocument('web', { subject: { spiffeId: WEB } })),
        registration({ [WEB]: ['unix:path:/usr/bin/x'], [API]: ['unix:path:/usr/bin/x'] }),
      ),
    );
    expect(error.message).toMatch(/registration\.yaml:\d+:\d+: error: .*executable \/usr\/bin\/x/);
  });

  it('prefix subject gets a profile per registered ID', () => {
    const generation = generateProfiles(
      policies(policyDocument('all', { subject: { trustDomain: 'example.org' } })),
      registration({ [WEB]: ['unix:uid:1'], [API]: ['unix:uid:2'] }),
    );
    expect(generation.profiles.map((p) => p.name)).toEqual([
      'sigil.example.org.api',
      'sigil.example.org.web',
    ]);
  });

  it('unidentified subject gets a warning only', () => {
    const generation = generateProfiles(
      policies(policyDocument('none', { subject: { unidentified: true } })),
      null,
    );
    expect(generation.profiles).toEqual([]);
    expect(generation.warnings[0].message).toContain(
      'unidentified subject gets no AppArmor profile',
    );
  });
});

describe('rejected values', () => {
  it.each([
    ['newline', '/tmp/a\n  file,\n  "/b', 'U+000A'],
    ['carriage return', '/tmp/a\rb', 'U+000D'],
    ['comma', '/tmp/a, /b', "','"],
    ['quote', '/tmp/a" rw,\n  "/b', `'"'`],
    ['hash', '/tmp/a#b', "'#'"],
  ])('path with %s', (_name, path, character) => {
    const error = configErrorOf(() => generateFor({ file: [{ action: 'Allow', paths: [path] }] }));
    const message = formatIssue(error.issues[0]);
    expect(message).toMatch(/^policies\.yaml:\d+:\d+: error: spec\.file\[0\]\.paths: /);
    expect(message).toContain(JSON.stringify(path));
    expect(message).toContain(character);
  });

  it('brace in a rule path', () => {
    const set = policies(
      policyDocument('web', {
        subject: { spiffeId: WEB },
        process: [{ action: 'Allow', paths: ['/placeholder'] }],
      }),
    );
    const policy = set.policies[0];
    set.policies[0] = { ...policy, process: [{ ...policy.process[0], paths: ['/a{,/**}'] }] };
    const error = configErrorOf(() => generateProfiles(set, null));
    expect(formatIssue(error.issues[0])).toContain("'{'");
  });

  it('NUL in a directory', () => {
    const set = policies(
      policyDocument('web', {
        subject: { spiffeId: WEB },
        file: [{ action: 'Allow', directories: ['/placeholder'] }],
      }),
    );
    const policy = set.policies[0];
    set.policies[0] = { ...policy, file: [{ ...policy.file[0], directories: ['/a\u0000b'] }] };
    const error = configErrorOf(() => generateProfiles(set, null));
    expect(formatIssue(error.issues[0])).toContain('spec.file[0].directories');
    expect(formatIssue(error.issues[0])).toContain('U+0000');
  });

  it('unsafe executable in the registration', () => {
    const error = configErrorOf(() =>
      generateProfiles(
        policies(policyDocument('web', { subject: { spiffeId: WEB } })),
        registration({ [WEB]: ['unix:path:/usr/bin/a,b'] }),
      ),
    );
    expect(formatIssue(error.issues[0])).toMatch(/^registration\.yaml:\d+:\d+: error: .*','/);
  });

  it('reports every unsafe value at once', () => {
    const error = configErrorOf(() =>
      generateFor({ file: [{ action: 'Allow', paths: ['/a,b', '/c#d'] }] }),
    );
    expect(error.issues.filter((issue) => issue.severity === 'error')).toHaveLength(2);
  });
});

describe('checkProfiles', () => {
  it('accepts a valid profile', () => {
    expect(checkProfiles([MODEL])).toEqual([]);
  });

  it('finds conflicting exec modes on one path', () => {
    const model: ProfileModel = {
      ...MODEL,
      execs: [
        { qualifier: 'allow', aare: '/usr/bin/a', mode: 'ix', target: null, sources: [] },
        { qualifier: 'audit', aare: '/usr/bin/a', mode: 'Px', target: MODEL.name, sources: [] },
      ],
    };
    expect(checkProfiles([model])).toEqual([
      expect.stringContaining('/usr/bin/a (ix) and /usr/bin/a (Px -> sigil.example.org.web)'),
    ]);
  });

  it('finds conflicting exec modes on overlapping patterns', () => {
    const model: ProfileModel = {
      ...MODEL,
      execs: [
        { qualifier: 'allow', aare: '/opt/*/bin', mode: 'ix', target: null, sources: [] },
        { qualifier: 'allow', aare: '/opt/x/*', mode: 'Px', target: MODEL.name, sources: [] },
      ],
    };
    expect(checkProfiles([model])).toHaveLength(1);
  });

  it('finds a pattern conflict with file,', () => {
    const model: ProfileModel = {
      ...MODEL,
      allowAllFiles: true,
      allowAllExec: true,
      execs: [{ qualifier: 'allow', aare: '/opt/**', mode: 'Px', target: MODEL.name, sources: [] }],
    };
    expect(checkProfiles([model])).toHaveLength(1);
  });

  it('lets a literal win over a pattern', () => {
    const model: ProfileModel = {
      ...MODEL,
      allowAllFiles: true,
      allowAllExec: true,
      execs: [{ qualifier: 'allow', aare: '/opt/a', mode: 'Px', target: MODEL.name, sources: [] }],
    };
    expect(checkProfiles([model])).toEqual([]);
  });

  it('ignores deny rules for conflicts', () => {
    const model: ProfileModel = {
      ...MODEL,
      execs: [
        { qualifier: 'deny', aare: '/usr/bin/a', mode: null, target: null, sources: [] },
        { qualifier: 'allow', aare: '/usr/bin/a', mode: 'ix', target: null, sources: [] },
      ],
    };
    expect(checkProfiles([model])).toEqual([]);
  });

  it('finds a dangling transition', () => {
    const model: ProfileModel = {
      ...MODEL,
      execs: [
        { qualifier: 'allow', aare: '/usr/bin/a', mode: 'Px', target: 'sigil.gone', sources: [] },
      ],
    };
    expect(checkProfiles([model])).toEqual([
      'profile sigil.example.org.web: exec of /usr/bin/a moves to profile sigil.gone, which is not generated',
    ]);
  });

  it('finds a name without the prefix', () => {
    expect(checkProfiles([{ ...MODEL, name: 'docker-default' }])).toHaveLength(1);
  });

  it('finds a duplicate name', () => {
    expect(checkProfiles([MODEL, MODEL])).toContain(
      'profile name sigil.example.org.web is used twice',
    );
  });

  it('finds two profiles on one executable', () => {
    const models = [
      { ...MODEL, attachments: ['/usr/bin/x'] },
      { ...MODEL, name: 'sigil.other', attachments: ['/usr/bin/x'] },
    ];
    expect(checkProfiles(models)).toEqual([
      'profiles sigil.example.org.web and sigil.other both attach to /usr/bin/x',
    ]);
  });

  it('generateProfiles throws on check problems', () => {
    expect(new ProfileCheckError(['a']).message).toBe('invalid AppArmor profiles:\n  a');
  });
});

describe('determinism', () => {
  const documents = [
    policyDocument('web', {
      subject: { spiffeId: WEB },
      file: [
        { name: 'b', action: 'Allow', paths: ['/b', '/a'] },
        { name: 'a', action: 'Block', directories: ['/z', '/y'] },
      ],
      process: [{ action: 'Allow', paths: ['/usr/bin/api', '/usr/bin/curl'] }],
    }),
    policyDocument('api', {
      subject: { spiffeId: API },
      egress: [{ action: 'Allow', protocol: 'UDP' }],
      ingress: [{ action: 'Allow', protocol: 'TCP' }],
    }),
  ];
  const entries = { [WEB]: ['unix:path:/usr/bin/web'], [API]: ['unix:path:/usr/bin/api'] };

  it('same input gives the same text', () => {
    const first = generateProfiles(policies(...documents), registration(entries));
    const second = generateProfiles(policies(...documents), registration(entries));
    expect(second.profiles).toEqual(first.profiles);
  });

  it('policy order does not change the rules', () => {
    const forward = generateProfiles(policies(...documents), registration(entries));
    const backward = generateProfiles(policies(...[...documents].reverse()), registration(entries));
    expect(backward.profiles.map((p) => p.name)).toEqual(forward.profiles.map((p) => p.name));
    for (const [index, profile] of forward.profiles.entries()) {
      expect(ruleLines(backward.profiles[index].text).sort()).toEqual(
        ruleLines(profile.text).sort(),
      );
    }
  });

  it('rules are sorted by path within a group', () => {
    const text = generateProfiles(policies(...documents), registration(entries)).profiles.find(
      (p) => p.spiffeId === WEB,
    )!.text;
    const allowed = ruleLines(text).filter((line) => /^"\/[ab]" rw,$/.test(line));
    expect(allowed).toEqual(['"/a" rw,', '"/b" rw,']);
  });
});
