#!/usr/bin/env bash
# Usage: scripts/vm/build-initramfs.sh [--output FILE] [--binary PATH]... [--node-module NAME]...
#
# Builds the initramfs of the test VM from the built project (run `make`
# first) and prints its path (default: .cache/vm/initramfs.cpio). It is two
# concatenated gzip-compressed cpio archives, which the kernel unpacks one
# after the other:
#   base     busybox (static), /init (scripts/vm/init.sh), the host's node,
#            and the shared libraries of every ELF file in the image. It is
#            rebuilt only when one of those files changes.
#   project  the project tree under /sigil: package.json, tsconfig.json,
#            vitest.config.ts, dist/, build/Release/*.node, bpf/.output/*.o,
#            src/, test/, bin/, examples/, proto/, and the packages of
#            node_modules that the runtime dependencies and vitest need.
#            It is rebuilt on every call.
#
#   --output FILE        write the image to FILE
#   --binary PATH        also copy the host executable PATH, with its shared
#                        libraries, to the same path in the image (repeatable)
#   --node-module NAME   also copy the npm package NAME and its dependencies
#                        (repeatable; vitest is always copied)
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit "$EXIT_HARNESS"
}

output=$VM_BUILD_DIR/initramfs.cpio
extra_binaries=()
extra_node_modules=(vitest)
while (($#)); do
  case $1 in
    --output) output=${2:?--output needs a file}; shift 2 ;;
    --binary) extra_binaries+=("${2:?--binary needs a path}"); shift 2 ;;
    --node-module) extra_node_modules+=("${2:?--node-module needs a package name}"); shift 2 ;;
    -h | --help) usage ;;
    *) log "error: unknown argument $1"; usage ;;
  esac
done

require_command cpio cpio
require_command gzip gzip
require_command ldd libc-bin
require_command strip binutils
require_command node nodejs

BUSYBOX=/bin/busybox
NODE=$(readlink -f "$(command -v node)")
[[ -x "$BUSYBOX" ]] || die "$BUSYBOX not found; install the Debian package busybox-static (make deps installs it)"
ldd "$BUSYBOX" >/dev/null 2>&1 &&
  die "$BUSYBOX is linked dynamically; install the Debian package busybox-static instead of busybox"

cd "$PROJECT_ROOT"
[[ -d dist ]] || die "dist/ is missing; run make (or make ts) first"
compgen -G 'build/Release/*.node' >/dev/null || die "build/Release/*.node is missing; run make (or make native) first"
compgen -G 'bpf/.output/*.o' >/dev/null || die "bpf/.output/*.o is missing; run make (or make bpf) first"
[[ -d node_modules ]] || die "node_modules/ is missing; run npm ci (make deps) first"
for path in "${extra_binaries[@]}"; do
  [[ -f "$path" && -x "$path" ]] || die "--binary $path: not an executable file"
done

