#!/usr/bin/env bash
# Makes this machine ready for PodMotion: Debian packages, a patched CRIU, node modules and the build.
# Idempotent: every step checks before it acts, so a second run takes seconds.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache"
mkdir -p "$cache"

die() { printf 'podmotion deps: %s\n' "$*" >&2; exit 1; }
say() { printf 'podmotion deps: %s\n' "$*"; }

[ "$(uname -s)" = Linux ] || die "PodMotion needs Linux (this is $(uname -s))."
[ "$(id -u)" = 0 ] || die "run as root: namespaces, CRIU and eBPF need it (try: sudo make deps)."

# Kernel features the local cluster and migrations rely on. /proc/config.gz is the authority when present.
need_kconfig=(CHECKPOINT_RESTORE NET_NS PID_NS VETH VXLAN BPF_SYSCALL NET_CLS_BPF NET_SCH_INGRESS NF_CONNTRACK USERFAULTFD)
if [ -r /proc/config.gz ]; then
  kcfg=$(zcat /proc/config.gz)
  missing=()
  for opt in "${need_kconfig[@]}"; do
    grep -Eq "^CONFIG_${opt}=(y|m)" <<<"$kcfg" || missing+=("CONFIG_${opt}")
  done
  [ ${#missing[@]} -eq 0 ] || die "kernel $(uname -r) lacks ${missing[*]}: PodMotion cannot run on it."
fi

# Debian packages: runtime tools first, then CRIU's build dependencies.
runtime_pkgs=(iproute2 nftables iptables conntrack tcpdump util-linux procps curl xz-utils ca-certificates
  nats-server clang llvm libbpf-dev bpftool gcc make libc6-dev python3
  postgresql-15 postgresql-client-15 redis-server redis-tools
  chromium)  # the inspector's browser tests (headless, driven by playwright-core)
criu_build_pkgs=(build-essential pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev libnftables-dev libgnutls28-dev libaio-dev
  uuid-dev libdrm-dev)
want=("${runtime_pkgs[@]}" "${criu_build_pkgs[@]}")
absent=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || absent+=("$p")
done
if [ ${#absent[@]} -gt 0 ]; then
  say "installing from Debian: ${absent[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$cache/apt-update.log" 2>&1 || die "apt-get update failed (see $cache/apt-update.log)"
  apt-get install -y -qq --no-install-recommends "${absent[@]}" >"$cache/apt-install.log" 2>&1 \
    || die "apt-get install failed for: ${absent[*]} (see $cache/apt-install.log)"
else
  say "Debian packages: all ${#want[@]} present"
fi

# Debian's nats-server, postgresql and redis-server packages enable system services; PodMotion starts its own
# (the proof workloads run as pods), so keep those off.
for svc in nats-server postgresql redis-server; do
  if systemctl is-enabled "$svc" >/dev/null 2>&1; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done

bash "$root/criu-shim/build/build-criu.sh" "$cache"

# Node modules: reinstall only when the lock file changed since the last install.
lock_sum=$(sha256sum "$root/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$root/node_modules" ] || [ "$(cat "$cache/npm.stamp" 2>/dev/null)" != "$lock_sum" ]; then
  say "installing node modules"
  (cd "$root" && npm ci --no-audit --no-fund --loglevel=error >"$cache/npm.log" 2>&1) \
    || die "npm ci failed (see $cache/npm.log)"
  echo "$lock_sum" >"$cache/npm.stamp"
else
  say "node modules: up to date"
fi
