import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerPolicyCommands } from '../../src/cli/policy-commands';

const REPOSITORY = join(__dirname, '..', '..');
const DOC = join(REPOSITORY, 'docs', 'policy.md');
const EXAMPLES = 'examples/policies-doc';

interface Block {
  language: string;
  lines: string[];
  /** Line of the opening fence in the document, 1-based. */
  line: number;
}

function fencedBlocks(text: string): Block[] {
  const blocks: Block[] = [];
  let current: Block | undefined;
  text.split('\n').forEach((line, index) => {
    const fence = /^```(\S*)$/.exec(line);
    if (!fence) {
      current?.lines.push(line);
      return;
    }
    if (current) {
      blocks.push(current);
      current = undefined;
    } else {
      current = { language: fence[1], lines: [], line: index + 1 };
    }
  });
  return blocks;
}

interface DocCommand {
  /** Arguments after `sigil`. */
  args: string[];
  /** Lines that the output must contain, in this order. */
  expected: string[];
  line: number;
}

function docCommands(blocks: Block[]): DocCommand[] {
  const commands: DocCommand[] = [];
  for (const block of blocks.filter((candidate) => candidate.language === 'console')) {
    block.lines.forEach((line, index) => {
      if (line.startsWith('$ sigil ')) {
        commands.push({
          args: line.slice('$ sigil '.length).split(' '),
          expected: [],
          line: block.line + 1 + index,
        });
      } else if (line !== '') {
        commands.at(-1)?.expected.push(line);
      }
    });
  }
  return commands;
}

/** Runs `sigil ARGS` through commander with the policy commands, returning output and exit code. */
async function runSigil(args: string[]): Promise<{ output: string[]; exitCode: number }> {
  let text = '';
  const output = {
    out: (chunk: string) => (text += chunk),
    err: (chunk: string) => (text += chunk),
  };
  const program = new Command('sigil').exitOverride();
  registerPolicyCommands(program.command('policy'), output);
  const previous = process.exitCode;
  process.exitCode = undefined;
  try {
    await program.parseAsync(['node', 'sigil', ...args]);
    return { output: text.split('\n'), exitCode: Number(process.exitCode ?? 0) };
  } finally {
    process.exitCode = previous;
  }
}

const blocks = fencedBlocks(readFileSync(DOC, 'utf8'));

describe('docs/policy.md', () => {
  // The commands in the document use paths relative to the repository.
  const startDirectory = process.cwd();
  beforeAll(() => process.chdir(REPOSITORY));
  afterAll(() => process.chdir(startDirectory));

  const yamlBlocks = blocks.filter((block) => block.language === 'yaml');

  it('has policy examples and commands', () => {
    expect(yamlBlocks.length).toBeGreaterThanOrEqual(9);
    expect(docCommands(blocks).length).toBeGreaterThan(30);
  });

  it.each(yamlBlocks.map((block) => [block.line, block] as const))(
    'shows a real example file in the YAML block at line %i',
    (_line, block) => {
      const header = /^# (examples\/policies-doc\/[a-z0-9-]+\.yaml)$/.exec(block.lines[0]);
      expect(
        header,
        'the block must start with "# examples/policies-doc/<name>.yaml"',
      ).not.toBeNull();
      const file = join(REPOSITORY, header![1]);
      expect(existsSync(file)).toBe(true);
      expect(`${block.lines.join('\n')}\n`).toBe(readFileSync(file, 'utf8'));
    },
  );

  it('shows every example file of the folder', () => {
    const shownFiles = new Set(yamlBlocks.map((block) => block.lines[0].slice(2)));
    const files = readdirSync(join(REPOSITORY, EXAMPLES))
      .filter((name) => name.endsWith('.yaml'))
      .map((name) => `${EXAMPLES}/${name}`);
    expect(files.filter((file) => !shownFiles.has(file))).toEqual([]);
  });

  it.each(
    docCommands(blocks).map(
      (command) => [command.line, command.args.slice(1, 2)[0], command] as const,
    ),
  )('prints what the command at line %i (%s) shows', async (_line, _name, command) => {
    const { output, exitCode } = await runSigil(command.args);
    let from = 0;
    for (const expected of command.expected) {
      const found = output.indexOf(expected, from);
      expect({ missing: expected, output }).toEqual({
        missing: found >= 0 ? expected : '',
        output,
      });
      from = found + 1;
    }
    const expectedExit = command.args[1] === 'diff' ? 1 : 0;
    expect(exitCode).toBe(expectedExit);
  });
});
