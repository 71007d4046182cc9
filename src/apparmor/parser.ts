import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Install path of the parser in Debian's `apparmor` package (`/sbin` is a link to it). */
export const DEFAULT_PARSER = '/usr/sbin/apparmor_parser';

/**
 * The feature set that Debian's `apparmor` 3.0.8 package pins in its parser.conf. Compiling
 * against it gives the same result on a kernel without AppArmor as on a Debian 12 node.
 */
export const DEBIAN_FEATURES_FILE = '/usr/share/apparmor-features/features';

/** Options of every `apparmor_parser` call. */
export interface ParserOptions {
  /** Path of `apparmor_parser`; `DEFAULT_PARSER` by default. */
  parser?: string;
  /** Directory searched for `include <...>`, such as /etc/apparmor.d (the parser's default). */
  includeDir?: string;
}

/** Error for a profile that `apparmor_parser` rejected, with its output. */
export class ParserError extends Error {
  readonly output: string;

  constructor(action: string, output: string, options?: { cause: unknown }) {
    super(`apparmor_parser failed to ${action}: ${output.trim()}`, options);
    this.name = 'ParserError';
    this.output = output;
  }
}

/**
 * Compiles a profile text fully, without loading it (`-Q -K`), against a features file so that
 * the result does not depend on the running kernel. Resolves to the parser's warnings (empty
 * when there are none), or rejects with `ParserError` carrying the parser's errors.
 */
export async function compileProfile(
  text: string,
  options: ParserOptions & { featuresFile?: string } = {},
): Promise<string> {
  const features = options.featuresFile ?? DEBIAN_FEATURES_FILE;
  return withProfileFile(text, (file) =>
    runParser(
      ['-Q', '-K', '--abort-on-error', '-M', features, ...includeArgs(options), file],
      'compile',
      options,
    ),
  );
}

/**
 * Loads a profile into the kernel, or replaces the loaded profile of the same name (`-r`). The
 * caller needs CAP_MAC_ADMIN. Rejects with `ParserError` when the parser fails.
 */
export async function loadProfile(text: string, options: ParserOptions = {}): Promise<void> {
  await withProfileFile(text, (file) =>
    runParser(['-r', '-K', ...includeArgs(options), file], 'load', options),
  );
}

/**
 * Removes loaded profiles by name (`-R` on a file of empty profiles with those names). Rejects
 * with `ParserError` when the parser fails, such as for a name that is not loaded.
 */
export async function removeProfiles(
  names: readonly string[],
  options: ParserOptions = {},
): Promise<void> {
  if (names.length === 0) return;
  const text = names.map((name) => `profile ${name} {}\n`).join('');
  await withProfileFile(text, (file) => runParser(['-R', '-K', file], 'remove', options));
}

function includeArgs(options: ParserOptions): string[] {
  return options.includeDir === undefined ? [] : ['-I', options.includeDir];
}

async function withProfileFile<T>(text: string, use: (file: string) => Promise<T>): Promise<T> {
  const directory = mkdtempSync(join(tmpdir(), 'sigil-apparmor-'));
  const file = join(directory, 'profile');
  try {
    writeFileSync(file, text, { mode: 0o600 });
    return await use(file);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

async function runParser(args: string[], action: string, options: ParserOptions): Promise<string> {
  const parser = options.parser ?? DEFAULT_PARSER;
  if (!existsSync(parser)) {
    throw new ParserError(action, `${parser} not found; install the apparmor package`);
  }
  try {
    const { stderr } = await execFileAsync(parser, args, { encoding: 'utf8' });
    return stderr;
  } catch (error) {
    const failure = error as { stderr?: string; message: string };
    throw new ParserError(action, failure.stderr || failure.message, { cause: error });
  }
}
