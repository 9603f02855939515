#!/usr/bin/env bash
# The one test command (`npm test`), used by the README and by CI: set-up, type-check, lint, then every
# test file under test/ with Node's test runner through tsx. Extra arguments are passed to the runner.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"
bash scripts/setup.sh --with-browser

echo "== typecheck (tsc --noEmit)"
npx tsc --noEmit
echo "== lint and format (biome ci)"
npx biome ci --colors=off --reporter=summary .
echo "== tests"
mapfile -t files < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
# `npm test -- test/a.test.ts ...` runs just those files; other arguments go to node's test runner.
args=()
named=()
for a in "$@"; do
  if [[ "$a" == *.test.ts ]]; then named+=("$a"); else args+=("$a"); fi
done
if ((${#named[@]} > 0)); then files=("${named[@]}"); fi
# --test-force-exit: once a file's last test (and its clean-up) has finished, its process ends. CI once lost
# a fully passing file to the 240 s file timeout because something still held a handle after the last
# clean-up; a test must fail on what it asserts, not on a library's lingering socket.
exec node --import tsx --test --test-concurrency=2 --test-timeout=240000 --test-force-exit "${args[@]}" "${files[@]}"
