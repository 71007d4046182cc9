#!/usr/bin/env bash
# Usage: scripts/vm/run.sh [OPTION]... [--] COMMAND [ARG]...
#
# Boots Debian 12's cloud kernel (Linux 6.1) under qemu with TCG and no
# network device, and runs COMMAND with its arguments inside, starting in
# the project root (/sigil in the guest). Its stdout and stderr arrive on
# this script's stdout and stderr while it runs. Exits with the command's
# exit status, 124 when the timeout expires (qemu is killed), and 125 when
# the harness fails: invalid options, a failed build, qemu errors, a kernel
# panic, an image the kernel could not unpack, or no exit status from the
# guest. The message on stderr tells these apart from a command that itself
# exits with 124 or 125.
#
# COMMAND is executed without a shell. Use `sh -c '...'` for shell syntax.
# The guest runs busybox, node and the project tree that build-initramfs.sh
# copies. It sets SIGIL_VM_GUEST=1, and SIGIL_VM_RESULTS to a directory
# whose files --results copies back to the host.
#
#   --timeout SECONDS      kill qemu after SECONDS (default $SIGIL_VM_TIMEOUT or 900)
#   --env NAME=VALUE       set an environment variable for COMMAND (repeatable)
#   --add HOST:GUEST       copy the host file or directory HOST to GUEST in the
#                          guest; a relative GUEST is below /sigil (repeatable)
#   --results DIR          copy the files COMMAND wrote to $SIGIL_VM_RESULTS into DIR
#   --no-build             boot the existing initramfs instead of rebuilding it
#   --initramfs FILE       boot FILE (implies --no-build)
#   --kernel FILE          boot FILE instead of the kernel that fetch-kernel.sh prints
#   --append PARAMETERS    add kernel command-line parameters
#   --memory SIZE          guest memory in qemu's -m syntax (default $SIGIL_VM_MEMORY or 2G)
#   --cpus N               guest CPUs (default $SIGIL_VM_CPUS or 2)
#   --console              copy the guest console (kernel messages, /init) to stderr
#   --log-dir DIR          keep the console log and raw outputs of this run in DIR
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit "$EXIT_HARNESS"
}

timeout=${SIGIL_VM_TIMEOUT:-900}
memory=${SIGIL_VM_MEMORY:-2G}
cpus=${SIGIL_VM_CPUS:-2}
environment=()
additions=()
results_dir=
build=1
initramfs=$VM_BUILD_DIR/initramfs.cpio
kernel=
extra_append=
show_console=0
log_dir=

while (($#)); do
  case $1 in
    --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
    --env) environment+=("${2:?--env needs NAME=VALUE}"); shift 2 ;;
    --add) additions+=("${2:?--add needs HOST:GUEST}"); shift 2 ;;
    --results) results_dir=${2:?--results needs a directory}; shift 2 ;;
    --no-build) build=0; shift ;;
    --initramfs) initramfs=${2:?--initramfs needs a file}; build=0; shift 2 ;;
    --kernel) kernel=${2:?--kernel needs a file}; shift 2 ;;
    --append) extra_append=${2:?--append needs parameters}; shift 2 ;;
    --memory) memory=${2:?--memory needs a size}; shift 2 ;;
    --cpus) cpus=${2:?--cpus needs a number}; shift 2 ;;
    --console) show_console=1; shift ;;
    --log-dir) log_dir=${2:?--log-dir needs a directory}; shift 2 ;;
    -h | --help) usage ;;
    --) shift; break ;;
    -*) log "error: unknown option $1"; usage ;;
    *) break ;;
  esac
