#!/usr/bin/env bash
# Freeze window and client-visible stall over N live migrations of the demo pod (8 connections under load),
# on a fresh local cluster. Prints the table and writes bench/results/migrate.json.
# Usage: bench/migrate/run.sh [N]   (default 10)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec node "$root/dist/cli/podmotion.js" demo --cluster bench --migrations "${1:-10}" --out "$root/bench/results/migrate.json"
