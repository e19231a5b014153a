#!/usr/bin/env bash
# Builds the real Kubernetes components the lab runs, from their published
# Go modules, pinned by the go.mod and go.sum beside this script:
#
#   kube/     k8s.io/kubernetes (kube-apiserver, kube-controller-manager,
#             kube-scheduler, kube-proxy, kubectl) and etcd, in one binary
#             `kube` with a symlink per component
#   coredns/  CoreDNS with the plugins a cluster's Corefile uses
#
# The binaries are cached outside the clone, keyed by the component versions
# and a hash of the module files, so a second run (or another clone of the
# same commit) builds nothing:
#
#   ${MC_LAB_COMPONENTS_CACHE:-/var/cache/mc-lab/components}/<key>/bin/
#   ${MC_LAB_COMPONENTS_CACHE:-/var/cache/mc-lab/components}/current -> <key>
#
# Prints the bin directory on its last line (what MC_LAB_COMPONENTS takes;
# `mc-lab` uses `current/bin` when that is unset). Needs Go and the Go module
# proxy; the first build takes about 15 minutes on 2 cores.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MC_LAB_COMPONENTS_CACHE:-/var/cache/mc-lab/components}

if ! command -v go >/dev/null 2>&1; then
  echo "go not found: the lab builds Kubernetes from source; install Go 1.26 or newer (https://go.dev/dl)" >&2
  exit 1
fi
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0

module_version() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }
kube_version=$(module_version kube k8s.io/kubernetes)
etcd_version=$(module_version kube go.etcd.io/etcd/server/v3)
coredns_version=$(module_version coredns github.com/coredns/coredns)
go_version=$(go env GOVERSION)
sources=$(cd "$here" && cat kube/go.mod kube/go.sum kube/main.go coredns/go.mod coredns/go.sum coredns/main.go build.sh | sha256sum | cut -c1-12)
key="kubernetes-$kube_version-etcd-$etcd_version-coredns-$coredns_version-$go_version-$sources"
out="$cache/$key"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if [ ! -e "$out/.complete" ]; then
  echo "building Kubernetes $kube_version, etcd $etcd_version and CoreDNS $coredns_version with $go_version into $out" >&2
  started=$SECONDS
  tmp="$out.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp/bin"
  minor=${kube_version#v1.}
  minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/kube" .)
  (cd "$here/coredns" && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/coredns" .)
  for component in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl etcd; do
    ln -s kube "$tmp/bin/$component"
  done
  printf 'kubernetes %s\netcd %s\ncoredns %s\ngo %s\n' \
    "$kube_version" "$etcd_version" "$coredns_version" "$go_version" >"$tmp/VERSIONS"
  touch "$tmp/.complete"
  rm -rf "$out"
  mv "$tmp" "$out"
  echo "built in $((SECONDS - started)) s" >&2
fi
ln -sfn "$key" "$cache/current.tmp"
mv -T "$cache/current.tmp" "$cache/current"
echo "$out/bin"
