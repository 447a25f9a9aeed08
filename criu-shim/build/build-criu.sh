#!/usr/bin/env bash
# Build CRIU from Debian's orig tarball (with PodMotion's patches) into a cache folder.
#
#   build-criu.sh <cache-dir>
#
# Result: <cache-dir>/criu/<version>/sbin/criu and <cache-dir>/criu/current -> <version>.
# A stamp file makes a second run a no-op. See README.md beside this script.
#
# Environment (optional):
#   CRIU_MIRROR  base URL of the pool folder holding criu_<version>.orig.tar.xz
#   CRIU_JOBS    parallel make jobs (default 2)
set -euo pipefail

# Pinned versions, in order of preference. The sha256 values are those of Debian's
# criu_<version>.orig.tar.xz (4.2.1 checked against criu_4.2.1-1.dsc).
VERSIONS=(4.2.1 4.1.1)
declare -A SHA256=(
	[4.2.1]=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
	[4.1.1]=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
)
# The Debian archive this machine's apt already uses: the first URI of a plain (non-security) source.
apt_mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f"
	done | head -n1
	if [ -r /etc/apt/sources.list ]; then
		grep -hE '^deb[[:space:]]' /etc/apt/sources.list | grep -v security | awk '{ print $2; exit }' || true
	fi
}
MIRROR="${CRIU_MIRROR:-$(apt_mirror | head -n1 | sed 's:/*$::')/pool/main/c/criu}"
JOBS="${CRIU_JOBS:-2}"

# Apt package for each command, and the library packages the build links against.
declare -A CMD_PKG=(
	[curl]=curl [xz]=xz-utils [sha256sum]=coreutils [patch]=patch [flock]=util-linux
	[make]=build-essential [gcc]=build-essential [pkg-config]=pkg-config
	[protoc-c]=protobuf-c-compiler [protoc]=protobuf-compiler
)
LIB_PKGS=(libprotobuf-dev libprotobuf-c-dev python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev
	libnftables-dev libgnutls28-dev libaio-dev uuid-dev libdrm-dev)

die() {
	echo "build-criu: error: $*" >&2
	exit 1
}
log() { echo "build-criu: $*" >&2; }

