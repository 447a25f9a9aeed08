#!/usr/bin/env bash
# Builds the krew archive of the kubectl plugin, dist/krew/kubectl-podmotion-vX.Y.Z.tar.gz, and writes its
# sha256 into deploy/krew/podmotion.yaml. Reproducible: the same dist/ and package-lock.json give the same
# bytes (sorted names, mtime 0, owner 0:0, normalised modes, gzip without name or time).
#
# The archive is self-contained apart from Node.js itself:
#   kubectl-podmotion          launcher: node lib/cli/kubectl-podmotion.js "$@"
#   lib/                       the compiled JS of dist/ (no tests, benchmarks, source maps or native helpers)
#   lib/package.json           "type": "module" for the JS, and the version
#   lib/node_modules/          production dependencies (npm ci --omit=dev --omit=optional --ignore-scripts),
#                              without source maps and type declarations
#   LICENSE                    when the repository has one
# dist/native is left out: those are the node agent's helpers, compiled for this machine's architecture,
# and the plugin does not run them; without optional dependencies and install scripts, lib/node_modules is
# pure JS, so one archive serves linux/amd64 and linux/arm64.
# Needs: `make build` (dist/), npm and the npm registry (or its cache) for the dependencies.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
manifest=$root/deploy/krew/podmotion.yaml
outdir=$root/dist/krew

say() { printf 'krew-package: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ -f "$root/dist/cli/kubectl-podmotion.js" ] || die "dist/cli/kubectl-podmotion.js is missing (run: make build)"
[ -f "$manifest" ] || die "$manifest is missing"
version=v$(node -p 'require(process.argv[1]).version' "$root/package.json")
grep -q "^  version: $version\$" "$manifest" \
  || die "package.json says $version but $manifest has another spec.version: update the manifest's version and uris first"

umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/podmotion-krew.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage/lib"

# The compiled JS only: every *.js under dist/ except tests, benchmarks and the archive's own output.
(cd "$root/dist" && find . -type f -name '*.js' \
  -not -path './test/*' -not -path './bench/*' -not -path './krew/*' -not -path './native/*' -print0) \
  | (cd "$root/dist" && xargs -0 cp --parents -t "$stage/lib")

# Production dependencies from the lockfile, in a scratch copy of the project.
deps=$work/deps
mkdir -p "$deps"
cp "$root/package.json" "$root/package-lock.json" "$deps/"
say "installing production dependencies (npm ci --omit=dev)"
(cd "$deps" && npm ci --omit=dev --omit=optional --ignore-scripts --no-bin-links --no-audit --no-fund \
  --loglevel=error >"$work/npm.log" 2>&1) || { cat "$work/npm.log" >&2; die "npm ci failed"; }
rm -f "$deps/node_modules/.package-lock.json"
# Source maps and type declarations are never loaded at run time; they are most of the dependencies' bytes.
find "$deps/node_modules" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \) -delete
mv "$deps/node_modules" "$stage/lib/node_modules"
cp "$root/package.json" "$stage/lib/package.json"
[ -f "$root/LICENSE" ] && cp "$root/LICENSE" "$stage/LICENSE"

# krew links ~/.krew/bin/kubectl-podmotion to this file, so $0 is resolved before looking for lib/.
cat >"$stage/kubectl-podmotion" <<'EOF'
#!/bin/sh
# kubectl-podmotion: `kubectl podmotion ...` runs this. Needs Node.js >= 20 on PATH.
here=$(dirname "$(readlink -f "$0")")
if ! command -v node >/dev/null 2>&1; then
  echo "kubectl-podmotion: Node.js >= 20 is needed and \"node\" is not on PATH" >&2
  exit 1
fi
exec node "$here/lib/cli/kubectl-podmotion.js" "$@"
EOF
chmod 0755 "$stage/kubectl-podmotion"

mkdir -p "$outdir"
archive=$outdir/kubectl-podmotion-$version.tar.gz
# Top-level entries named (not ".") so paths have no "./" prefix; --sort=name orders everything below them.
(cd "$stage" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort \
  | LC_ALL=C tar --create --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    --mode='u+rwX,go+rX,go-w' --verbatim-files-from --files-from=- --file=-) | gzip -9 -n >"$archive"

sha=$(sha256sum "$archive" | cut -d' ' -f1)
sed -i "s/^\(\s*sha256:\).*/\1 \"$sha\"/" "$manifest"
say "wrote ${archive#"$root"/} ($(wc -c <"$archive") bytes) and its sha256 into ${manifest#"$root"/}"
echo "$sha"
