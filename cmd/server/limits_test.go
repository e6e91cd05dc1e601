package main

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestMissingUpstreamURLIsAnError: with authentication on, a forgotten
// LINKGATE_UPSTREAM_URL stops the start, naming the variable, rather than
// serving the simulator's synthetic data; the simulator is there by name.
func TestMissingUpstreamURLIsAnError(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, "")
	env := map[string]string{"LINKGATE_TENANTS_FILE": cfg.TenantsFile, "LINKGATE_DATA_DIR": dir,
		"LINKGATE_GRPC_ADDR": "0.0.0.0:0", "LINKGATE_HTTP_ADDR": "0.0.0.0:0"}
	_, err := loadConfig(nil, func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), "LINKGATE_UPSTREAM_URL is not set") {
		t.Fatalf("no upstream URL with authentication on: %v", err)
	}
	env["LINKGATE_UPSTREAM_URL"] = "simulator"
	if _, err := loadConfig(nil, func(k string) string { return env[k] }); err != nil {
		t.Fatalf("the simulator by name: %v", err)
	}
	delete(env, "LINKGATE_UPSTREAM_URL")
	delete(env, "LINKGATE_TENANTS_FILE")
	env["LINKGATE_GRPC_ADDR"], env["LINKGATE_HTTP_ADDR"] = "127.0.0.1:0", "127.0.0.1:0"
	if _, err := loadConfig(nil, func(k string) string { return env[k] }); err != nil {
		t.Fatalf("the embedded default: %v", err)
	}
}

func TestStreamBoundFromMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want int
	}{
		{map[string]string{"LINKGATE_MEMORY_LIMIT": "512Mi"}, 512},
		{map[string]string{"LINKGATE_MEMORY_LIMIT": "2GiB"}, 2048},
		{map[string]string{"LINKGATE_MEMORY_LIMIT": "512Mi", "LINKGATE_MAX_STREAMS": "3"}, 3},
	} {
		cfg, err := loadConfig(nil, func(k string) string { return tc.env[k] })
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.maxStreams(); got != tc.want {
			t.Errorf("%v: %d streams, want %d", tc.env, got, tc.want)
		}
	}
	if _, err := loadConfig(nil, func(k string) string { return map[string]string{"LINKGATE_MEMORY_LIMIT": "lots"}[k] }); err == nil {
		t.Error("LINKGATE_MEMORY_LIMIT=lots accepted")
	}
	if defaultConfig().MetricsAddr != defaultMetricsAddr || !isLoopback(defaultMetricsAddr) {
		t.Errorf("the default metrics listener %q is not on loopback", defaultConfig().MetricsAddr)
	}
}

// TestGlobalStreamBoundOverGRPC: streams of different tenants share the
// server's bound; past it a stream is RESOURCE_EXHAUSTED with a retry
// hint, reason SERVER_BUSY.
func TestGlobalStreamBoundOverGRPC(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.MaxStreams = 1
	s, _ := startTest(t, cfg)
	c := dial(t, s.grpcAddr)
	held, err := c.backlinks.StreamBacklinks(as(t.Context(), keyB), &v1.StreamBacklinksRequest{Target: "sized-1000000.example"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Recv(); err != nil {
		t.Fatal(err)
	}
	refused, err := c.backlinks.StreamRefDomains(as(t.Context(), keyAdmin), &v1.StreamRefDomainsRequest{Target: "example.com"})
	if err == nil {
		_, err = refused.Recv()
	}
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "server is busy") || !hasRetryInfo(st) {
		t.Errorf("past the bound: %v %q (retry hint %v)", st.Code(), st.Message(), hasRetryInfo(st))
	}
}

// TestMalformedGRPCIsACallerError: invalid UTF-8 in a unary and a stream
// request is INVALID_ARGUMENT naming the field, logged at INFO as the
// request's line, never at ERROR.
func TestMalformedGRPCIsACallerError(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.LogLevel = 0 // info
	s, logs := startTest(t, cfg)
	c := dial(t, s.grpcAddr)
	for _, m := range grpcMethods()[:2] { // ListBacklinks, StreamBacklinks
		msg := m.valid()
		raw := withInvalidUTF8(t, msg, msg.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name("filter")))
		st := status.Convert(invokeRaw(as(t.Context(), keyB), c.conn, m, nil, raw))
		if st.Code() != codes.InvalidArgument || violationField(st) != "filter" {
			t.Errorf("%s: %v %q", m.name, st.Code(), st.Message())
		}
	}
	text := logs.String()
	if strings.Contains(text, `"level":"ERROR"`) {
		t.Errorf("logged at ERROR:\n%s", text)
	}
	for _, method := range []string{"ListBacklinks", "StreamBacklinks"} {
		if !strings.Contains(text, `"method":"/linkgate.v1.BacklinksService/`+method+`","code":"InvalidArgument"`) {
			t.Errorf("no request line for %s with InvalidArgument:\n%s", method, firstLines(text, 40))
		}
	}
}

func hasRetryInfo(st *status.Status) bool {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
			return true
		}
	}
	return false
}