if [ $# -ne 1 ] || [ -z "$1" ]; then
	die "usage: $0 <cache-dir>"
fi
CACHE="$(realpath -m -- "$1")"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PATCH_DIR="$SCRIPT_DIR/patches"
CRIU_DIR="$CACHE/criu"
DL_DIR="$CACHE/downloads"

shopt -s nullglob
PATCHES=("$PATCH_DIR"/*.patch)
shopt -u nullglob

# Where CRIU caches its kernel-feature probe (criu.kdat). CRIU uses the cache only on tmpfs, and /run is
# not tmpfs on these machines, so every CRIU start re-probed the kernel (~40 ms, inside a restore's
# freeze). The directory is root's alone (node-runtime creates it 0700): a cache another user could
# write would mislead root's CRIU.
KDAT_RUNDIR=/dev/shm/podmotion-criu

# Stamp content: everything that decides what the binary is.
stamp_for() {
	local v="$1" p
	echo "version=$v"
	echo "rundir=$KDAT_RUNDIR"
	echo "tarball-sha256=${SHA256[$v]}"
	for p in "${PATCHES[@]}"; do
		echo "patch=$(basename "$p") $(sha256sum <"$p" | cut -d' ' -f1)"
	done
}

# True when <version> is installed and its stamp matches.
is_cached() {
	local v="$1"
	[ -x "$CRIU_DIR/$v/sbin/criu" ] && [ -f "$CRIU_DIR/$v/.stamp" ] &&
		[ "$(cat "$CRIU_DIR/$v/.stamp")" = "$(stamp_for "$v")" ]
}

# Point current at <version> (atomically) and say where it is.
use_version() {
	local v="$1" how="${2:-cached}"
	if [ "$(readlink "$CRIU_DIR/current" 2>/dev/null || true)" != "$v" ]; then
		ln -sfn "$v" "$CRIU_DIR/.current.tmp"
		mv -T "$CRIU_DIR/.current.tmp" "$CRIU_DIR/current"
	fi
	echo "criu $v: $how at $CRIU_DIR/$v (current -> $v)"
}

# First version worth considering: skip those recorded as absent from the mirror.
cached_choice() {
	local v
	for v in "${VERSIONS[@]}"; do
		if is_cached "$v"; then
			echo "$v"
			return 0
		fi
		[ -f "$DL_DIR/criu_$v.orig.tar.xz.404" ] || return 1
	done
	return 1
}

# Fast path: no lock, no network.
if v="$(cached_choice)"; then
	use_version "$v"
	exit 0
fi

check_deps() {
	local missing=() c p
	for c in "${!CMD_PKG[@]}"; do
		command -v "$c" >/dev/null 2>&1 || missing+=("${CMD_PKG[$c]}")
	done
	if command -v dpkg-query >/dev/null 2>&1; then
		for p in "${LIB_PKGS[@]}"; do
			dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
		done
	fi
	if [ ${#missing[@]} -gt 0 ]; then
		die "missing build dependencies; install them with: apt-get install -y --no-install-recommends" \
			"$(printf '%s\n' "${missing[@]}" | sort -u | paste -sd " ")"
	fi
}
check_deps

mkdir -p "$CRIU_DIR" "$DL_DIR"
exec 9>"$CRIU_DIR/.lock"
flock 9
# Another run may have finished the build while we waited for the lock.
if v="$(cached_choice)"; then
	use_version "$v"
	exit 0
fi

# fetch <version>: 0 = tarball verified in downloads, 2 = not found (404), 1 = other failure.
fetch() {
	local v="$1" name="criu_$1.orig.tar.xz" url code rc
	local dst="$DL_DIR/$name"
	url="$MIRROR/$name"
	if [ -f "$dst" ] && [ "$(sha256sum <"$dst" | cut -d' ' -f1)" = "${SHA256[$v]}" ]; then
		return 0
	fi
	rm -f "$dst" "$dst.part"
	log "downloading $url"
	rc=0
	code="$(curl -fsSL --retry 3 --retry-delay 2 --retry-connrefused --connect-timeout 20 --max-time 600 \
		-o "$dst.part" -w '%{http_code}' "$url" 2>"$dst.err")" || rc=$?
	if [ "$rc" -ne 0 ]; then
		rm -f "$dst.part"
		if [ "$code" = 404 ]; then
			rm -f "$dst.err"
			touch "$dst.404"
			return 2
		fi
		log "download of $url failed (HTTP ${code:-none}): $(tail -n 1 "$dst.err")"
		rm -f "$dst.err"
		return 1
	fi
	rm -f "$dst.err"
	if [ "$(sha256sum <"$dst.part" | cut -d' ' -f1)" != "${SHA256[$v]}" ]; then
		rm -f "$dst.part"
		die "sha256 mismatch for $url (expected ${SHA256[$v]}); refusing to build it"
	fi
	mv "$dst.part" "$dst"
	rm -f "$dst.404"
}

VERSION=""
for v in "${VERSIONS[@]}"; do
	if is_cached "$v"; then
		VERSION="$v"
		break
	fi
	rc=0
	fetch "$v" || rc=$?
	if [ "$rc" -eq 0 ]; then
		VERSION="$v"
		break
	elif [ "$rc" -eq 2 ]; then
		echo "build-criu: criu $v not found at $MIRROR/criu_$v.orig.tar.xz (HTTP 404)" >&2
	fi
done
[ -n "$VERSION" ] || die "could not fetch any pinned CRIU tarball (${VERSIONS[*]}) from $MIRROR"

if is_cached "$VERSION"; then
	use_version "$VERSION"
	exit 0
fi

# Build in a temporary folder under the cache.
START=$(date +%s)
BUILD_LOG="$CRIU_DIR/build-$VERSION.log"
BUILD_DIR="$(mktemp -d "$CRIU_DIR/.build-$VERSION.XXXXXX")"
trap 'rm -rf "$BUILD_DIR"' EXIT
: >"$BUILD_LOG"
log "building criu $VERSION in $BUILD_DIR (log: $BUILD_LOG)"

fail_build() {
	echo "build-criu: error: $1; last 30 lines of $BUILD_LOG:" >&2
	tail -n 30 "$BUILD_LOG" >&2
	exit 1
}

tar -C "$BUILD_DIR" -xJf "$DL_DIR/criu_$VERSION.orig.tar.xz" >>"$BUILD_LOG" 2>&1 || fail_build "extracting the tarball failed"
SRC="$BUILD_DIR/criu-$VERSION"
[ -d "$SRC" ] || fail_build "tarball has no criu-$VERSION folder"
for p in "${PATCHES[@]}"; do
	echo "=== patch -p1 < $p" >>"$BUILD_LOG"
	patch -d "$SRC" -p1 --batch --forward <"$p" >>"$BUILD_LOG" 2>&1 || fail_build "patch $(basename "$p") does not apply"
done

# make criu builds neither docs (no asciidoc/xmlto) nor crit. The ceiling keeps CRIU's
# Makefile from running git in an enclosing repository (the cache may live inside one).
echo "=== make -j$JOBS criu" >>"$BUILD_LOG"
(cd "$SRC" && GIT_CEILING_DIRECTORIES="$BUILD_DIR" make -j"$JOBS" RUNDIR="$KDAT_RUNDIR" criu) >>"$BUILD_LOG" 2>&1 ||
	fail_build "make criu failed"
[ -x "$SRC/criu/criu" ] || fail_build "make criu produced no criu/criu"
"$SRC/criu/criu" --version >>"$BUILD_LOG" 2>&1 || fail_build "the built criu does not run"

# Install: binary plus the RPC contract, swapped into place in one rename.
STAGE="$BUILD_DIR/install"
install -D -m 0755 "$SRC/criu/criu" "$STAGE/sbin/criu"
install -D -m 0644 "$SRC/images/rpc.proto" "$STAGE/share/criu/rpc.proto"
stamp_for "$VERSION" >"$STAGE/.stamp"
rm -rf "${CRIU_DIR:?}/${VERSION:?}"
mv -T "$STAGE" "$CRIU_DIR/$VERSION"

log "built criu $VERSION in $(($(date +%s) - START))s"
use_version "$VERSION" built
