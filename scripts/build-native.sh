#!/usr/bin/env bash
# Compiles the C parts of PodMotion (eBPF programs, native helpers) into dist/native, when their sources changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shopt -s nullglob
mkdir -p "$root/dist/native"

# Native helpers: criu-shim/native/NAME.c becomes dist/native/pm-NAME; node-runtime/native/pm-NAME.c keeps its
# name. Plain C, no extra libraries.
build() {
  local src=$1 out=$2 stale=0 h
  [ -f "$out" ] && [ ! "$src" -nt "$out" ] || stale=1
  # criu-shim's helpers include node-runtime's shared headers (pidns.h) too.
  for h in "$(dirname "$src")"/*.h "$root"/node-runtime/native/*.h; do [ "$h" -nt "$out" ] && stale=1; done
  if [ "$stale" = 1 ]; then
    gcc -O2 -Wall -Werror -o "$out.tmp" "$src"
    mv "$out.tmp" "$out"
  fi
}
for src in "$root"/criu-shim/native/*.c; do build "$src" "$root/dist/native/pm-$(basename "${src%.c}")"; done
for src in "$root"/node-runtime/native/*.c; do build "$src" "$root/dist/native/$(basename "${src%.c}")"; done

# The traffic hold: tc programs and their controller (bpf/build.sh decides what is stale).
if [ -f "$root/bpf/build.sh" ]; then
  bash "$root/bpf/build.sh" "$root/dist/native"
fi
