#!/usr/bin/env bash
# Test dependencies for the Kubernetes side of PodMotion, built or fetched once into .cache/kube/bin:
# kube-apiserver and kubectl (from the k8s.io/kubernetes Go module), helm (helm.sh/helm/v4) and etcd
# (Debian trixie's etcd-server: bookworm's is too old for this Kubernetes). Idempotent: a present binary
# of the wanted version is kept. Prints the bin directory on its last line.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
kube=$root/.cache/kube
bin=$kube/bin
mkdir -p "$bin"

K8S_VERSION=v1.35.4
STAGING_VERSION=v0.35.4
HELM_VERSION=v4.3.2

say() { printf 'podmotion kube-tools: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
command -v go >/dev/null || die "Go is needed to build kube-apiserver, kubectl and helm (test dependencies only)."

export GOFLAGS=-buildvcs=false CGO_ENABLED=0

stamp_ok() { [ -x "$bin/$1" ] && [ "$(cat "$bin/.$1.version" 2>/dev/null)" = "$2" ]; }

# k8s.io/kubernetes points its staging modules at ./staging: a wrapper module replaces each of them with
# the published module of the same release, which is what `go build` of its commands needs.
if ! stamp_ok kube-apiserver "$K8S_VERSION" || ! stamp_ok kubectl "$K8S_VERSION"; then
  say "building kube-apiserver and kubectl $K8S_VERSION (first time only: a few minutes)"
  w=$kube/k8s-wrapper
  rm -rf "$w" && mkdir -p "$w"
  curl -fsS "https://proxy.golang.org/k8s.io/kubernetes/@v/$K8S_VERSION.mod" -o "$w/upstream.mod" \
    || die "cannot fetch k8s.io/kubernetes $K8S_VERSION from the Go module proxy"
  {
    echo "module podmotion.local/k8s-tools"
    echo
    echo "go 1.25.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/[a-z0-9-]*$#replace \1 => \1 '"$STAGING_VERSION"'#p' "$w/upstream.mod"
  } >"$w/go.mod"
  printf 'package tools\n' >"$w/tools.go"
  (cd "$w" && go mod download k8s.io/kubernetes >/dev/null && go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" >"$kube/go-get.log" 2>&1 \
    && go build -trimpath -ldflags=-s -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >"$kube/build.log" 2>&1 \
    && go build -trimpath -ldflags=-s -o "$bin/kubectl" k8s.io/kubernetes/cmd/kubectl >>"$kube/build.log" 2>&1) \
    || die "building kube-apiserver/kubectl failed (see $kube/go-get.log and $kube/build.log)"
  echo "$K8S_VERSION" >"$bin/.kube-apiserver.version"
  echo "$K8S_VERSION" >"$bin/.kubectl.version"
fi

if ! stamp_ok helm "$HELM_VERSION"; then
  say "building helm $HELM_VERSION"
  (GOBIN=$bin go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >"$kube/helm.log" 2>&1) \
    || die "building helm failed (see $kube/helm.log)"
  echo "$HELM_VERSION" >"$bin/.helm.version"
fi

if ! [ -x "$bin/etcd" ]; then
  say "fetching etcd-server from Debian trixie"
  d=$kube/etcd-deb
  rm -rf "$d" && mkdir -p "$d"
  # Only this one package is taken from trixie, and only into the cache: the lists are private to this step.
  state=$kube/apt
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
  echo "deb http://deb.debian.org/debian trixie main" >"$kube/trixie.list"
  apt_opts=(-o Dir::Etc::SourceList="$kube/trixie.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache" -o APT::Get::List-Cleanup=0)
  apt-get "${apt_opts[@]}" update -qq >"$kube/apt.log" 2>&1 || die "apt-get update for trixie failed (see $kube/apt.log)"
  (cd "$d" && apt-get "${apt_opts[@]}" download etcd-server >>"$kube/apt.log" 2>&1) || die "cannot download etcd-server (see $kube/apt.log)"
  dpkg -x "$d"/etcd-server_*.deb "$d/x"
  cp "$d/x/usr/bin/etcd" "$bin/etcd"
  rm -rf "$d"
fi

echo "$bin"
