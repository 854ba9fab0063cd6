#!/usr/bin/env bash
# build.sh OUT RELEASE VERSION: builds the Prometheus LTS server of this
# module's go.mod (module VERSION, release RELEASE) into OUT without
# its service-discovery plugins: the tests' backends scrape nothing, and the
# cloud SDKs behind those plugins are most of what the build compiles.
# Prometheus 3.5 has no build tag to leave them out (3.16's remove_all_sd),
# so the build reads a copy of the module with the generated plugin list
# removed (the minimum, file and HTTP discovery, stays), through a module
# file of its own: go.mod and go.sum here are not touched.
set -euo pipefail
out="$1"
release="$2"
version="$3"
here="$(cd "$(dirname "$0")" && pwd)"
GO="${GO:-go}"
cd "$here"
"$GO" mod download github.com/prometheus/prometheus
mod="$("$GO" list -m -f '{{.Dir}}' github.com/prometheus/prometheus)"
mkdir -p "$(dirname "$out")"
work="$(mktemp -d "${out}.build.XXXXXX")"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$mod" "$work/src"
chmod -R u+w "$work/src"
rm "$work/src/plugins/plugins.go"
cp go.mod "$work/build.mod"
cp go.sum "$work/build.sum"
echo "replace github.com/prometheus/prometheus => $work/src" >> "$work/build.mod"
"$GO" build -modfile="$work/build.mod" \
	-ldflags "-X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Revision=$version" \
	-o "$out.tmp" github.com/prometheus/prometheus/cmd/prometheus
mv "$out.tmp" "$out"
