#!/bin/sh
# /init (PID 1) of the test VM, run by busybox sh. Mounts the kernel file
# systems, runs the command that run.sh put into /sigil-vm/, sends its output
# and exit status to the host, and powers off.
#
# Serial ports, each connected by run.sh to a file on the host:
#   ttyS0  kernel console and the messages of this script
#   ttyS1  the command's stdout
#   ttyS2  the command's stderr
#   ttyS3  a tar archive of /sigil-vm/result: exit-status, and results/
#          with whatever the command wrote to $SIGIL_VM_RESULTS
# The command's stdout and stderr are pipes, not terminals, so programs
# print no terminal control sequences.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

say() {
  echo "sigil-vm: $*"
}

mount_fs() {
  mkdir -p "$3"
  mount -t "$1" "$2" "$3" || say "warning: mounting $1 on $3 failed"
}

mount_fs proc proc /proc
mount_fs sysfs sysfs /sys
mount_fs devpts devpts /dev/pts
mount_fs tmpfs tmpfs /dev/shm
mount_fs tmpfs tmpfs /run
mount_fs securityfs securityfs /sys/kernel/security
mount_fs tracefs tracefs /sys/kernel/tracing
mount_fs debugfs debugfs /sys/kernel/debug
mount_fs bpf bpf /sys/fs/bpf
mount_fs cgroup2 cgroup2 /sys/fs/cgroup
chmod 1777 /tmp
ip link set lo up || say "warning: bringing up lo failed"
hostname sigil-vm

result=/sigil-vm/result
mkdir -p "$result/results"

for port in 1 2 3; do
  stty -F /dev/ttyS$port raw -echo || say "warning: stty on ttyS$port failed"
done

# Relays through FIFOs keep a tty out of the command's stdout and stderr.
mkfifo /run/stdout.fifo /run/stderr.fifo
cat /run/stdout.fifo >/dev/ttyS1 &
stdout_relay=$!
cat /run/stderr.fifo >/dev/ttyS2 &
stderr_relay=$!

(
  export HOME=/root SIGIL_VM_GUEST=1 SIGIL_VM_RESULTS="$result/results"
  . /sigil-vm/env
  cd /sigil && exec sh /sigil-vm/command
) </dev/null >/run/stdout.fifo 2>/run/stderr.fifo
status=$?
say "command exited with status $status"

# A background process of the command that keeps a FIFO open also keeps its
# relay running. After 5 s the relays are stopped so the VM can finish.
waited=0
while kill -0 "$stdout_relay" 2>/dev/null || kill -0 "$stderr_relay" 2>/dev/null; do
  if [ "$waited" -ge 50 ]; then
    say "warning: stopping output relays that a leftover process kept open"
    kill "$stdout_relay" "$stderr_relay" 2>/dev/null
    break
  fi
  sleep 0.1
  waited=$((waited + 1))
done

echo "$status" >"$result/exit-status"
# Closing the tty waits until the UART has sent every byte, so the archive
# is complete on the host when the VM powers off.
tar -cf /dev/ttyS3 -C "$result" . || say "error: sending the result archive failed"
sync
poweroff -f
# poweroff -f returns only on failure. PID 1 must not exit, or the kernel panics.
say "error: poweroff failed; halting through sysrq"
echo o >/proc/sysrq-trigger
sleep 3600
