package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// Keys of the tests' tenants: distinctive, so that a search of logs and
// responses for them cannot match anything else.
const (
	upstreamKey = "UPSTREAM-SECRET-7f3a9c2e51"
	keyA        = "CALLER-A-SECRET-0b8d44e1f2"
	keyB        = "CALLER-B-SECRET-93ac10de77"
	keyAdmin    = "CALLER-ADMIN-SECRET-5e2f8a"
)

func sum(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

// tenantsJSON is the tests' tenants file: reader tenants a (limit 2000,
// also reachable by the client certificate "client-a") and b, and admin.
func tenantsJSON() string {
	return `{"tenants": [
  {"name": "a", "role": "reader", "limit": 2000, "keys": [{"sha256": "` + sum(keyA) + `"}], "cert_names": ["client-a"]},
  {"name": "b", "role": "reader", "keys": [{"sha256": "` + sum(keyB) + `"}]},
  {"name": "ops", "role": "admin", "keys": [{"sha256": "` + sum(keyAdmin) + `"}]}
]}`
}

// simulator serves the upstream simulator accepting upstreamKey.
func simulator(t testing.TB, cfg ahrefssim.Config) string {
	t.Helper()
	cfg.Keys = []string{upstreamKey}
	srv := httptest.NewServer(ahrefssim.New(cfg))
	t.Cleanup(srv.Close)
	return srv.URL
}

// testConfig is a server on random loopback ports with its own data
// directory, the tenants file, and the simulator as its upstream.
func testConfig(t testing.TB, upstreamURL string) config {
	t.Helper()
	dir := t.TempDir()
	cfg := defaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = dir
	cfg.UpstreamURL, cfg.UpstreamKey = upstreamURL, upstreamKey
	cfg.UpstreamRPM = 1e6
	cfg.ReconcileEvery, cfg.DrainDelay, cfg.ShutdownTimeout = 0, 0, 5*time.Second
	cfg.LogLevel = slog.LevelDebug
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.TenantsFile = filepath.Join(dir, "tenants.json")
	if err := os.WriteFile(cfg.TenantsFile, []byte(tenantsJSON()), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startTest starts the real server and stops it at the end of the test;
// the log goes to the returned buffer.
func startTest(t testing.TB, cfg config) (*server, *logsink.Buffer) {
	t.Helper()
	logs := &logsink.Buffer{}
	s, err := start(t.Context(), cfg, newLogger(cfg, logs))
	if err != nil {
		t.Fatalf("start: %v\nlog:\n%s", err, logs)
	}
	t.Cleanup(func() {
		if err := s.shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s, logs
}

// clients are gRPC clients of a test server.
type clients struct {
	backlinks v1.BacklinksServiceClient
	quota     v1.QuotaServiceClient
	conn      *grpc.ClientConn
}

func dial(t testing.TB, addr string, opts ...grpc.DialOption) clients {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return clients{backlinks: v1.NewBacklinksServiceClient(conn), quota: v1.NewQuotaServiceClient(conn), conn: conn}
}

// as is a context carrying an API key, as a gRPC caller sends it.
func as(ctx context.Context, key string) context.Context {
	if key == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// restCall calls the REST API with an optional key and returns the status and
// body.
func restCall(t testing.TB, c *http.Client, method, url, key, body string) (int, string, http.Header) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// field reads a JSON path like "tenant.used" from a body.
func field(t testing.TB, body string, path ...string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, body)
	}
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func mustDate(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

// clip shortens what a test repeats in its messages.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "…"
}
