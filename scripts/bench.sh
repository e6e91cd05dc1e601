#!/usr/bin/env bash
# Runs the benchmarks behind the README's table of cost per row and memory,
# each with its baseline in the same run, and prints the figures and ratios.
# Nothing is written to the repository: raw outputs go to a temporary
# directory, kept only with BENCH_KEEP=1.
#
#   ./scripts/bench.sh                      # P1, P4, P5 (needs redis-server), P6
#   BENCH_STREAMS=100 ./scripts/bench.sh    # P6 with 100 streams only
#   BENCH_P1_ITERATIONS=10 ./scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.26.11}"
GO="${GO:-go}"
P1_ITERATIONS="${BENCH_P1_ITERATIONS:-9}"
# The ledger benchmark of P5 lives in quota/: a page's ledger steps (reserve,
# finish: one round trip each) against raw EVALSHA through the same Redis
# client at 1 and 8 clients, reporting the throughput "ratio". It needs
# redis-server on PATH.
P5_BENCH="${BENCH_P5:-RedisStepVsEvalsha}"
export LINKGATE_BENCH_STREAMS="${BENCH_STREAMS:-100,1000}"

out="$(mktemp -d)"
if [[ "${BENCH_KEEP:-}" != 1 ]]; then trap 'rm -rf "$out"' EXIT; else echo "raw outputs in $out"; fi

run() { # name, then the go test arguments
	local name=$1
	shift
	echo "--- $name: $GO test -run '^\$' $*" >&2
	# A benchmark that fails (say, streams that do not fit in memory) leaves
	# its figures blank; the others still run.
	if ! "$GO" test -run '^$' "$@" 2>&1 | tee "$out/$name.txt" >&2; then
		echo "--- $name failed" >&2
	fi
}

# metric FILE BENCH-PREFIX UNIT: the value reported with UNIT on the first
# result line of a benchmark whose name starts with BENCH-PREFIX.
metric() {
	local v
	v=$(awk -v b="$2" -v u="$3" '
		index($1, b) == 1 { for (i = 3; i < NF; i++) if ($(i + 1) == u) { print $i; exit } }' "$1")
	echo "${v:-failed}"
}

run p1 -bench 'StreamVsRawClient$' -benchtime "${P1_ITERATIONS}x" ./service/
run decode -bench 'DecodePage$' -benchtime 2s ./upstream/
run p4 -bench 'ServerPeakRSS$' -benchtime 1x -timeout 30m ./cmd/server/
run p6 -bench 'ServerRSSPerStream$' -benchtime 1x -timeout 60m ./cmd/server/
p5=""
# The list is read whole: grep -q would close the pipe early, and pipefail
# would take the go command's SIGPIPE for a missing benchmark.
if grep -qx "Benchmark${P5_BENCH}" <<<"$("$GO" test -list "Benchmark${P5_BENCH}\$" ./quota/)"; then
	run p5 -bench "${P5_BENCH}\$" -benchtime 20000x ./quota/
	p5="$(metric "$out/p5.txt" "Benchmark${P5_BENCH}/clients=1-" ratio) (1 client), $(metric "$out/p5.txt" "Benchmark${P5_BENCH}/clients=8-" ratio) (8 clients)"
fi

echo
echo "cost per row and memory ($(nproc) cores; $(uptime | sed 's/.*load average/load average/'))"
printf '%-62s %-10s %s\n' "measure" "goal" "measured"
printf '%-62s %-10s %s (median; totals %s ÷ %s rows/s)\n' "P1 gRPC StreamBacklinks ÷ raw keyset client, rows/s" ">= 0.9" \
	"$(metric "$out/p1.txt" BenchmarkStreamVsRawClient ratio)" \
	"$(metric "$out/p1.txt" BenchmarkStreamVsRawClient grpc-rows/s)" \
	"$(metric "$out/p1.txt" BenchmarkStreamVsRawClient raw-rows/s)"
printf '%-62s %-10s %s MiB\n' "P4 peak RSS of the server after streaming 1,000,000 rows" "<= 64 MiB" \
	"$(metric "$out/p4.txt" BenchmarkServerPeakRSS MiB-peak-1M)"
printf '%-62s %-10s %s (10k rows: %s MiB)\n' "P4 peak RSS, 1,000,000 rows ÷ 10,000 rows" "<= 1.2" \
	"$(metric "$out/p4.txt" BenchmarkServerPeakRSS ratio-1M/10k)" \
	"$(metric "$out/p4.txt" BenchmarkServerPeakRSS MiB-peak-10k)"
if [[ -n "$p5" ]]; then
	printf '%-62s %-10s %s\n' "P5 ledger steps ÷ raw EVALSHA, throughput" ">= 0.5" "$p5"
else
	printf '%-62s %-10s %s\n' "P5 ledger steps ÷ raw EVALSHA, throughput" ">= 0.5" "not measured: no Benchmark${P5_BENCH} in quota/"
fi
for n in ${LINKGATE_BENCH_STREAMS//,/ }; do
	printf '%-62s %-10s %s MiB per stream (RSS %s MiB)\n' "P6 memory per stalled stream, $n concurrent streams" "<= 0.5 MiB" \
		"$(metric "$out/p6.txt" "BenchmarkServerRSSPerStream/streams=$n-" MiB/stream)" \
		"$(metric "$out/p6.txt" "BenchmarkServerRSSPerStream/streams=$n-" MiB-RSS)"
done
printf '%-62s %-10s %s rows/s (encoding/json tokens: %s)\n' "decoding of 1,000-row pages, 8 fields (jsontext)" "" \
	"$(metric "$out/decode.txt" BenchmarkDecodePage/jsontext rows/s)" \
	"$(metric "$out/decode.txt" BenchmarkDecodePage/encoding-json rows/s)"