mkdir -p "$VM_BUILD_DIR" "$(dirname "$output")"
work=$(mktemp -d "$VM_BUILD_DIR/.initramfs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Packs the directory $1 into the newc cpio archive $2, with every file
# owned by root, compressed with gzip at level $3. Sorted names make the
# archive reproducible.
pack() {
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip "-$3" >"$2"
}

is_elf() {
  [[ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" == '177ELF' ]]
}

# Prints the shared libraries, with the dynamic loader, that the ELF file $1
# loads; nothing for a static executable.
shared_libraries() {
  local listing
  listing=$(ldd "$1" 2>&1) || return 0
  if grep -q 'not found' <<<"$listing"; then
    die "$1 needs a shared library that is missing on the host: $(grep 'not found' <<<"$listing" | tr -s ' \t' ' ')"
  fi
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$listing"
}

# --- project layer -----------------------------------------------------------

project_stage=$work/project
guest_root=$project_stage${GUEST_PROJECT_ROOT}
mkdir -p "$guest_root/build/Release" "$guest_root/bpf/.output"

for path in package.json tsconfig.json vitest.config.ts dist src test bin examples proto; do
  [[ -e "$path" ]] || die "$path is missing in $PROJECT_ROOT"
  cp -a "$path" "$guest_root/"
done
cp -a build/Release/*.node "$guest_root/build/Release/"
cp -a bpf/.output/*.o "$guest_root/bpf/.output/"

modules=$(node "$VM_SCRIPTS_DIR/list-node-modules.js" "$PROJECT_ROOT" "${extra_node_modules[@]}") ||
  die "listing the npm packages that the image needs failed"
while IFS= read -r module; do
  mkdir -p "$guest_root/$(dirname "$module")"
  cp -a "$module" "$guest_root/$module"
done <<<"$modules"

# --- base layer ----------------------------------------------------------------

# Every ELF file of the image (node, native addons, esbuild, --binary) brings
# its shared libraries into the base layer.
elf_files=("$NODE" "${extra_binaries[@]}")
while IFS= read -r -d '' file; do
  is_elf "$file" && elf_files+=("$file")
done < <(find "$guest_root" -type f \( -name '*.node' -o -perm -u+x \) -print0)

libraries=$(for file in "${elf_files[@]}"; do shared_libraries "$file"; done | LC_ALL=C sort -u)

# The base layer depends on these files and on the scripts that build it.
base_manifest=$(
  cat "$0" "$VM_SCRIPTS_DIR/init.sh"
  for file in "$BUSYBOX" "$NODE" "${extra_binaries[@]}" $libraries; do
    stat -L -c '%n %s %Y' "$file"
  done
)
base_key=$(sha256sum <<<"$base_manifest" | cut -c 1-64)
base_archive=$VM_BUILD_DIR/base.cpio.gz

if [[ -f "$base_archive" && "$(cat "$VM_BUILD_DIR/base.key" 2>/dev/null)" == "$base_key" ]]; then
  log "base layer is up to date"
else
  log "building the base layer"
  base_stage=$work/base
  mkdir -p "$base_stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,sigil-vm,lib64}
  cp "$BUSYBOX" "$base_stage/bin/busybox"
  while IFS= read -r applet; do
    [[ -e "$base_stage/$applet" ]] || ln -s /bin/busybox "$base_stage/$applet"
  done < <("$BUSYBOX" --list-full)

  install -m 0755 "$VM_SCRIPTS_DIR/init.sh" "$base_stage/init"
  # The kernel opens /dev/console for /init before devtmpfs is mounted.
  mknod -m 0600 "$base_stage/dev/console" c 5 1 2>/dev/null ||
    log "warning: cannot create dev/console (not root?); /init starts without a console until it mounts /dev"

  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
    >"$base_stage/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$base_stage/etc/group"
  printf '%s\n' '127.0.0.1 localhost' '::1 localhost' >"$base_stage/etc/hosts"

  # Debug information makes up about 12 MB of Debian's node binary.
  strip -o "$base_stage/usr/bin/node" "$NODE"
  for path in "${extra_binaries[@]}"; do
    mkdir -p "$base_stage/$(dirname "$path")"
    cp -L "$path" "$base_stage/$path"
  done
  for library in $libraries; do
    mkdir -p "$base_stage/$(dirname "$library")"
    cp -L "$library" "$base_stage/$library"
  done

  pack "$base_stage" "$work/base.cpio.gz" 6
  mv "$work/base.cpio.gz" "$base_archive"
  echo "$base_key" >"$VM_BUILD_DIR/base.key"
fi

# Level 1 packs the project in 1 s instead of 4 s and makes it 15 % larger.
pack "$project_stage" "$work/project.cpio.gz" 1
cat "$base_archive" "$work/project.cpio.gz" >"$work/initramfs.cpio"
mv "$work/initramfs.cpio" "$output"
log "wrote $output ($(du -h "$output" | cut -f 1): base $(du -h "$base_archive" | cut -f 1), project $(du -h "$work/project.cpio.gz" | cut -f 1))"
echo "$output"
