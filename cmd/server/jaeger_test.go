package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/internal/poll"
	"github.com/linkgate/linkgate/service"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestJaegerOTLP exports the trace of a REST streaming call over OTLP/gRPC,
// configured only by OTEL_* variables as in production, to a real Jaeger v2
// (LINKGATE_JAEGER_BIN, which make test sets to the binary
// scripts/jaeger-build.sh keeps in the user's cache) and reads it back from
// Jaeger's query API. It skips without Jaeger, except in CI
// (LINKGATE_REQUIRE_JAEGER=1), where it must run.
func TestJaegerOTLP(t *testing.T) {
	bin := os.Getenv("LINKGATE_JAEGER_BIN")
	if bin == "" {
		const why = "LINKGATE_JAEGER_BIN is not set: make test sets it once scripts/install-test-deps.sh has built Jaeger, " +
			"or set it to the output of scripts/jaeger-build.sh"
		if os.Getenv("LINKGATE_REQUIRE_JAEGER") == "1" {
			t.Fatal("LINKGATE_REQUIRE_JAEGER=1 but " + why)
		}
		t.Skip(why)
	}
	ports := freePorts(t, 4)
	otlp, query := ports[0], ports[2]
	cmd := exec.Command(bin, "--config", filepath.Join("..", "..", "scripts", "jaeger-config.yaml"))
	// OTEL_TRACES_EXPORTER=none: Jaeger would otherwise trace itself to
	// the default 127.0.0.1:4317.
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "JAEGER_OTLP_GRPC="+otlp, "JAEGER_OTLP_HTTP="+ports[1],
		"JAEGER_QUERY_HTTP="+query, "JAEGER_QUERY_GRPC="+ports[3])
	var jlog logsink.Buffer
	cmd.Stdout, cmd.Stderr = &jlog, &jlog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("jaeger output:\n%s", jlog.String())
		}
	})
	poll.Until(t, 30*time.Second, 200*time.Millisecond, "Jaeger to answer", func() bool {
		resp, err := http.Get("http://" + query + "/api/services")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})

	// The production path: no override, providers from the environment.
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+otlp)
	t.Setenv("OTEL_SERVICE_NAME", "linkgate")
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	s, err := start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var raw [16]byte
	rand.Read(raw[:])
	tid, _ := trace.TraceIDFromHex(hex.EncodeToString(raw[:]))
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: knownParent().SpanID(), TraceFlags: trace.FlagsSampled, Remote: true})
	if n := streamREST(t, s, "target=sized-2500.example&page_size=1000", parent); n != 3 {
		t.Fatalf("got %d stream messages, want 3", n)
	}
	if err := s.shutdown(); err != nil { // flushes the batch exporter
		t.Fatal(err)
	}

	var tr jaegerTrace
	poll.Until(t, 20*time.Second, 200*time.Millisecond, "the spans in Jaeger", func() bool {
		tr = fetchJaegerTrace(t, query, tid.String())
		// REST, gRPC client and server, and a page and an upstream span
		// for each of the three pages.
		return len(tr.Spans) >= 9
	})
	tree := tr.tree()
	t.Logf("trace %s in Jaeger:\n%s", tid, tree)
	ops := map[string]int{}
	for _, sp := range tr.Spans {
		ops[sp.OperationName]++
		if svc := tr.Processes[sp.ProcessID].ServiceName; svc != "linkgate" {
			t.Errorf("span %q of service %q", sp.OperationName, svc)
		}
	}
	for op, n := range map[string]int{
		"GET /v1/backlinks:stream": 1, "linkgate.v1.BacklinksService/StreamBacklinks": 2,
		service.PageSpanName: 3, "ahrefs GET /v3/site-explorer/all-backlinks": 3,
	} {
		if ops[op] != n {
			t.Errorf("Jaeger has %d spans %q, want %d", ops[op], op, n)
		}
	}
	if b := fmt.Sprint(tr); strings.Contains(b, upstreamKey) || strings.Contains(b, keyB) {
		t.Error("the trace in Jaeger carries a key")
	}
}

// jaegerTrace is the part of Jaeger's query API answer that the test reads.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		StartTime int64  `json:"startTime"` // µs
		Duration  int64  `json:"duration"`  // µs
		ProcessID string `json:"processID"`
		Tags      []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

func fetchJaegerTrace(t *testing.T, query, id string) jaegerTrace {
	resp, err := http.Get("http://" + query + "/api/traces/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Data []jaegerTrace }
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil || len(body.Data) == 0 {
		return jaegerTrace{}
	}
	return body.Data[0]
}

// tree prints the spans indented under their parents, in start order, with
// service, operation, duration and linkgate's page attributes.
func (tr jaegerTrace) tree() string {
	children := map[string][]int{}
	for i, sp := range tr.Spans {
		parent := ""
		for _, r := range sp.References {
			if r.RefType == "CHILD_OF" {
				parent = r.SpanID
			}
		}
		children[parent] = append(children[parent], i)
	}
	ids := map[string]bool{}
	for _, sp := range tr.Spans {
		ids[sp.SpanID] = true
	}
	var b strings.Builder
	var walk func(parent string, depth int)
	walk = func(parent string, depth int) {
		idx := children[parent]
		sort.Slice(idx, func(a, b int) bool { return tr.Spans[idx[a]].StartTime < tr.Spans[idx[b]].StartTime })
		for _, i := range idx {
			sp := tr.Spans[i]
			var extra []string
			for _, tag := range sp.Tags {
				if strings.HasPrefix(tag.Key, "linkgate.") || tag.Key == "span.kind" {
					extra = append(extra, fmt.Sprintf("%s=%v", tag.Key, tag.Value))
				}
			}
			fmt.Fprintf(&b, "%s%s %s %s %s\n", strings.Repeat("  ", depth), tr.Processes[sp.ProcessID].ServiceName,
				sp.OperationName, time.Duration(sp.Duration)*time.Microsecond, strings.Join(extra, " "))
			walk(sp.SpanID, depth+1)
		}
	}
	// Roots: spans whose parent is not in the trace (the caller's span).
	for parent := range children {
		if !ids[parent] {
			walk(parent, 0)
		}
	}
	return b.String()
}

func freePorts(t *testing.T, n int) []string {
	var addrs []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return addrs
}
