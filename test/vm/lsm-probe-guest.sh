#!/bin/sh
# Runs inside the test VM for test/vm/lsm-probe.test.ts, with the loader at
# /opt/lsm-probe/lsm-probe. Loads two instances of the probe, each denying
# one file, and prints one KEY=VALUE line per observation for the host test
# to check. It judges nothing itself. The loader's own messages go to stderr.
probe=/opt/lsm-probe/lsm-probe
dir=/tmp/lsm-probe
mkdir -p "$dir"
echo 'first denied file' >"$dir/first.txt"
echo 'second denied file' >"$dir/second.txt"
echo 'allowed file' >"$dir/allowed.txt"

fact() {
  printf '%s=%s\n' "$1" "$2"
}

# Prints the exit status of `cat FILE` as NAME_status and its stdout and
# stderr, joined into one line, as NAME_output.
cat_fact() {
  output=$(cat "$2" 2>&1)
  fact "$1_status" "$?"
  fact "$1_output" "$(echo "$output" | tr '\n' ' ')"
}

fact kernel "$(uname -r)"
fact lsm "$(cat /sys/kernel/security/lsm)"
cat_fact before_probe "$dir/first.txt"

"$probe" "$dir/first.txt" /sys/fs/bpf/lsm_probe_first >&2
fact first_probe_status "$?"
cat_fact first_denied "$dir/first.txt"
cat_fact allowed "$dir/allowed.txt"
cat_fact second_before_its_probe "$dir/second.txt"

"$probe" "$dir/second.txt" /sys/fs/bpf/lsm_probe_second >&2
fact second_probe_status "$?"
cat_fact first_with_both "$dir/first.txt"
cat_fact second_with_both "$dir/second.txt"
cat_fact allowed_with_both "$dir/allowed.txt"

rm -f /sys/fs/bpf/lsm_probe_first /sys/fs/bpf/lsm_probe_second
cat_fact first_after_unpin "$dir/first.txt"
cat_fact second_after_unpin "$dir/second.txt"
