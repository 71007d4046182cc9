// Subject process of differential.spec.ts. The spec gives this process an
// identity in the identity map, then sends one JSON array of operations per
// stdin line. The reply is one JSON line with one result per operation:
// { code: null } on success, or { code: 'EPERM' } and the like on failure.
// Everything this process needs is loaded before it reports ready, so the
// only files it opens afterwards are the ones an operation names.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const readline = require('node:readline');

/** Opens path for reading, or for reading and writing, and closes it. */
function open(operation) {
  try {
    fs.closeSync(fs.openSync(operation.path, operation.write ? 'r+' : 'r'));
    return { code: null };
  } catch (error) {
    return { code: error.code ?? 'UNKNOWN' };
  }
}

/**
 * Runs path (a busybox copy named `true`). The child inherits this process's
 * stdio, because a child that opens /dev/null for 'ignore' would have that
 * open decided by the file rules too.
 */
function exec(operation) {
  const result = spawnSync(operation.path, [], { stdio: 'inherit' });
  if (result.error) return { code: result.error.code ?? 'UNKNOWN' };
  return { code: null, status: result.status };
}

const OPERATIONS = { open, exec };

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const results = JSON.parse(line).map((operation) => {
    const run = OPERATIONS[operation.op];
    return run ? run(operation) : { code: 'EINVAL' };
  });
  process.stdout.write(`${JSON.stringify(results)}\n`);
});
lines.on('close', () => process.exit(0));
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);
