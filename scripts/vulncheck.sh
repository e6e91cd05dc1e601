#!/usr/bin/env bash
# govulncheck against an offline vulnerability database: these machines
# cannot reach vuln.go.dev, but the module proxy serves golang.org/x/vulndb,
# whose data/osv holds every report. The database is built from it with the
# module's own cmd/indexdb into a cache directory outside the repository
# (never committed), then govulncheck (pinned in tools/go.mod) checks every
# package. govulncheck exits non-zero when a vulnerability is reachable from
# linkgate's code, which fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."

export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.26.11}"
GO="${GO:-go}"
# The database snapshot: bump it to learn of newer vulnerabilities.
VULNDB_VERSION="${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}"
CACHE="${LINKGATE_VULNDB_CACHE:-$($GO env GOCACHE)/../linkgate-vulndb}"
DB="$CACHE/$VULNDB_VERSION"

if [[ ! -f "$DB/index/db.json" ]]; then
	dir=$($GO mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[[ -d "$dir/data/osv" ]] || { echo "vulncheck: golang.org/x/vulndb@$VULNDB_VERSION has no data/osv" >&2; exit 1; }
	mkdir -p "$CACHE"
	tmp=$(mktemp -d "$CACHE/build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# Built inside the downloaded module, with its own go.mod and go.sum.
	(cd "$dir" && GOFLAGS=-mod=mod $GO build -o "$tmp/indexdb" ./cmd/indexdb)
	"$tmp/indexdb" -vulns "$dir/data/osv" -out "$tmp/db"
	rm -rf "$DB"
	mv "$tmp/db" "$DB"
fi
echo "vulncheck: database golang.org/x/vulndb@$VULNDB_VERSION in $DB"
$GO tool -modfile=tools/go.mod govulncheck -db "file://$(cd "$DB" && pwd)" ./...
