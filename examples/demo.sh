#!/usr/bin/env bash
# Runs the agent on the bundled examples and shows a connection blocked by
# SPIFFE ID. Three workloads in their own cgroups get their identities from
# registration.yaml. The web workload may reach api on port 18080, and the
# cgroup connect4 program denies its connect to db on port 15432 with EPERM.
# Needs root. Cleans up its cgroups and processes on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
  echo "demo: run as root: the agent loads BPF programs" >&2
  exit 1
fi

cgroup2=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
if [[ -z "$cgroup2" ]]; then
  echo "demo: no cgroup2 filesystem is mounted" >&2
  exit 1
fi
demo_cgroup="$cgroup2/sigil-demo"
work=$(mktemp -d /tmp/sigil-demo.XXXXXX)
socket="$work/sigil.sock"
events="$work/events.jsonl"
# The agent pins its programs so they outlive it; the demo removes them when it ends.
pins=/sys/fs/bpf/sigil-demo
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  node bin/sigil uninstall --bpffs-dir "$pins" --state-dir "$work/state" >/dev/null || true
  for name in web api db; do rmdir "$demo_cgroup/$name" 2>/dev/null || true; done
  rmdir "$demo_cgroup" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$demo_cgroup"/{web,api,db}

# Starts a command inside a demo cgroup: the shell moves itself, then execs.
in_cgroup() {
  local name=$1
  shift
  exec sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$demo_cgroup/$name" "$@"
}

wait_for() {
  local what=$1 test=$2
  for _ in $(seq 1 100); do
    if eval "$test"; then return 0; fi
    sleep 0.1
  done
  echo "demo: timed out waiting for $what" >&2
  exit 1
}

echo "== starting the agent (operational log: $work/agent.log)"
node bin/sigil run --registration examples/registration.yaml --policy examples/policies \
  --socket "$socket" --events-log "$events" --bpffs-dir "$pins" --state-dir "$work/state" \
  2>"$work/agent.log" &
pids+=($!)
wait_for "the agent's audit socket" '[[ -S "$socket" ]]'
grep -o '"msg":"enforcer[^"]*"' "$work/agent.log" | sed 's/"msg":/   /'

echo "== starting api (port 18080) and db (port 15432) listeners, and the web client"
in_cgroup api node examples/workload.js listen 127.0.0.1 18080 >"$work/api.out" &
api=$!
pids+=($api)
in_cgroup db node examples/workload.js listen 127.0.0.1 15432 >"$work/db.out" &
db=$!
pids+=($db)
mkfifo "$work/web.in"
in_cgroup web node examples/workload.js client <"$work/web.in" >"$work/web.out" &
web=$!
pids+=($web)
exec 3>"$work/web.in"

# Prints "pid P is SPIFFE_ID" once for each of the given pids, from its latest exec event that
# carries a SPIFFE ID. A workload's shell and the program it executes share a pid, so both of
# their exec events can carry the identity.
attested() {
  node -e '
const pids = new Set(process.argv.slice(2).map(Number));
const fs = require("fs");
const text = fs.existsSync(process.argv[1]) ? fs.readFileSync(process.argv[1], "utf8") : "";
const identities = new Map();
for (const line of text.split("\n")) {
  let event;
  try {
    event = JSON.parse(line);
  } catch {
    continue; // the last line may be half written
  }
  if (event.type !== "exec" || !event.subject?.spiffeId || !pids.has(event.process?.pid)) continue;
  identities.set(event.process.pid, event.subject.spiffeId);
}
for (const [pid, spiffeId] of identities) console.log(`   pid ${pid} is ${spiffeId}`);
' "$events" "$@"
}

# Each workload has its identity once the agent has attested its exec.
for pid in $api $db $web; do
  wait_for "the identity of pid $pid" "attested $pid | grep -q ."
done
wait_for "the listeners" 'grep -q listening "$work/api.out" && grep -q listening "$work/db.out"'
attested "$api" "$db" "$web"

echo "== web connects to api:18080, then to db:15432"
echo "127.0.0.1 18080" >&3
wait_for "the first connect" '[[ $(wc -l <"$work/web.out") -ge 1 ]]'
echo "127.0.0.1 15432" >&3
wait_for "the second connect" '[[ $(wc -l <"$work/web.out") -ge 2 ]]'
sed 's/^/   web: /' "$work/web.out"

echo "== connect events from the audit stream"
wait_for "the connect events" '[[ $(grep -c "\"type\":\"connect\"" "$events") -ge 2 ]]'
node -e '
const { formatEventRow } = require("./dist/events/event-table.js");
for (const line of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
  if (!line) continue;
  const event = JSON.parse(line);
  if (event.type === "connect") console.log("   " + formatEventRow(event));
}' "$events"

if grep -q "127.0.0.1:15432 failed EPERM" "$work/web.out" && grep -q "127.0.0.1:18080 ok" "$work/web.out"; then
  echo "== done: web reached api, and its connect to db was blocked by SPIFFE ID"
else
  echo "demo: unexpected result; see $work/agent.log" >&2
  cat "$work/agent.log" >&2
  exit 1
fi
