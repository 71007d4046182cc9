import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { StructLayout } from '../../src/kernel/layout';

/** A TypeScript mirror of one header of bpf/include: its structs and constants. */
export interface HeaderMirror {
  /** Path of the header, relative to the project root. */
  header: string;
  layouts: readonly StructLayout[];
  /** Values by C name; each name must be a macro or enumerator of the header. */
  constants: Readonly<Record<string, number | bigint>>;
  /** Whether every struct's size must be a multiple of 8 bytes, which the tests then check. */
  paddedTo8?: boolean;
}

/** Sizes, offsets and constants as the host C compiler lays the header out. */
export interface HeaderFacts {
  sizes: Record<string, bigint>;
  offsets: Record<string, bigint>;
  constants: Record<string, bigint>;
}

function probeProgram(mirror: HeaderMirror): string {
  const lines: string[] = [];
  // Unsigned, because the FNV constants of sigil_lsm.h do not fit a signed 64-bit integer.
  const emit = (key: string, expression: string) =>
    lines.push(
      `  printf("\\"%s\\": \\"%llu\\",\\n", "${key}", (unsigned long long)(${expression}));`,
    );
  lines.push('#include <stdio.h>', '#include <stddef.h>', '#include <linux/types.h>');
  lines.push(`#include "${resolve(mirror.header)}"`, 'int main(void) {', '  printf("{");');
  for (const layout of mirror.layouts) {
    emit(`size:${layout.name}`, `sizeof(struct ${layout.name})`);
    for (const field of layout.fields) {
      emit(`offset:${layout.name}.${field.name}`, `offsetof(struct ${layout.name}, ${field.name})`);
    }
  }
  for (const name of Object.keys(mirror.constants)) emit(`constant:${name}`, name);
  lines.push('  printf("\\"end\\": \\"0\\"}\\n");', '  return 0;', '}');
  return lines.join('\n');
}

/**
 * Compiles a program that includes the header with the host C compiler, runs
 * it and returns every size, offset and constant of the mirror as compiled.
 * Throws when the header or a name of the mirror does not compile.
 */
export function readHeaderFacts(mirror: HeaderMirror): HeaderFacts {
  const workDir = mkdtempSync(join(tmpdir(), 'sigil-header-mirror-'));
  try {
    writeFileSync(join(workDir, 'probe.c'), probeProgram(mirror));
    const probe = join(workDir, 'probe');
    execFileSync('cc', ['-Wall', '-Ibpf/include', '-o', probe, join(workDir, 'probe.c')]);
    const raw = JSON.parse(execFileSync(probe, { encoding: 'utf8' }));
    const facts: HeaderFacts = { sizes: {}, offsets: {}, constants: {} };
    for (const [key, value] of Object.entries<string>(raw)) {
      const [kind, name] = key.split(':');
      if (kind === 'size') facts.sizes[name] = BigInt(value);
      if (kind === 'offset') facts.offsets[name] = BigInt(value);
      if (kind === 'constant') facts.constants[name] = BigInt(value);
    }
    return facts;
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

/**
 * Defines the tests that check a mirror against its header compiled by the
 * host C compiler, so that the TypeScript layouts cannot drift from the C ones.
 */
export function describeHeaderMirror(mirror: HeaderMirror): void {
  describe(`layout mirror of ${basename(mirror.header)}`, () => {
    let facts: HeaderFacts;
    beforeAll(() => {
      facts = readHeaderFacts(mirror);
    });

    it.each(mirror.layouts.map((layout) => [layout.name, layout] as const))(
      'struct %s has the header size and offsets',
      (name, layout) => {
        expect(BigInt(layout.size)).toBe(facts.sizes[name]);
        for (const field of layout.fields) {
          expect({ field: field.name, offset: BigInt(field.offset) }).toEqual({
            field: field.name,
            offset: facts.offsets[`${name}.${field.name}`],
          });
        }
      },
    );

    it.each(Object.entries(mirror.constants))('constant %s matches', (name, value) => {
      expect(BigInt(value)).toBe(facts.constants[name]);
    });

    it('covers every struct the header defines', () => {
      const header = readFileSync(mirror.header, 'utf8');
      const declared = [...header.matchAll(/^struct ([a-z_]+) \{/gm)].map((match) => match[1]);
      expect(mirror.layouts.map((layout) => layout.name).sort()).toEqual(declared.sort());
    });

    if (mirror.paddedTo8) {
      it('pads every struct to a multiple of 8', () => {
        for (const layout of mirror.layouts) {
          expect({ name: layout.name, remainder: layout.size % 8 }).toEqual({
            name: layout.name,
            remainder: 0,
          });
        }
      });
    }
  });
}
