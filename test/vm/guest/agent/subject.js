// Test subject of agent-lsm.js and decision-cache.js, started with an
// identity that the registration gives. Reads one JSON request per stdin line
// and writes one JSON reply per stdout line: { ok: true, ... } or
// { ok: false, code }.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const readline = require('node:readline');

function failure(error) {
  return { ok: false, code: error.code ?? 'UNKNOWN', message: error.message };
}

/** Opens request.path with request.flags ('r', 'r+', 'w' and the like) and closes it. */
function open(request) {
  try {
    const fd = fs.openSync(request.path, request.flags);
    fs.closeSync(fd);
    return { ok: true };
  } catch (error) {
    return failure(error);
  }
}

/** Runs request.path with request.args and returns its exit status and stderr. */
function exec(request) {
  const result = spawnSync(request.path, request.args ?? [], {
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
  });
  if (result.error) return failure(result.error);
  return { ok: result.status === 0, status: result.status, signal: result.signal, stderr: result.stderr };
}

/** Connects to request.host:request.port over TCP and closes the socket. */
function connect(request) {
  return new Promise((resolve) => {
    const socket = net.connect(request.port, request.host);
    socket.once('connect', () => {
      socket.destroy();
      resolve({ ok: true });
    });
    socket.once('error', (error) => resolve(failure(error)));
  });
}

const OPERATIONS = { open, exec, connect };

// Replies go out in request order, one at a time, because connect() completes later.
let queue = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const request = JSON.parse(line);
  const operation = OPERATIONS[request.op];
  queue = queue.then(async () => {
    const reply = operation ? await operation(request) : { ok: false, code: 'EINVAL', message: `unknown operation ${request.op}` };
    process.stdout.write(`${JSON.stringify(reply)}\n`);
  });
});
lines.on('close', () => queue.then(() => process.exit(0)));
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);
