#!/usr/bin/env bash
# The README's demo command (`npm run demo`): set-up, then the whole flow on an embedded nats-server.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"
bash scripts/setup.sh
exec node bin/gatesync.js demo "$@"
