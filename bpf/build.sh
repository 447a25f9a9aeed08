#!/usr/bin/env bash
# Builds the traffic hold into OUTDIR: hold.bpf.o (the tc programs) and pm-hold (the controller, with the
# object embedded through a bpftool skeleton). Rebuilds only when a source in bpf/ is newer than an output.
# Usage: bpf/build.sh OUTDIR   (e.g. bpf/build.sh dist/native)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: bpf/build.sh OUTDIR" >&2; exit 2; }
mkdir -p "$1"
out=$(cd "$1" && pwd)
obj="$out/hold.bpf.o"
bin="$out/pm-hold"
sources=("$here"/*.c "$here"/*.h "$here"/build.sh)

# True when $1 is missing or older than any source.
stale() {
  [ -f "$1" ] || return 0
  local s
  for s in "${sources[@]}"; do
    [ "$s" -nt "$1" ] && return 0
  done
  return 1
}

if stale "$obj"; then
  # -g: libbpf needs the BTF it carries (map key/value types). No -I for <asm/...>: see hold_abi.h.
  clang -O2 -g -Wall -Werror -target bpf -c "$here/hold.bpf.c" -o "$obj.tmp"
  mv "$obj.tmp" "$obj"
fi

if stale "$bin" || [ "$obj" -nt "$bin" ]; then
  gen=$(mktemp -d)
  trap 'rm -rf "$gen"' EXIT
  bpftool gen skeleton "$obj" name hold > "$gen/hold.skel.h"
  gcc -O2 -Wall -Werror -I"$here" -I"$gen" -o "$bin.tmp" \
    "$here/pm-hold.c" "$here/hold_util.c" "$here/hold_stats.c" "$here/hold_forge.c" -lbpf -lelf -lz
  mv "$bin.tmp" "$bin"
fi
