#!/usr/bin/env node
// Writes a registration file and a policy file with 10,000 exec and file
// rules over 1,000 identities, for timing open() and execve() under the real
// agent. Identity n is the processes of uid BASE_UID + n. Identity 1 also has
// Allow rules on DIRECTORY (recursive, for files) and on every program under
// /usr and DIRECTORY, with Audit postures, so its opens and execs are
// decided by rule and none is killed. The other rules name directories
// that this script creates under OUT_DIR/targets, because tracepoint-kill
// skips rules on directories that do not exist.
// Usage: node bench/path-rules.js OUT_DIR DIRECTORY [BASE_UID]
'use strict';
const { mkdirSync, writeFileSync } = require('node:fs');
const path = require('node:path');

const [outDir, directory, baseUidText] = process.argv.slice(2);
if (!outDir || !directory) {
  console.error('usage: node bench/path-rules.js OUT_DIR DIRECTORY [BASE_UID]');
  process.exit(2);
}
const BASE_UID = Number(baseUidText ?? 4300);
const IDENTITIES = 1000;
const TD = 'spiffe://bench.example';

const registration = ['apiVersion: sigil.dev/v1alpha1', 'kind: Registration', 'entries:'];
const policies = [];
for (let n = 1; n <= IDENTITIES; n++) {
  registration.push(`  - spiffeId: ${TD}/w/${n}`, `    selectors: [unix:uid:${BASE_UID + n}]`);
  const rules = [];
  // Ten rules per identity on directories that the measured operations never touch.
  for (let r = 0; r < 10; r++) {
    const kind = r < 5 ? 'file' : 'process';
    const target = path.join(outDir, 'targets', String(n), String(r));
    mkdirSync(target, { recursive: true });
    rules.push({ kind, text: `    - name: r${r}\n      action: Block\n      directories: [${target}]` });
  }
  if (n === 1) {
    rules.push({ kind: 'file', text: `    - name: data\n      action: Allow\n      recursive: true\n      directories: [${directory}]` });
    rules.push({ kind: 'process', text: `    - name: programs\n      action: Allow\n      recursive: true\n      directories: [/usr, ${directory}]` });
  }
  const section = (kind) => rules.filter((rule) => rule.kind === kind).map((rule) => rule.text);
  policies.push(
    [
      'apiVersion: sigil.dev/v1alpha1',
      'kind: IdentityPolicy',
      `metadata:\n  name: w${n}`,
      'spec:',
      `  subject:\n    spiffeId: ${TD}/w/${n}`,
      '  processPosture: Audit',
      '  filePosture: Audit',
      '  file:',
      ...section('file'),
      '  process:',
      ...section('process'),
    ].join('\n'),
  );
}
mkdirSync(outDir, { recursive: true });
writeFileSync(path.join(outDir, 'registration.yaml'), `${registration.join('\n')}\n`);
writeFileSync(path.join(outDir, 'policies.yaml'), `${policies.join('\n---\n')}\n`);
