#!/usr/bin/env bash
# Builds spire-server and spire-agent at SPIRE_VERSION from the Go module proxy into
# $SIGIL_CACHE/spire-$SPIRE_VERSION/bin (SIGIL_CACHE defaults to ~/.cache/sigil).
# Does nothing when both binaries exist and report that version.
#
# The build runs in a scratch Go module outside the repository, so the project gets no go.mod.
# CGO stays on for spire-server because its SQLite datastore (mattn/go-sqlite3) is cgo-only:
# built without cgo, `database_type = "sqlite3"` fails at run time. Needs go >= 1.25.3 and gcc.
set -euo pipefail

SPIRE_VERSION="${SPIRE_VERSION:-v1.13.3}"
SPIRE_MODULE="github.com/spiffe/spire"
CACHE_DIR="${SIGIL_CACHE:-$HOME/.cache/sigil}"
BUILD_DIR="$CACHE_DIR/spire-build"
BIN_DIR="$CACHE_DIR/spire-$SPIRE_VERSION/bin"
BINARIES=(spire-server spire-agent)

# Prints the version that a built binary reports, or nothing when it is missing or fails.
# SPIRE's CLI prints its version to stderr for `--version`.
binary_version() {
  local binary="$1"
  [[ -x "$binary" ]] || return 0
  "$binary" --version 2>&1 | head -n 1 || true
}

# SPIRE prints the version without the leading "v", optionally followed by "-<suffix>".
expected_version="${SPIRE_VERSION#v}"

up_to_date=true
for name in "${BINARIES[@]}"; do
  reported="$(binary_version "$BIN_DIR/$name")"
  if [[ "$reported" != "$expected_version" ]]; then
    up_to_date=false
  fi
done
if $up_to_date; then
  echo "spire: $BIN_DIR has spire-server and spire-agent $expected_version; nothing to do"
  exit 0
fi

# The machine images install Go under /usr/local/go; a non-login shell may not have it on PATH.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
for tool in go gcc; do
  if ! command -v "$tool" >/dev/null; then
    echo "spire: error: '$tool' is not on PATH; building SPIRE $SPIRE_VERSION needs go and gcc" >&2
    exit 1
  fi
done

echo "spire: building spire-server and spire-agent $SPIRE_VERSION with $(go version | cut -d' ' -f3)"
echo "spire: scratch module $BUILD_DIR, output $BIN_DIR"
start_seconds=$SECONDS

mkdir -p "$BUILD_DIR" "$BIN_DIR"
cd "$BUILD_DIR"
if [[ ! -f go.mod ]]; then
  go mod init sigil.local/spire-build
fi

for name in "${BINARIES[@]}"; do
  echo "spire: go get -tool $SPIRE_MODULE/cmd/$name@$SPIRE_VERSION"
  go get -tool "$SPIRE_MODULE/cmd/$name@$SPIRE_VERSION"
done

# SPIRE's pkg/common/version reports "<base>-dev-<githash>" unless gittag is set at link time,
# and then reports gittag as it is. Release builds set it to the version without the "v".
ldflags="-s -w -X $SPIRE_MODULE/pkg/common/version.gittag=$expected_version"

for name in "${BINARIES[@]}"; do
  echo "spire: go build $name (CGO_ENABLED=1)"
  CGO_ENABLED=1 go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/$name.tmp" "$SPIRE_MODULE/cmd/$name"
  mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
done

for name in "${BINARIES[@]}"; do
  reported="$(binary_version "$BIN_DIR/$name")"
  if [[ "$reported" != "$expected_version" ]]; then
    echo "spire: error: $BIN_DIR/$name reports version '$reported', expected '$expected_version'" >&2
    exit 1
  fi
done

echo "spire: built spire-server and spire-agent $expected_version in $((SECONDS - start_seconds)) s"
