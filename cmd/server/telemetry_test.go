package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/service"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// testServer starts the real server as testConfig does (authentication on,
// the simulator as an external upstream with upstreamKey), with spans going
// to an in-memory exporter. stop shuts the server down; it is also a
// cleanup.
func testServer(t *testing.T, mutate func(*config)) (s *server, spans *tracetest.InMemoryExporter, logs *logsink.Buffer, stop func()) {
	t.Helper()
	spans = tracetest.NewInMemoryExporter()
	// A syncer exports each span as it ends: no flush to wait for.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })

	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.otel = &otelOverride{TracerProvider: tp}
	if mutate != nil {
		mutate(&cfg)
	}
	logs = &logsink.Buffer{}
	s, err := start(context.Background(), cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := s.shutdown(); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return s, spans, logs, stop
}

// streamREST makes a REST streaming call as tenant b (keyB), with a
// traceparent header when parent is valid, and returns the number of result
// lines.
func streamREST(t *testing.T, s *server, query string, parent trace.SpanContext) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.httpAddr+"/v1/backlinks:stream?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+keyB)
	if parent.IsValid() {
		req.Header.Set("traceparent", "00-"+parent.TraceID().String()+"-"+parent.SpanID().String()+"-01")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), `{"error"`) {
			t.Fatalf("stream failed: %s", sc.Text())
		}
		n++
	}
	return n
}

