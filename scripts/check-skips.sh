#!/usr/bin/env bash
# check-skips.sh EVENTS ALLOWED fails when the test run recorded in EVENTS
# (go test -json events; make test writes them with gotestsum --jsonfile)
# ran no test, or skipped a test that ALLOWED does not list. CI runs it
# after make test, so a test that should run there (Redis, Chromium, npm,
# Jaeger, the README's commands) cannot pass quietly by skipping.
# ALLOWED has one "package test" a line; "#" starts a comment.
set -euo pipefail
events=$1
allowed=$2

if ! grep -q '"Action":"pass","Package":"[^"]*","Test":' "$events"; then
	echo "check-skips: $events records no test that passed" >&2
	exit 1
fi
skipped=$(grep '"Action":"skip"' "$events" | grep '"Test":' |
	sed -E 's/.*"Package":"([^"]*)","Test":"([^"]*)".*/\1 \2/' | sort -u)
expected=$(sed -e 's/#.*//' -e 's/[[:space:]]\+/ /g' -e 's/^ //' -e 's/ $//' "$allowed" | grep -v '^$' | sort -u || true)
unexpected=$(comm -23 <(printf '%s\n' "$skipped" | grep -v '^$' || true) <(printf '%s\n' "$expected"))
if [[ -n $unexpected ]]; then
	echo "check-skips: these tests skipped, and $allowed does not allow it (make test lists why each skipped):" >&2
	printf "%s\n" "$unexpected" | sed "s/^/  /" >&2
	exit 1
fi
echo "check-skips: $(printf '%s\n' "$skipped" | grep -c . || true) skipped, each allowed by $allowed"
