/**
 * Generated profiles against the real apparmor_parser (Debian's apparmor 3.0.8): a full
 * compile without loading (-Q -K) against Debian's pinned feature file, so the result does
 * not depend on the host kernel, which has no AppArmor.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkProfiles } from '../../src/apparmor/check';
import { generateProfiles } from '../../src/apparmor/generate';
import { ProfileModel } from '../../src/apparmor/model';
import {
  compileProfile,
  DEBIAN_FEATURES_FILE,
  DEFAULT_PARSER,
  ParserError,
} from '../../src/apparmor/parser';
import { renderProfile } from '../../src/apparmor/render';
import { loadRegistrationFile } from '../../src/identity/registration';
import { loadPolicyFiles } from '../../src/policy/loader';
import { generateFor } from './helpers';

const FIXTURES = path.join(__dirname, 'fixtures');
const GOLDEN = path.join(FIXTURES, 'golden');
/** Set to 1 to rewrite the golden files from the generator's output. */
const UPDATE_GOLDEN = process.env.SIGIL_UPDATE_GOLDEN === '1';

const MODEL: ProfileModel = {
  name: 'sigil.example.org.web',
  spiffeId: 'spiffe://example.org/web',
  attachments: ['/usr/bin/web'],
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

async function compileError(text: string): Promise<string> {
  try {
    await compileProfile(text);
  } catch (error) {
    if (error instanceof ParserError) return error.output;
    throw error;
  }
  throw new Error(`apparmor_parser accepted:\n${text}`);
}

function fixtureGeneration() {
  return generateProfiles(
    loadPolicyFiles([path.join(FIXTURES, 'policies')]),
    loadRegistrationFile(path.join(FIXTURES, 'registration.yaml')),
  );
}

describe('apparmor_parser setup', () => {
  it('parser and feature file are installed', () => {
    expect(existsSync(DEFAULT_PARSER)).toBe(true);
    expect(existsSync(DEBIAN_FEATURES_FILE)).toBe(true);
  });

  it('rejects a broken profile', async () => {
    expect(await compileError('profile sigil.x { /a r }\n')).toMatch(/syntax error/);
  });
});

describe('fixture profiles', () => {
  const generation = fixtureGeneration();

  it('every profile compiles without warnings', async () => {
    expect(generation.profiles.length).toBe(3);
    for (const profile of generation.profiles) {
      expect(await compileProfile(profile.text), profile.name).toBe('');
    }
  });

  it('profiles match the golden files', () => {
    if (UPDATE_GOLDEN) {
      mkdirSync(GOLDEN, { recursive: true });
      for (const profile of generation.profiles) {
        writeFileSync(path.join(GOLDEN, profile.name), profile.text);
      }
    }
    expect(readdirSync(GOLDEN).sort()).toEqual(generation.profiles.map((p) => p.name));
    for (const profile of generation.profiles) {
      const golden = readFileSync(path.join(GOLDEN, profile.name), 'utf8');
      expect(profile.text, profile.name).toBe(golden);
    }
  });

  it('a second generation is byte-identical', () => {
    expect(fixtureGeneration().profiles).toEqual(generation.profiles);
  });
});

describe('generated profiles compile', () => {
  it.each<[string, Record<string, unknown>]>([
    ['file allow-list', { file: [{ action: 'Allow', paths: ['/etc/app.conf'] }] }],
    ['complain mode', { filePosture: 'Audit', file: [{ action: 'Allow', paths: ['/a'] }] }],
    [
      'directories',
      {
        file: [
          { action: 'Allow', directories: ['/srv/a'] },
          { action: 'Allow', directories: ['/srv/b'], recursive: true, readOnly: true },
          { action: 'Allow', directories: ['/'] },
        ],
      },
    ],
    ['glob', { file: [{ action: 'Allow', glob: true, paths: ['/d/**/x-*.log', '/e/**'] }] }],
    ['odd characters', { file: [{ action: 'Allow', paths: ['/a b/ü!$@+().txt', '/c\\d'] }] }],
    [
      'exec rules',
      {
        process: [
          { action: 'Allow', directories: ['/usr/bin'], recursive: true },
          { action: 'Block', paths: ['/usr/bin/curl'] },
          { action: 'Audit', paths: ['/usr/bin/wget'] },
        ],
      },
    ],
    [
      'network',
      {
        egress: [{ action: 'Allow', protocol: 'Any', ports: [53] }],
        ingress: [
          { action: 'Allow', protocol: 'TCP' },
          { action: 'Block', protocol: 'UDP' },
        ],
      },
    ],
    ['audit mode', { mode: 'Audit', file: [{ action: 'Block', paths: ['/etc/shadow'] }] }],
    ['exec allow-list only', { process: [{ action: 'Allow', paths: ['/usr/bin/curl'] }] }],
  ])('%s', async (_name, spec) => {
    const generation = generateFor(spec);
    expect(await compileProfile(generation.profiles[0].text)).toBe('');
  });
});

describe('what the checks catch before the parser', () => {
  const conflicting: ProfileModel = {
    ...MODEL,
    execs: [
      { qualifier: 'allow', aare: '/usr/bin/a', mode: 'ix', target: null, sources: [] },
      { qualifier: 'allow', aare: '/usr/bin/a', mode: 'Px', target: MODEL.name, sources: [] },
    ],
  };

  it('conflicting exec modes on one path', async () => {
    expect(checkProfiles([conflicting])).toHaveLength(1);
    expect(await compileError(renderProfile(conflicting))).toMatch(/conflicting x modifiers/);
  });

  it('conflicting exec modes on overlapping patterns', async () => {
    const model: ProfileModel = {
      ...MODEL,
      allowAllFiles: true,
      allowAllExec: true,
      execs: [{ qualifier: 'allow', aare: '/opt/**', mode: 'Px', target: MODEL.name, sources: [] }],
    };
    expect(checkProfiles([model])).toHaveLength(1);
    expect(await compileError(renderProfile(model))).toMatch(/conflicting x modifiers/);
  });

  it('dangling transition passes the parser', async () => {
    const model: ProfileModel = {
      ...MODEL,
      execs: [
        { qualifier: 'allow', aare: '/usr/bin/a', mode: 'Px', target: 'sigil.gone', sources: [] },
      ],
    };
    expect(checkProfiles([model])).toHaveLength(1);
    // The parser compiles it; the kernel would deny the exec ("profile transition not found").
    expect(await compileProfile(renderProfile(model))).toBe('');
  });

  it('newline would inject a rule the parser accepts', async () => {
    const aare = '/tmp/a" r,\n  file,\n  "/tmp/b';
    const model: ProfileModel = {
      ...MODEL,
      files: [{ qualifier: 'allow', aare, permissions: 'r', sources: [] }],
    };
    expect(checkProfiles([model])).toHaveLength(1);
    const text = renderProfile(model);
    expect(text).toContain('\n  file,\n');
    expect(await compileProfile(text)).toBe('');
  });

  it('unescaped quote breaks the profile', async () => {
    const model: ProfileModel = {
      ...MODEL,
      files: [{ qualifier: 'allow', aare: '/tmp/a"b', permissions: 'r', sources: [] }],
    };
    expect(checkProfiles([model])).toHaveLength(1);
    expect(await compileError(renderProfile(model))).toMatch(/parser error|syntax error|Lexer/);
  });

  it('unescaped brace breaks the profile', async () => {
    const model: ProfileModel = {
      ...MODEL,
      files: [{ qualifier: 'allow', aare: '/tmp/a{b', permissions: 'r', sources: [] }],
    };
    expect(checkProfiles([model])).toHaveLength(1);
    expect(await compileError(renderProfile(model))).toMatch(/Regex|grouping|regexs/);
  });

  it('escaped glob characters compile', async () => {
    const generation = generateFor({ file: [{ action: 'Allow', paths: ['/placeholder'] }] });
    const text = generation.profiles[0].text.replace('"/placeholder"', '"/a\\*b\\[c\\]\\?d"');
    expect(await compileProfile(text)).toBe('');
  });

  it('unquoted path with a space is rejected', async () => {
    const text = renderProfile({
      ...MODEL,
      files: [{ qualifier: 'allow', aare: '/tmp/a b', permissions: 'r', sources: [] }],
    }).replace('"/tmp/a b"', '/tmp/a b');
    expect(await compileError(text)).toMatch(/syntax error/);
  });

  it('bare x in an allow rule is rejected', async () => {
    const text = renderProfile(MODEL).replace('unix,', 'unix,\n  "/usr/bin/a" x,');
    expect(await compileError(text)).toMatch(/x/);
  });
});
