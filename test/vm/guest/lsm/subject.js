// Test subject of enforcement.spec.ts. The spec gives this process an identity
// in the identity map, then sends one JSON request per stdin line. Each reply
// is one JSON line on stdout: { ok: true, ... } or { ok: false, code: 'EPERM' }.
// Everything this process needs is loaded before it reports ready, so the only
// files it opens afterwards are the ones a request names.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const readline = require('node:readline');

const servers = [];

function reply(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function failure(error) {
  return { ok: false, code: error.code ?? 'UNKNOWN', message: error.message };
}

/** Opens path with flags (a number, or a string such as 'r' or 'r+') and closes it. */
function open(request) {
  try {
    fs.closeSync(fs.openSync(request.path, request.flags));
    return { ok: true };
  } catch (error) {
    return failure(error);
  }
}

/** Runs path (a busybox copy named `true`) and returns its exit status. */
function exec(request) {
  const result = spawnSync(request.path, request.args ?? [], { stdio: 'ignore' });
  if (result.error) return failure(result.error);
  return { ok: result.status === 0, status: result.status, signal: result.signal };
}

/** Connects over TCP and closes the connection once it is established. */
function connect(request) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: request.host, port: request.port });
    socket.once('connect', () => {
      socket.destroy();
      resolve({ ok: true });
    });
    socket.once('error', (error) => resolve(failure(error)));
  });
}

/** Listens on host:port until this process exits. */
function listen(request) {
  return new Promise((resolve) => {
    const server = net.createServer((socket) => socket.destroy());
    server.once('error', (error) => resolve(failure(error)));
    server.listen({ host: request.host, port: request.port, ipv6Only: false }, () => {
      servers.push(server);
      resolve({ ok: true });
    });
  });
}

const OPERATIONS = { open, exec, connect, listen };

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (line) => {
  const request = JSON.parse(line);
  const operation = OPERATIONS[request.op];
  if (!operation) {
    reply({ ok: false, code: 'EINVAL', message: `unknown operation ${request.op}` });
    return;
  }
  reply(await operation(request));
});
lines.on('close', () => {
  for (const server of servers) server.close();
  process.exit(0);
});
reply({ ready: true, pid: process.pid });