func knownParent() trace.SpanContext {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

func attrs(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// TestTraceRESTStreamToUpstream follows one REST streaming call with a
// traceparent header: one trace from the REST span through the gateway's
// gRPC client span and the gRPC server span to a linkgate.page span per
// upstream page and the upstream client's HTTP spans below them, with the
// attributes and events of each page, the trace id on the request log line,
// and no trace of the upstream key anywhere.
func TestTraceRESTStreamToUpstream(t *testing.T) {
	s, exp, logs, stop := testServer(t, nil)
	parent := knownParent()
	if n := streamREST(t, s, "target=sized-2500.example&page_size=1000", parent); n != 3 {
		t.Fatalf("got %d stream messages, want 3", n)
	}
	stop() // every span has ended once the server has stopped
	spans := exp.GetSpans()

	byName := map[string][]tracetest.SpanStub{}
	pageIDs := map[trace.SpanID]bool{}
	for _, sp := range spans {
		byName[sp.Name] = append(byName[sp.Name], sp)
		if sp.Name == service.PageSpanName {
			pageIDs[sp.SpanContext.SpanID()] = true
		}
	}
	one := func(name string) tracetest.SpanStub {
		t.Helper()
		if len(byName[name]) != 1 {
			var names []string
			for _, sp := range spans {
				names = append(names, sp.Name)
			}
			t.Fatalf("want one span %q, got %d among %q", name, len(byName[name]), names)
		}
		return byName[name][0]
	}
	inTrace := func(sp tracetest.SpanStub) {
		t.Helper()
		if got := sp.SpanContext.TraceID(); got != parent.TraceID() {
			t.Errorf("span %q: trace id %s, want the traceparent's %s", sp.Name, got, parent.TraceID())
		}
	}

	rest := one("GET /v1/backlinks:stream")
	inTrace(rest)
	if rest.Parent.SpanID() != parent.SpanID() || !rest.Parent.IsRemote() {
		t.Errorf("REST span's parent is %v, want the remote traceparent", rest.Parent)
	}
	const method = "linkgate.v1.BacklinksService/StreamBacklinks"
	var rpcServer, rpcClient tracetest.SpanStub
	for _, sp := range byName[method] {
		switch sp.SpanKind {
		case trace.SpanKindServer:
			rpcServer = sp
		case trace.SpanKindClient:
			rpcClient = sp
		}
	}
	inTrace(rpcClient)
	inTrace(rpcServer)
	if rpcClient.Parent.SpanID() != rest.SpanContext.SpanID() || rpcServer.Parent.SpanID() != rpcClient.SpanContext.SpanID() {
		t.Errorf("want REST → gRPC client → gRPC server, got parents %s, %s", rpcClient.Parent.SpanID(), rpcServer.Parent.SpanID())
	}

	pages := byName[service.PageSpanName]
	if len(pages) != 3 {
		t.Fatalf("got %d %s spans, want 3", len(pages), service.PageSpanName)
	}
	seen := map[int64]bool{}
	for _, sp := range pages {
		inTrace(sp)
		if sp.Parent.SpanID() != rpcServer.SpanContext.SpanID() {
			t.Errorf("page span's parent %s is not the gRPC server span", sp.Parent.SpanID())
		}
		a := attrs(sp.Attributes)
		if a[service.AttrDataset].AsString() != "backlinks" || a[service.AttrTenant].AsString() != "b" {
			t.Errorf("page span dataset/tenant: %v", sp.Attributes)
		}
		n := a[service.AttrPage].AsInt64()
		seen[n] = true
		rows, reserved, charged := a[service.AttrRows].AsInt64(), a[service.AttrUnitsReserved].AsInt64(), a[service.AttrUnitsCharged].AsInt64()
		if rows <= 0 || reserved <= 0 || charged <= 0 || charged > reserved {
			t.Errorf("page %d: rows %d, reserved %d, charged %d", n, rows, reserved, charged)
		}
		if c := a[service.AttrCache].AsString(); c == "" || c == "unknown" {
			t.Errorf("page %d: cache %q", n, c)
		}
		var events []string
		for _, e := range sp.Events {
			if e.Name != "linkgate.rate_limit_wait" { // a wait for the key's rate slot, when there was one
				events = append(events, e.Name)
			}
		}
		if strings.Join(events, ",") != "linkgate.reserve,linkgate.settle" {
			t.Errorf("page %d events %q, want reserve then settle", n, events)
		}
	}
	if !seen[1] || !seen[2] || !seen[3] {
		t.Errorf("page numbers %v, want 1, 2, 3", seen)
	}

	upstreamSpans := 0
	for _, sp := range spans {
		if sp.SpanKind == trace.SpanKindClient && strings.HasPrefix(sp.Name, "ahrefs GET /v3/site-explorer/all-backlinks") {
			upstreamSpans++
			inTrace(sp)
			if !pageIDs[sp.Parent.SpanID()] {
				t.Errorf("upstream span %q is not a child of a page span", sp.Name)
			}
		}
	}
	if upstreamSpans != 3 {
		t.Errorf("got %d upstream client spans, want 3", upstreamSpans)
	}

	// The secret search: no span, event or resource attribute carries the
	// upstream key, the caller's key or an Authorization header.
	for _, sp := range spans {
		all := append(append([]attribute.KeyValue{}, sp.Attributes...), sp.Resource.Attributes()...)
		for _, e := range sp.Events {
			all = append(all, e.Attributes...)
		}
		for _, kv := range all {
			v := kv.Value.Emit()
			if strings.Contains(v, upstreamKey) || strings.Contains(v, keyB) || strings.Contains(strings.ToLower(string(kv.Key)), "authorization") || strings.Contains(v, "Bearer") {
				t.Errorf("span %q attribute %s=%q leaks a credential", sp.Name, kv.Key, v)
			}
		}
	}

	var line struct {
		Method, TraceID, Tenant string
		Rows, Units             int64
	}
	found := false
	for _, l := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != "request" || m["method"] != "/"+method {
			continue
		}
		found = true
		line.TraceID, _ = m["trace_id"].(string)
		line.Tenant, _ = m["tenant"].(string)
		r, _ := m["rows"].(float64)
		u, _ := m["units"].(float64)
		line.Rows, line.Units = int64(r), int64(u)
	}
	if !found {
		t.Fatalf("no request log line for %s in\n%s", method, logs)
	}
	if line.TraceID != parent.TraceID().String() || line.Tenant != "b" || line.Rows != 2500 || line.Units <= 0 {
		t.Errorf("request log line: %+v", line)
	}
	if strings.Contains(logs.String(), upstreamKey) || strings.Contains(logs.String(), keyB) {
		t.Error("the logs carry a key")
	}
}

// TestMetricsAfterStream scrapes /metrics after a streamed request, the
// same request again (served from linkgate's page cache) and a request
// denied by the budget: the unit, row, page, upstream, denial and
// budget series are there with their tenant and dataset labels.
func TestMetricsAfterStream(t *testing.T) {
	s, exp, _, _ := testServer(t, func(c *config) { c.BudgetUnits = 20_000 })
	if n := streamREST(t, s, "target=sized-1500.example&page_size=1000", trace.SpanContext{}); n != 2 {
		t.Fatalf("got %d stream messages, want 2", n)
	}
	// The same again: served from linkgate's page cache, free.
	if n := streamREST(t, s, "target=sized-1500.example&page_size=1000", trace.SpanContext{}); n != 2 {
		t.Fatalf("got %d stream messages the second time, want 2", n)
	}
	// A stream of 5,000 rows asks for more than the budget has left: denied.
	restCall(t, nil, http.MethodGet, "http://"+s.httpAddr+"/v1/backlinks:stream?target=sized-5000.example&select=url_from,url_to,domain_rating_source,traffic&max_rows=5000", keyB, "")

	// With authentication on, /metrics is on its own listener only.
	if code, _, _ := restCall(t, nil, http.MethodGet, "http://"+s.httpAddr+"/metrics", keyAdmin, ""); code != http.StatusNotFound {
		t.Errorf("/metrics on the REST listener with authentication on: %d, want 404", code)
	}
	resp, err := http.Get("http://" + s.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	text := string(body)
	labels := `dataset="backlinks",`
	for _, want := range []struct{ name, labels string }{
		{"linkgate_units_reserved_total", labels},
		{"linkgate_units_charged_total", labels},
		{"linkgate_units_refunded_total", labels},
		{"linkgate_rows_total", labels},
		{"linkgate_pages_total", `cache="miss"`},
		{"linkgate_pages_total", `cache="linkgate"`},
		{"linkgate_quota_denials_total", `scope="`},
		{"linkgate_page_duration_seconds_bucket", labels},
		{"linkgate_streams_active", labels},
		{"linkgate_upstream_requests_total", `endpoint="/v3/site-explorer/all-backlinks",`},
		{"linkgate_upstream_duration_seconds_bucket", `status="200"`},
		{"linkgate_budget_remaining", `scope="pool"`},
		{"linkgate_budget_remaining", `tenant="b"`},
	} {
		if !hasSeries(text, want.name, want.labels) {
			t.Errorf("no series %s{…%s…} in /metrics", want.name, want.labels)
		}
	}
	for _, name := range []string{"linkgate_units_reserved_total", "linkgate_units_charged_total", "linkgate_rows_total"} {
		if !hasSeries(text, name, `tenant="b"`) {
			t.Errorf("%s has no tenant label", name)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grepLines(text, "linkgate_"))
	}

	// The denied page's span says why, and failed.
	denied := false
	for _, sp := range exp.GetSpans() {
		for _, e := range sp.Events {
			if sp.Name == service.PageSpanName && e.Name == "linkgate.denied" {
				denied = sp.Status.Code == codes.Error && attrs(e.Attributes)["scope"].AsString() != ""
			}
		}
	}
	if !denied {
		t.Error("no failed linkgate.page span with a linkgate.denied event and its scope")
	}
}

func hasSeries(text, name, labels string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, name+"{") && strings.Contains(l, labels) {
			return true
		}
	}
	return false
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
