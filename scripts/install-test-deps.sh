#!/usr/bin/env bash
# Installs what the tests need beyond Go, each only when missing, so a
# second run is quick:
#   - Debian packages: a Redis server for the ledger's Redis store and
#     Redis Sentinel for its failover tests,
#     Chromium for the CORS test, curl and python3 for the README's
#     commands, and npm (Debian's Node is only npm's bootstrap);
#   - the npm tools that lint the OpenAPI document and type-check a
#     TypeScript client made from it (tools/openapi-check, npm ci from its
#     lock file), with the Node they run on pinned there as npm's node
#     package: Debian 12's Node 18 is below their minimum;
#   - DuckDB's npm package (export/parts/testdata/duckdb, npm ci from its
#     lock file, on the same pinned Node), for export/parts'
#     TestDuckDBReadsParts;
#   - Jaeger v2, built once from the Go module cache into the user's cache
#     (scripts/jaeger-build.sh), for TestJaegerOTLP;
#   - versitygw, an S3 server, built once with go install into the user's
#     cache, for export/parts' TestS3;
#   - grpcurl (scripts/grpcurl), built into the Go cache before the test of
#     the README's commands needs it.
# Debian packages need root (or sudo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

need=()
command -v redis-server >/dev/null || need+=(redis-server redis-tools)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(nodejs npm)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
      sudo="sudo"
    else
      echo "install-test-deps: cannot install ${need[*]} without root; the tests that need them will skip" >&2
      need=()
    fi
  fi
  if [ ${#need[@]} -gt 0 ]; then
    echo "install-test-deps: installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

# The npm tools and DuckDB, each pinned by its package-lock.json; npm ci
# runs again only when a lock file changed since the last install.
if command -v npm >/dev/null; then
  for tools in "$here/../tools/openapi-check" "$here/../export/parts/testdata/duckdb"; do
    stamp=$tools/node_modules/.installed-lock
    if ! cmp -s "$tools/package-lock.json" "$stamp"; then
      (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
      cp "$tools/package-lock.json" "$stamp"
    fi
    echo "install-test-deps: npm packages of $(basename "$tools") on Node $("$tools/node_modules/.bin/node" --version)"
  done
fi

if ! jaeger=$("$here/jaeger-build.sh"); then
  echo "install-test-deps: Jaeger could not be built; TestJaegerOTLP will skip (fail with LINKGATE_REQUIRE_JAEGER=1)" >&2
  [ "${LINKGATE_REQUIRE_JAEGER:-}" != 1 ] || exit 1
else
  echo "install-test-deps: Jaeger at $jaeger"
fi

"$here/grpcurl" -version >/dev/null 2>&1 || echo "install-test-deps: grpcurl could not be built (scripts/grpcurl)" >&2

# versitygw (the version export/parts' TestS3 looks for), outside any
# module so that linkgate's go.mod is left alone.
VERSITYGW_VERSION=v1.8.0
vgw=${LINKGATE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/linkgate}/versitygw-$VERSITYGW_VERSION
if [ ! -x "$vgw/versitygw" ]; then
  echo "install-test-deps: building versitygw $VERSITYGW_VERSION into $vgw (about two minutes, once)"
  if ! (cd "$(mktemp -d)" && GOBIN=$vgw go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"); then
    echo "install-test-deps: versitygw could not be built; TestS3 will skip (fail with LINKGATE_REQUIRE_S3=1)" >&2
    [ "${LINKGATE_REQUIRE_S3:-}" != 1 ] || exit 1
  fi
fi
