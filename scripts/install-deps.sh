#!/usr/bin/env bash
# Installs the Debian packages given as arguments that are not installed yet,
# then the npm packages from the committed lock file. Does nothing when all
# of them are present.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for package in "$@"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done

if ((${#missing[@]})); then
  echo "deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "deps: Debian packages present"
fi

# Debian 12's own nodejs package is 18; Node.js 20 or later comes from NodeSource or nodejs.org.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major < 20)); then
  echo "deps: error: Sigil needs Node.js 20 or later with its headers (found: $(node --version 2>/dev/null || echo none));" \
    "install it, for example from NodeSource's Debian packages, then run make again" >&2
  exit 1
fi

# npm ci rewrites node_modules; skip it while the installed tree matches the lock file.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "deps: installing npm packages from package-lock.json"
  npm ci --no-audit --no-fund
  touch node_modules/.package-lock.json
else
  echo "deps: npm packages present"
fi
