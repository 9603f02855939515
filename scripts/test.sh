#!/usr/bin/env bash
# The one test command (`npm test`), used by the README and by CI: set-up, type-check, lint, then every
# test file under test/ with Node's test runner through tsx. Extra arguments are passed to the runner.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"
bash scripts/setup.sh

echo "== typecheck (tsc --noEmit)"
npx tsc --noEmit
echo "== lint and format (biome ci)"
npx biome ci --colors=off --reporter=summary .
echo "== tests"
mapfile -t files < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
exec node --import tsx --test --test-concurrency=2 --test-timeout=240000 "$@" "${files[@]}"
