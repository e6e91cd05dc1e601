#!/usr/bin/env bash
# Installs what the tests need beyond Go: a Redis server for the ledger's
# Redis store and Redis Sentinel for its failover tests, Chromium for the
# CORS test, and Node.js with the npm tools that lint the OpenAPI document
# and type-check a TypeScript client made from it (tools/openapi-check, npm ci from its lock file). Debian packages;
# needs root (or sudo). Already installed programs are left alone.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server redis-tools)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(nodejs npm)

# The npm tools, pinned by tools/openapi-check/package-lock.json.
npm_tools() {
  if command -v npm >/dev/null; then
    (cd "$(dirname "$0")/../tools/openapi-check" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
if [ ${#need[@]} -eq 0 ]; then
  npm_tools
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then
    sudo="sudo"
  else
    echo "install-test-deps: cannot install ${need[*]} without root; the tests that need them will skip" >&2
    exit 0
  fi
fi
echo "install-test-deps: installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
npm_tools