done
(($#)) || { log "error: no command given"; usage; }
[[ "$timeout" =~ ^[1-9][0-9]*$ ]] || die "invalid --timeout $timeout: expected a whole number of seconds"
[[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "invalid --cpus $cpus: expected a positive whole number"

require_command qemu-system-x86_64 qemu-system-x86
require_command cpio cpio
require_command tar tar

# --- kernel and image ------------------------------------------------------------

if [[ -z "$kernel" ]]; then
  kernel=$("$VM_SCRIPTS_DIR/fetch-kernel.sh") || die "fetching the kernel failed"
fi
[[ -f "$kernel" ]] || die "kernel $kernel not found"
if ((build)); then
  "$VM_SCRIPTS_DIR/build-initramfs.sh" --output "$initramfs" >/dev/null || die "building the initramfs failed"
fi
[[ -f "$initramfs" ]] || die "initramfs $initramfs not found; run scripts/vm/build-initramfs.sh"

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/sigil-vm.XXXXXX")
qemu_pid=
relay_pids=()

stop_qemu() {
  if [[ -n "$qemu_pid" ]] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -TERM "$qemu_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$qemu_pid" 2>/dev/null || true
  fi
}

# Runs on every exit. Nothing in it may fail, because errexit would skip the rest.
cleanup() {
  stop_qemu
  if ((${#relay_pids[@]})); then
    kill "${relay_pids[@]}" 2>/dev/null || true
  fi
  if [[ -n "$log_dir" ]]; then
    mkdir -p "$log_dir"
    cp "$run_dir"/{console.log,stdout.log,stderr.log,qemu.log,result.tar} "$log_dir/" 2>/dev/null || true
  fi
  rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'log "interrupted; stopping qemu"; exit "$EXIT_HARNESS"' INT TERM HUP

# --- per-run layer: the command, its environment and --add files ------------------

# Quotes $1 for a POSIX shell.
shell_quote() {
  printf "'%s'" "${1//\'/\'\\\'\'}"
}

stage=$run_dir/stage
mkdir -p "$stage/sigil-vm"
{
  printf 'exec'
  for argument in "$@"; do
    printf ' %s' "$(shell_quote "$argument")"
  done
  printf '\n'
} >"$stage/sigil-vm/command"

: >"$stage/sigil-vm/env"
for assignment in "${environment[@]}"; do
  name=${assignment%%=*}
  [[ "$assignment" == *=* && "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] ||
    die "invalid --env $assignment: expected NAME=VALUE"
  printf 'export %s=%s\n' "$name" "$(shell_quote "${assignment#*=}")" >>"$stage/sigil-vm/env"
done

for addition in "${additions[@]}"; do
  host_path=${addition%%:*}
  guest_path=${addition#*:}
  [[ "$addition" == *:* && -n "$host_path" && -n "$guest_path" ]] || die "invalid --add $addition: expected HOST:GUEST"
  [[ -e "$host_path" ]] || die "--add $addition: $host_path not found"
  [[ "$guest_path" == /* ]] || guest_path=$GUEST_PROJECT_ROOT/$guest_path
  mkdir -p "$stage$(dirname "$guest_path")"
  cp -a "$host_path" "$stage$guest_path"
done

# The kernel unpacks concatenated cpio archives in order, so these files are
# added to (or replace) those of the image. It takes an uncompressed archive
# only at an offset that is a multiple of 4, and skips zero bytes before it.
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$run_dir/run.cpio"
padding=$(((4 - $(stat -c %s "$initramfs") % 4) % 4))
{
  cat "$initramfs"
  head -c "$padding" /dev/zero
  cat "$run_dir/run.cpio"
} >"$run_dir/initrd"

# --- boot --------------------------------------------------------------------------

append="console=ttyS0 lsm=landlock,lockdown,yama,apparmor,bpf panic=-1 quiet${extra_append:+ $extra_append}"
for file in console.log stdout.log stderr.log result.tar qemu.log; do
  : >"$run_dir/$file"
done

# The max CPU model offers RDRAND, so the kernel's random pool is ready at
# once. With qemu's default model, the first node of a boot blocks about 1 s
# on getrandom (measured with qemu 7.2 on a 2-core host).
started=$SECONDS
qemu-system-x86_64 \
  -accel tcg -cpu max -m "$memory" -smp "$cpus" \
  -nodefaults -display none -no-reboot -nic none \
  -kernel "$kernel" -initrd "$run_dir/initrd" -append "$append" \
  -serial "file:$run_dir/console.log" \
  -serial "file:$run_dir/stdout.log" \
  -serial "file:$run_dir/stderr.log" \
  -serial "file:$run_dir/result.tar" \
  </dev/null >"$run_dir/qemu.log" 2>&1 &
qemu_pid=$!

# tail --pid prints what is left in the file after qemu exits, then ends.
tail -c +1 -s 0.2 -f --pid="$qemu_pid" "$run_dir/stdout.log" &
relay_pids+=($!)
tail -c +1 -s 0.2 -f --pid="$qemu_pid" "$run_dir/stderr.log" >&2 &
relay_pids+=($!)
if ((show_console)); then
  tail -c +1 -s 0.2 -f --pid="$qemu_pid" "$run_dir/console.log" >&2 &
  relay_pids+=($!)
fi

timed_out=0
while kill -0 "$qemu_pid" 2>/dev/null; do
  if ((SECONDS - started >= timeout)); then
    timed_out=1
    stop_qemu
    break
  fi
  sleep 0.2
done
qemu_status=0
wait "$qemu_pid" || qemu_status=$?
qemu_pid=
wait "${relay_pids[@]}" 2>/dev/null || true
relay_pids=()

# --- result ------------------------------------------------------------------------

print_console_tail() {
  echo "--- last 30 lines of the guest console ---" >&2
  tail -n 30 "$run_dir/console.log" | tr -d '\r' >&2
  echo "---" >&2
}

if ((timed_out)); then
  log "error: timed out after $timeout s; qemu was killed (raise it with --timeout)"
  print_console_tail
  exit "$EXIT_TIMEOUT"
fi

# The kernel boots on when it cannot unpack part of the image, and the
# command then runs on an incomplete tree.
unpack_error=$(grep -a -m 1 'Initramfs unpacking failed' "$run_dir/console.log" | tr -d '\r' || true)
if [[ -n "$unpack_error" ]]; then
  log "error: the guest kernel could not unpack the image: $unpack_error"
  print_console_tail
  exit "$EXIT_HARNESS"
fi

result=$run_dir/result
mkdir -p "$result"
status=
if tar -xf "$run_dir/result.tar" -C "$result" 2>/dev/null && [[ -f "$result/exit-status" ]]; then
  status=$(cat "$result/exit-status")
fi

if ! [[ "$status" =~ ^[0-9]+$ ]]; then
  panic=$(grep -a -m 1 'Kernel panic' "$run_dir/console.log" | tr -d '\r' || true)
  if [[ -n "$panic" ]]; then
    log "error: the guest kernel panicked: $panic"
  elif ((qemu_status != 0)); then
    log "error: qemu exited with status $qemu_status: $(tr '\n' ' ' <"$run_dir/qemu.log")"
  else
    log "error: the guest stopped without sending the command's exit status"
  fi
  print_console_tail
  exit "$EXIT_HARNESS"
fi

# A kernel oops or warning during the command is worth knowing even when it passed.
if grep -a -q -E 'BUG:|Oops|WARNING:|Kernel panic' "$run_dir/console.log"; then
  log "warning: the guest kernel logged errors:"
  grep -a -E 'BUG:|Oops|WARNING:|Kernel panic' "$run_dir/console.log" | tr -d '\r' | head -n 20 >&2
fi

if [[ -n "$results_dir" ]]; then
  mkdir -p "$results_dir"
  cp -a "$result/results/." "$results_dir/"
fi
exit "$status"
