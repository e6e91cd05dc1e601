#!/usr/bin/env bash
# jaeger-demo.sh shows one linkgate trace in a real OTLP backend, offline:
#
#   1. builds Jaeger v2 from the Go module cache unless it is already built
#      (scripts/jaeger-build.sh: several minutes, ~110 MB, once);
#   2. starts it with scripts/jaeger-config.yaml: in-memory storage, OTLP on
#      127.0.0.1:4317/4318, query API and UI on 127.0.0.1:16686;
#   3. starts linkgate on its embedded default (the simulator as upstream)
#      with OTEL_* pointing at Jaeger over OTLP/gRPC;
#   4. makes a REST streaming call with a traceparent header, stops linkgate
#      (which flushes its spans), and
#   5. reads GET /api/traces?service=linkgate and prints the span tree:
#      service, operation, duration and linkgate's page attributes.
#
# Usage: scripts/jaeger-demo.sh [--keep]   (--keep leaves Jaeger running so
# the trace can be browsed at http://127.0.0.1:16686)
# Needs go, curl and python3. Ports: 4317, 4318, 16685, 16686 (Jaeger),
# 18080 and 19090 (linkgate), all on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/bin
WORK=$(mktemp -d)
KEEP=${1:-}
HTTP=127.0.0.1:18080
GRPC=127.0.0.1:19090
QUERY=127.0.0.1:16686

pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() { # url, seconds
	for _ in $(seq 1 $(($2 * 5))); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.2
	done
	echo "timed out waiting for $1" >&2
	return 1
}

JAEGER=$("$ROOT/scripts/jaeger-build.sh")
mkdir -p "$BIN"

echo "== starting Jaeger (logs: $WORK/jaeger.log)"
# OTEL_TRACES_EXPORTER=none: Jaeger would otherwise trace itself.
OTEL_TRACES_EXPORTER=none "$JAEGER" --config "$ROOT/scripts/jaeger-config.yaml" >"$WORK/jaeger.log" 2>&1 &
jaeger_pid=$!
pids+=("$jaeger_pid")
wait_http "http://$QUERY/api/services" 60

echo "== building and starting linkgate with OTEL_* pointing at Jaeger"
(cd "$ROOT" && go build -o "$BIN/linkgate" ./cmd/server)
OTEL_TRACES_EXPORTER=otlp \
	OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
	OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \
	OTEL_SERVICE_NAME=linkgate \
	LINKGATE_HTTP_ADDR=$HTTP LINKGATE_GRPC_ADDR=$GRPC \
	LINKGATE_DATA_DIR=$WORK/data LINKGATE_DRAIN_DELAY=0s \
	"$BIN/linkgate" >"$WORK/linkgate.log" 2>&1 &
linkgate_pid=$!
pids+=("$linkgate_pid")
wait_http "http://$HTTP/healthz" 30

trace_id=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
echo "== REST streaming call, traceparent trace id $trace_id"
curl -fsS -N -H "traceparent: 00-$trace_id-00f067aa0ba902b7-01" \
	"http://$HTTP/v1/backlinks:stream?target=sized-2500.example&page_size=1000" |
	python3 -c 'import sys,json
n=0
for line in sys.stdin:
    m=json.loads(line); r=m.get("result",{}); n+=1
    print("  message %d: %d rows, cost %s" % (n, len(r.get("backlinks",[])), json.dumps(r.get("cost"))))'

echo "== stopping linkgate (flushes the spans); its request log line:"
kill -TERM "$linkgate_pid"
wait "$linkgate_pid" || true
grep '"msg":"request"' "$WORK/linkgate.log" | grep StreamBacklinks || true

echo "== GET http://$QUERY/api/traces?service=linkgate"
for _ in $(seq 1 50); do
	curl -fsS "http://$QUERY/api/traces?service=linkgate&limit=20&lookback=1h" >"$WORK/traces.json"
	grep -q "$trace_id" "$WORK/traces.json" && break
	sleep 0.2
done
python3 - "$WORK/traces.json" "$trace_id" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))["data"]
trace = next((t for t in data if t["traceID"] == sys.argv[2]), None)
if trace is None:
    sys.exit("trace %s not found in Jaeger" % sys.argv[2])
spans = trace["spans"]
ids = {s["spanID"] for s in spans}
kids = {}
for s in spans:
    parent = next((r["spanID"] for r in s.get("references", []) if r["refType"] == "CHILD_OF"), "")
    kids.setdefault(parent if parent in ids else "", []).append(s)
print("trace %s: %d spans" % (trace["traceID"], len(spans)))
def walk(parent, depth):
    for s in sorted(kids.get(parent, []), key=lambda s: s["startTime"]):
        tags = {t["key"]: t["value"] for t in s["tags"]}
        attrs = " ".join("%s=%s" % (k[len("linkgate."):], v) for k, v in sorted(tags.items()) if k.startswith("linkgate."))
        events = ",".join(l["fields"][0]["value"] for l in s.get("logs", []) if l.get("fields") and l["fields"][0]["key"] == "event")
        print("%-70s %9.2f ms  %s%s" % ("  " * depth + "%s: %s" % (trace["processes"][s["processID"]]["serviceName"], s["operationName"]),
              s["duration"] / 1000, attrs, ("  events=" + events) if events else ""))
        walk(s["spanID"], depth + 1)
walk("", 0)
EOF

if [[ $KEEP == --keep ]]; then
	echo "== Jaeger keeps running: http://$QUERY/trace/$trace_id (Ctrl-C to stop)"
	pids=("${pids[@]/$jaeger_pid/}")
	trap - EXIT
	wait "$jaeger_pid"
fi
