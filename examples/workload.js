#!/usr/bin/env node
// A demo and test workload.
//   workload.js listen <host> <port>   accept TCP connections, print "listening <port>"
//   workload.js client                 read "<host> <port>" lines on stdin, connect to each,
//                                      print "connect <host>:<port> ok" or "... failed <CODE>"
'use strict';
const net = require('node:net');
const readline = require('node:readline');

const [mode, host, port] = process.argv.slice(2);

if (mode === 'listen') {
  const server = net.createServer((socket) => {
    // A client that closes first resets the connection; that is not an error here.
    socket.on('error', () => {});
    socket.end(`hello from pid ${process.pid}\n`);
  });
  server.listen(Number(port), host, () => console.log(`listening ${port}`));
} else if (mode === 'client') {
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const [targetHost, targetPort] = line.trim().split(/\s+/);
    if (!targetHost) return;
    const socket = net.connect(Number(targetPort), targetHost);
    socket.once('connect', () => {
      console.log(`connect ${targetHost}:${targetPort} ok`);
      socket.destroy();
    });
    socket.once('error', (error) => console.log(`connect ${targetHost}:${targetPort} failed ${error.code}`));
  });
} else {
  console.error('usage: workload.js listen <host> <port> | workload.js client');
  process.exit(2);
}
