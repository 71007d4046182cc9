import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const REPO = join(__dirname, '..', '..');

describe('module graph', () => {
  it('has no import cycles in src', () => {
    const output = execFileSync(
      process.execPath,
      [join(REPO, 'node_modules', 'madge', 'bin', 'cli.js'), '--circular', '--json', '--extensions', 'ts', 'src'],
      { cwd: REPO, encoding: 'utf8' },
    );
    expect(JSON.parse(output)).toEqual([]);
  });
});
