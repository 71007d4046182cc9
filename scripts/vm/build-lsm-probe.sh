#!/usr/bin/env bash
# Usage: scripts/vm/build-lsm-probe.sh
#
# Builds the harness self-check's BPF LSM program (bpf/lsm-probe/) into
# .cache/vm/lsm-probe/ and prints that directory, which then contains
# lsm-probe: a statically linked loader with the BPF object embedded, so it
# runs in the VM without any library. Does nothing when lsm-probe is newer
# than its sources. The BPF object is compiled against the host kernel's BTF
# and relocated (CO-RE) against the guest kernel's when it is loaded.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if (($#)); then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit "$EXIT_HARNESS"
fi

CLANG=${CLANG:-clang}
BPFTOOL=${BPFTOOL:-bpftool}
CC=${CC:-cc}

SOURCE_DIR=$PROJECT_ROOT/bpf/lsm-probe
OUT=$VM_BUILD_DIR/lsm-probe
LOADER=$OUT/lsm-probe

require_command "$CLANG" clang
require_command "$BPFTOOL" bpftool
require_command "$CC" gcc
[[ -f /usr/lib/x86_64-linux-gnu/libbpf.a ]] || die "libbpf.a not found; install the Debian package libbpf-dev (make deps installs it)"

sources=("$SOURCE_DIR/lsm_probe.bpf.c" "$SOURCE_DIR/lsm_probe_loader.c" "$0")
up_to_date=1
[[ -x "$LOADER" ]] || up_to_date=0
for source in "${sources[@]}"; do
  [[ "$source" -nt "$LOADER" ]] && up_to_date=0
done
if ((up_to_date)); then
  echo "$OUT"
  exit 0
fi

mkdir -p "$OUT"
if [[ ! -s "$OUT/vmlinux.h" ]]; then
  [[ -r /sys/kernel/btf/vmlinux ]] || die "/sys/kernel/btf/vmlinux is missing: the host kernel has no BTF"
  "$BPFTOOL" btf dump file /sys/kernel/btf/vmlinux format c >"$OUT/vmlinux.h.tmp"
  mv "$OUT/vmlinux.h.tmp" "$OUT/vmlinux.h"
fi

"$CLANG" -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_x86 -I"$OUT" \
  -c "$SOURCE_DIR/lsm_probe.bpf.c" -o "$OUT/lsm_probe.bpf.o"
"$BPFTOOL" gen skeleton "$OUT/lsm_probe.bpf.o" name lsm_probe >"$OUT/lsm_probe.skel.h"
"$CC" -O2 -Wall -Werror -static -I"$OUT" "$SOURCE_DIR/lsm_probe_loader.c" \
  -lbpf -lelf -lz -o "$LOADER.tmp"
mv "$LOADER.tmp" "$LOADER"
log "built $LOADER"
echo "$OUT"
