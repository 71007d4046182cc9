# Shared settings and helpers of the VM test harness. The other scripts in
# scripts/vm/ source this file, which does nothing on its own.

VM_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_ROOT=$(cd "$VM_SCRIPTS_DIR/../.." && pwd)

# Downloads shared by every checkout (the kernel package).
SIGIL_CACHE=${SIGIL_CACHE:-$HOME/.cache/sigil}
# Build outputs of this checkout; /.cache/ is in the project's .gitignore.
VM_BUILD_DIR=${SIGIL_VM_BUILD_DIR:-$PROJECT_ROOT/.cache/vm}

# Project root inside the guest; the guest command starts there.
GUEST_PROJECT_ROOT=/sigil

# Exit status of run.sh when the harness itself fails, as opposed to the
# guest command (the same codes as coreutils' timeout).
EXIT_TIMEOUT=124
EXIT_HARNESS=125

log() {
  echo "$(basename "$0"): $*" >&2
}

die() {
  log "error: $*"
  exit "$EXIT_HARNESS"
}

# Fails with the package to install when a command is missing.
require_command() {
  local command=$1 package=$2
  command -v "$command" >/dev/null ||
    die "$command not found; install the Debian package $package (make deps installs it)"
}
