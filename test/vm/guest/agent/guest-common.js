// Helpers shared by the guest scripts that run the real agent in the test VM
// and report their checks to the host test through checks.json.
'use strict';
const fs = require('node:fs');

/** How long a guest script waits for the agent by default. */
const WAIT_MS = 60_000;

/** Returns the checks of a script by name and the function that records one: whether it passed, and what was seen. */
function createChecks() {
  const checks = {};
  const check = (name, pass, detail) => {
    checks[name] = { pass: Boolean(pass), detail };
  };
  return { checks, check };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls predicate every 100 ms until it returns a truthy value or timeoutMs passes; returns that value or null. */
async function waitFor(predicate, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = predicate();
    if (value) return value;
    await sleep(100);
  }
  return null;
}

/** Returns the JSON objects of a JSON-lines file, such as the agent's event log; [] while it does not exist. */
function readJsonLines(file) {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim().startsWith('{'))
    .map((line) => JSON.parse(line));
}

/**
 * A request channel to a running subject.js: one JSON line per request on
 * its stdin, one JSON line per reply on its stdout, in order.
 */
class SubjectChannel {
  constructor(child) {
    this.child = child;
    this.replies = [];
    this.waiting = [];
    this.stderr = '';
    let buffered = '';
    child.stderr.on('data', (chunk) => (this.stderr += chunk.toString()));
    child.stdout.on('data', (chunk) => {
      buffered += chunk.toString();
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const reply = JSON.parse(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
        const resolve = this.waiting.shift();
        if (resolve) resolve(reply);
        else this.replies.push(reply);
      }
    });
  }

  /** Resolves with the next reply; rejects after WAIT_MS without one. */
  next() {
    const reply = this.replies.shift();
    if (reply) return Promise.resolve(reply);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply from subject.js; stderr: ${this.stderr}`)), WAIT_MS);
      this.waiting.push((value) => {
        clearTimeout(timer);
        resolve(value);
      });
    });
  }

  request(request) {
    this.child.stdin.write(`${JSON.stringify(request)}\n`);
    return this.next();
  }
}

module.exports = { WAIT_MS, SubjectChannel, createChecks, readJsonLines, sleep, waitFor };
