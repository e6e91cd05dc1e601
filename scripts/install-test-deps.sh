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
#   - Jaeger v2, built once from the Go module cache into the user's cache
#     (scripts/jaeger-build.sh), for TestJaegerOTLP;
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

# The npm tools, pinned by tools/openapi-check/package-lock.json; npm ci
# runs again only when the lock file changed since the last install.
tools=$here/../tools/openapi-check
if command -v npm >/dev/null; then
  stamp=$tools/node_modules/.installed-lock
  if ! cmp -s "$tools/package-lock.json" "$stamp"; then
    (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$tools/package-lock.json" "$stamp"
  fi
  echo "install-test-deps: npm tools on Node $("$tools/node_modules/.bin/node" --version)"
fi

if ! jaeger=$("$here/jaeger-build.sh"); then
  echo "install-test-deps: Jaeger could not be built; TestJaegerOTLP will skip (fail with LINKGATE_REQUIRE_JAEGER=1)" >&2
  [ "${LINKGATE_REQUIRE_JAEGER:-}" != 1 ] || exit 1
else
  echo "install-test-deps: Jaeger at $jaeger"
fi

"$here/grpcurl" -version >/dev/null 2>&1 || echo "install-test-deps: grpcurl could not be built (scripts/grpcurl)" >&2
