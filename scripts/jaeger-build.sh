#!/usr/bin/env bash
# jaeger-build.sh builds Jaeger v2 (pinned below) from the Go module cache,
# once, and prints the path of the binary. The binary is kept outside the
# repository, in the user's cache ($LINKGATE_CACHE_DIR, default
# ~/.cache/linkgate), so every clone and every CI run on the machine shares
# it: the first build takes several minutes and ~110 MB, later calls print
# the path at once. Used by scripts/install-test-deps.sh (for TestJaegerOTLP)
# and scripts/jaeger-demo.sh.
#
# Usage: scripts/jaeger-build.sh [--if-built]   (--if-built prints the path
# only if the binary is there, and never builds)
set -euo pipefail

JAEGER_VERSION=v1.76.0 # the jaegertracing/jaeger module version of Jaeger v2
cache=${LINKGATE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/linkgate}
bin=$cache/jaeger-$JAEGER_VERSION/jaeger
if [[ -x $bin ]]; then
	echo "$bin"
	exit 0
fi
[[ ${1:-} != --if-built ]] || exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "jaeger-build: building Jaeger $JAEGER_VERSION from the module cache into $bin (several minutes, once)" >&2
# Outside any module, so that linkgate's go.mod is left alone.
dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
mkdir -p "$(dirname "$bin")"
# Built beside the final path and renamed, so an interrupted build never
# leaves a binary that looks complete.
(cd "$work/src" && go build -o "$bin.partial" ./cmd/jaeger)
mv "$bin.partial" "$bin"
echo "$bin"
