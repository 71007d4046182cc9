#!/usr/bin/env bash
# Usage: scripts/vm/fetch-kernel.sh
#
# Downloads the newest Debian 12 cloud kernel package
# (linux-image-6.1.0-N-cloud-amd64-unsigned) with apt-get download, extracts
# it into $SIGIL_CACHE/vm-kernel/<kernel release>/ (default SIGIL_CACHE:
# ~/.cache/sigil) and prints the path of its vmlinuz. The package is never
# installed on the host. Does nothing but print the path when the newest
# kernel is already there. Set SIGIL_VM_KERNEL_PACKAGE to a package name to
# use that kernel instead of the newest.
#
# The directory contains vmlinuz, config (the kernel's build configuration),
# modules/ (its /lib/modules/<release> tree) and package (name and version).
set -euo pipefail
source "$(dirname "$0")/common.sh"

if (($#)); then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit "$EXIT_HARNESS"
fi

KERNEL_CACHE=$SIGIL_CACHE/vm-kernel
PACKAGE_PATTERN='^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$'

newest_package() {
  apt-cache search --names-only "$PACKAGE_PATTERN" | awk '{ print $1 }' | sort -V | tail -n 1
}

# Prints the newest kernel already extracted, if there is one. It is the
# fallback when apt has no package lists and cannot fetch them.
newest_cached_vmlinuz() {
  local complete
  complete=$(find "$KERNEL_CACHE" -mindepth 2 -maxdepth 2 -name vmlinuz 2>/dev/null | sort -V | tail -n 1)
  [[ -n "$complete" ]] && echo "$complete"
}

require_command apt-get apt
require_command dpkg-deb dpkg

package=${SIGIL_VM_KERNEL_PACKAGE:-}
if [[ -z "$package" ]]; then
  package=$(newest_package)
  if [[ -z "$package" ]]; then
    # apt-cache finds nothing before the first apt-get update on a machine.
    log "no cloud kernel in the apt package lists; running apt-get update"
    apt-get update -qq >&2 || log "apt-get update failed"
    package=$(newest_package)
  fi
  if [[ -z "$package" ]]; then
    if cached=$(newest_cached_vmlinuz); then
      log "apt knows no package matching $PACKAGE_PATTERN; using the cached $cached"
      echo "$cached"
      exit 0
    fi
    die "apt knows no package matching $PACKAGE_PATTERN; check the Debian 12 sources in /etc/apt and run apt-get update"
  fi
fi

release=${package#linux-image-}
release=${release%-unsigned}
target=$KERNEL_CACHE/$release
if [[ -f "$target/vmlinuz" ]]; then
  echo "$target/vmlinuz"
  exit 0
fi

mkdir -p "$KERNEL_CACHE"
work=$(mktemp -d "$KERNEL_CACHE/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "downloading $package"
# As root, apt-get download switches to the _apt user, which cannot write
# into a root-owned directory, so it would warn and stay root anyway.
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$package" >&2) ||
  die "apt-get download $package failed"
deb=$(find "$work" -maxdepth 1 -name '*.deb' | head -n 1)
[[ -n "$deb" ]] || die "apt-get download $package left no .deb in $work"

dpkg-deb -x "$deb" "$work/root"
[[ -f "$work/root/boot/vmlinuz-$release" ]] ||
  die "$deb contains no boot/vmlinuz-$release"

mkdir "$work/kernel"
mv "$work/root/boot/vmlinuz-$release" "$work/kernel/vmlinuz"
mv "$work/root/boot/config-$release" "$work/kernel/config"
mv "$work/root/lib/modules/$release" "$work/kernel/modules"
dpkg-deb -f "$deb" Package Version >"$work/kernel/package"

# A rename is atomic, so a concurrent run sees either no directory or a
# complete one. When another run won the race, its copy is as good as ours.
if ! mv -T "$work/kernel" "$target" 2>/dev/null && [[ ! -f "$target/vmlinuz" ]]; then
  die "moving the extracted kernel to $target failed"
fi
log "extracted $package ($(dpkg-deb -f "$deb" Version)) into $target"
echo "$target/vmlinuz"
