#!/usr/bin/env bash
# bench/sim: how fast the deterministic simulation runs — seeds per second and simulated migrations per
# second over 500 seeds of the default swarm, and one run at scale (100 nodes, 300 pods, 1000 migrations).
# Prints the figures and writes bench/results/sim.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
mkdir -p bench/results
swarm=$(node dist/simulations/cli.js --seed 1 --runs "${1:-500}" --json | tail -1)
start=$(date +%s.%N)
# A violation exits 1; the figures still count, and the JSON says what was violated.
scale=$(node dist/simulations/cli.js --seed 7 --nodes 100 --pods 300 --migrations 1000 --json | tail -1 || true)
took=$(echo "$(date +%s.%N) - $start" | bc)
echo "swarm: $swarm"
echo "scale (100 nodes, 1000 migrations): $(echo "$scale" | node -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(JSON.stringify({violations:r.violations,outcomes:r.outcomes,virtualMs:r.virtualMs,steps:r.steps}))') in ${took} s"
printf '{"swarm":%s,"scale":{"seconds":%s,"run":%s}}\n' "$swarm" "$took" "$scale" > bench/results/sim.json
echo "wrote bench/results/sim.json"
