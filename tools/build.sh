#!/usr/bin/env bash
# Builds kube-apiserver, kubectl (for `kubectl apply -k deploy/kubernetes`)
# and etcd for the integration tests into DIR (default
# .cache/kube-<kubernetes version>/), the folder KUBEBUILDER_ASSETS names.
# Each binary is built only when missing, so a kept cache costs nothing.
# Built without -trimpath, like the test build and with the proxy's
# versions of what they share (go.mod here), so the packages they share with
# the tests and with each other are compiled once.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
GO="${GO:-go}"
kube_version="$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$root/tools/kube-apiserver/go.mod")"
if [ -z "$kube_version" ]; then
	echo "tools/kube-apiserver/go.mod: no \"require k8s.io/kubernetes vX.Y.Z\" line" >&2
	exit 1
fi
dir="${1:-$root/.cache/kube-$kube_version}"
mkdir -p "$dir"

if [ ! -x "$dir/kube-apiserver" ]; then
	major="$(echo "$kube_version" | sed -E 's/^v([0-9]+)\..*/\1/')"
	minor="$(echo "$kube_version" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
	pkg=k8s.io/component-base/version
	echo "building kube-apiserver $kube_version into $dir"
	(cd "$root/tools/kube-apiserver" && "$GO" build \
		-ldflags "-s -w -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
		-o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
	mv "$dir/kube-apiserver.tmp" "$dir/kube-apiserver"
fi

if [ ! -x "$dir/kubectl" ]; then
	major="$(echo "$kube_version" | sed -E 's/^v([0-9]+)\..*/\1/')"
	minor="$(echo "$kube_version" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
	pkg=k8s.io/component-base/version
	echo "building kubectl $kube_version into $dir"
	(cd "$root/tools/kube-apiserver" && "$GO" build \
		-ldflags "-s -w -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
		-o "$dir/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl)
	mv "$dir/kubectl.tmp" "$dir/kubectl"
fi

if [ ! -x "$dir/etcd" ]; then
	echo "building etcd into $dir"
	(cd "$root/tools/etcd" && "$GO" build -ldflags "-s -w" -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3)
	mv "$dir/etcd.tmp" "$dir/etcd"
fi
