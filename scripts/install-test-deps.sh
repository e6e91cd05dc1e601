#!/usr/bin/env bash
# Installs what the tests need beyond Go: a Redis server for the ledger's
# Redis store and Chromium for the CORS test. Debian packages; needs root
# (or sudo). Already installed programs are left alone.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server redis-tools)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

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
