#!/usr/bin/env bash
# Compiles the C parts of PodMotion (eBPF programs, native helpers) into dist/, when their sources changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shopt -s nullglob
mkdir -p "$root/dist/bpf"
for src in "$root"/bpf/*.bpf.c; do
  out="$root/dist/bpf/$(basename "${src%.c}").o"
  if [ ! -f "$out" ] || [ "$src" -nt "$out" ]; then
    clang -O2 -g -Wall -Werror -target bpf -c "$src" -o "$out"
  fi
done
