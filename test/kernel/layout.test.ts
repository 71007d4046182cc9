import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALL_LAYOUTS, HEADER_CONSTANTS } from '../../src/kernel/layout';

// Compiles bpf/include/sigil.h with the host C compiler and reads every size,
// offset and constant back, so the TypeScript mirror cannot drift from it.
interface HeaderFacts {
  sizes: Record<string, number>;
  offsets: Record<string, number>;
  constants: Record<string, number>;
}

let workDir = '';
let facts: HeaderFacts;

function probeProgram(): string {
  const lines: string[] = [];
  const emit = (key: string, expression: string) =>
    lines.push(`  printf("\\"%s\\": %lld,\\n", "${key}", (long long)(${expression}));`);
  lines.push('#include <stdio.h>', '#include <stddef.h>', '#include <linux/types.h>');
  lines.push(`#include "${resolve('bpf/include/sigil.h')}"`, 'int main(void) {', '  printf("{");');
  for (const layout of ALL_LAYOUTS) {
    emit(`size:${layout.name}`, `sizeof(struct ${layout.name})`);
    for (const field of layout.fields) {
      emit(`offset:${layout.name}.${field.name}`, `offsetof(struct ${layout.name}, ${field.name})`);
    }
  }
  for (const name of Object.keys(HEADER_CONSTANTS)) emit(`constant:${name}`, name);
  lines.push('  printf("\\"end\\": 0}\\n");', '  return 0;', '}');
  return lines.join('\n');
}

beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), 'sigil-layout-'));
  writeFileSync(join(workDir, 'probe.c'), probeProgram());
  execFileSync('cc', ['-Wall', '-o', join(workDir, 'probe'), join(workDir, 'probe.c')]);
  const raw = JSON.parse(execFileSync(join(workDir, 'probe'), { encoding: 'utf8' }));
  facts = { sizes: {}, offsets: {}, constants: {} };
  for (const [key, value] of Object.entries<number>(raw)) {
    const [kind, name] = key.split(':');
    if (kind === 'size') facts.sizes[name] = value;
    if (kind === 'offset') facts.offsets[name] = value;
    if (kind === 'constant') facts.constants[name] = value;
  }
});

afterAll(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe('layout mirror of sigil.h', () => {
  it.each(ALL_LAYOUTS.map((layout) => [layout.name, layout] as const))(
    'struct %s has the header size and offsets',
    (name, layout) => {
      expect(layout.size).toBe(facts.sizes[name]);
      for (const field of layout.fields) {
        expect({ field: field.name, offset: field.offset }).toEqual({
          field: field.name,
          offset: facts.offsets[`${name}.${field.name}`],
        });
      }
    },
  );

  it.each(Object.entries(HEADER_CONSTANTS))('constant %s matches', (name, value) => {
    expect(value).toBe(facts.constants[name]);
  });

  it('covers every struct the header defines', () => {
    const header = execFileSync('grep', ['-o', '^struct [a-z_]* {', 'bpf/include/sigil.h'], {
      encoding: 'utf8',
    });
    const declared = header.trim().split('\n').map((line) => line.split(' ')[1]);
    expect(ALL_LAYOUTS.map((layout) => layout.name).sort()).toEqual(declared.sort());
  });
});
