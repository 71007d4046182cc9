#!/usr/bin/env node
// Usage: node scripts/vm/list-node-modules.js PROJECT_ROOT [PACKAGE...]
//
// Prints the installed package directories (paths relative to PROJECT_ROOT,
// one per line) that the project's runtime dependencies and the given extra
// packages (default: vitest) need, following the dependency graph of npm's
// lock file. The VM image copies only these instead of all of node_modules.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

// Resolves a dependency the way Node.js does: the nearest node_modules
// directory at or above the requiring package that contains it.
function resolveDependency(packages, fromKey, name) {
  let base = fromKey;
  for (;;) {
    const candidate = base === '' ? `node_modules/${name}` : `${base}/node_modules/${name}`;
    if (packages[candidate]) return candidate;
    if (base === '') return undefined;
    const parent = base.lastIndexOf('/node_modules/');
    base = parent < 0 ? '' : base.slice(0, parent);
  }
}

// Maps each dependency that must be present at run time to whether it may
// be absent: regular ones may not, optional ones may (npm skips those of
// other platforms), peers may only when marked optional, and those are left
// out.
function runtimeDependencies(entry) {
  const dependencies = new Map();
  for (const name of Object.keys(entry.dependencies ?? {})) dependencies.set(name, false);
  for (const name of Object.keys(entry.optionalDependencies ?? {})) dependencies.set(name, true);
  for (const name of Object.keys(entry.peerDependencies ?? {})) {
    if (!entry.peerDependenciesMeta?.[name]?.optional) dependencies.set(name, false);
  }
  return dependencies;
}

function main() {
  const [root, ...extraPackages] = process.argv.slice(2);
  if (!root) {
    console.error('usage: list-node-modules.js PROJECT_ROOT [PACKAGE...]');
    process.exit(2);
  }

  // npm's hidden lock file lists what is installed, and package-lock.json
  // what should be. They differ after a partial install.
  const hiddenLock = path.join(root, 'node_modules', '.package-lock.json');
  const lockPath = fs.existsSync(hiddenLock) ? hiddenLock : path.join(root, 'package-lock.json');
  const packages = JSON.parse(fs.readFileSync(lockPath, 'utf8')).packages;
  const project = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

  const roots = [
    ...Object.keys(project.dependencies ?? {}),
    ...(extraPackages.length ? extraPackages : ['vitest']),
  ];
  const needed = new Set();
  const pending = [];
  for (const name of roots) {
    const key = resolveDependency(packages, '', name);
    if (!key) throw new Error(`package ${name} is not in ${lockPath}; run npm ci`);
    pending.push(key);
  }

  while (pending.length) {
    const key = pending.pop();
    if (needed.has(key)) continue;
    needed.add(key);
    for (const [name, mayBeAbsent] of runtimeDependencies(packages[key])) {
      const dependency = resolveDependency(packages, key, name);
      if (dependency && fs.existsSync(path.join(root, dependency))) {
        pending.push(dependency);
      } else if (!mayBeAbsent) {
        throw new Error(`${name}, a dependency of ${key}, is not installed; run npm ci`);
      }
    }
  }

  for (const key of [...needed].sort()) {
    if (!fs.existsSync(path.join(root, key)))
      throw new Error(`${key} is in ${lockPath} but not installed; run npm ci`);
    console.log(key);
  }
}

main();
