#!/usr/bin/env bash
# Runs every test: unit tests first (fast, pure), then integration tests serially (they share the
# machine's namespaces and processes). Leftovers of an interrupted earlier run are removed first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
node dist/cli/podmotion.js cluster down --all --prefix it >/dev/null
mkdir -p test-artifacts
status=0
npx ava 'dist/test/unit/**/*.test.js' || status=$?
if [ "$status" -eq 0 ]; then
  npx ava --serial --concurrency 1 'dist/test/integration/**/*.test.js' || status=$?
fi
node dist/cli/podmotion.js cluster down --all --prefix it >/dev/null
exit "$status"
