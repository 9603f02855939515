#!/usr/bin/env bash
# Installs what gatesync needs on a fresh machine: npm dependencies (npm ci, when node_modules is missing
# or older than the lockfile), Debian's nats-server and, with --with-browser (the tests), Debian's chromium (each when
# it is not installed). Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm dependencies (npm ci)..."
  # Some registries (mirrors) lack the optional per-platform packages of a few tools (biome's builds for
  # other systems), so the lockfile cannot list them and `npm ci` refuses it as out of sync. Then install
  # from the same lockfile with `npm install`, which keeps every locked version.
  if ! npm ci --no-audit --no-fund; then
    echo "setup: npm ci refused the lockfile; installing with npm install from the same lockfile"
    npm install --no-audit --no-fund
  fi
fi

if ! command -v nats-server >/dev/null 2>&1; then
  echo "setup: installing nats-server (apt-get install -y nats-server)..."
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server
fi

# Debian's chromium, driven by playwright-core in the browser tests (test/browser/). playwright-core
# downloads no browser of its own; the tests launch /usr/bin/chromium.
# Only the tests need it (`setup.sh --with-browser`, from scripts/test.sh); the demo does not.
if [[ "${1:-}" == "--with-browser" && ! -x /usr/bin/chromium ]]; then
  echo "setup: installing chromium for the browser tests (apt-get install -y chromium)..."
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
fi
