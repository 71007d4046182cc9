#!/usr/bin/env bash
# Runs bench/lsm-cost.js in the test VM, where BPF LSM is active: the cost of
# open() and execve() with the agent enforcing 10,000 rules, against no agent.
# Usage (root, after make): bench/lsm-cost-vm.sh [ROUNDS] [OPENS] [EXECS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -Wall -o "$work/lsm_loop" bench/lsm_loop.c
scripts/vm/run.sh --timeout 1800 --add "$work/lsm_loop:/bench/lsm_loop" \
  --add bench/lsm-cost.js:bench/lsm-cost.js -- \
  node bench/lsm-cost.js /bench/lsm_loop "${1:-3}" "${2:-20000}" "${3:-300}"
