package service

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/scheduler"
	"github.com/linkgate/linkgate/upstream"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
	"github.com/linkgate/linkgate/upstream/ahrefsspec"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const simKey = "test-upstream-key"

var loadSpec = sync.OnceValues(ahrefsspec.Load)

// harness is the service over the simulator (through the real HTTP client)
// and a memory ledger, served over an in-memory gRPC connection.
type harness struct {
	sim       *ahrefssim.Server
	simURL    string
	ledger    *quota.Ledger
	sched     *scheduler.Scheduler // nil: the server's default
	server    *BacklinksServer
	backlinks v1.BacklinksServiceClient
	quota     v1.QuotaServiceClient
	clock     *clock.Fake
}

type harnessOptions struct {
	poolLimit int64
	pageRows  int
	tenants   map[string]int64
	// rpm > 0 puts the key's rate in front of the upstream (a scheduler
	// with an in-process limiter); rowCap caps the simulator's rows per
	// request; meter receives the service's metrics.
	rpm     float64
	rowCap  int
	meter   metric.MeterProvider
	noCache bool // turn the page cache off
	// sim edits the simulator's configuration (its collation knobs).
	sim func(*ahrefssim.Config)
	log *slog.Logger // the service's logger; nil discards
	// trustCollation: Config.TrustCollation.
	trustCollation bool
	// wrapSched wraps the scheduler (with rpm > 0) to watch its calls.
	wrapSched func(paging.Scheduler) paging.Scheduler
}

func newHarness(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	h := &harness{clock: clock.NewFake(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))}
	simCfg := ahrefssim.Config{Keys: []string{simKey}, RowCap: opts.rowCap, Logger: slog.New(slog.DiscardHandler)}
	if opts.sim != nil {
		opts.sim(&simCfg)
	}
	h.sim = ahrefssim.New(simCfg)
	// Every request the service sends upstream is checked against Ahrefs'
	// OpenAPI document on its way to the simulator.
	spec, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	simServer := httptest.NewServer(spec.Checking(h.sim, func(err error) {
		t.Errorf("a request outside Ahrefs' contract: %v", err)
	}))
	t.Cleanup(simServer.Close)
	h.simURL = simServer.URL
	client, err := upstream.New(upstream.Config{BaseURL: simServer.URL, Key: simKey, KeepBody: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if opts.poolLimit == 0 {
		opts.poolLimit = 1e12
	}
	h.ledger, err = quota.New(quota.NewMemoryStore(), quota.Config{
		Budget: "test", PoolLimit: opts.poolLimit, ResetDay: 1, Lease: time.Minute, Tenants: opts.tenants,
	})
	if err != nil {
		t.Fatal(err)
	}
	// A first start: the period is opened from the upstream's usage,
	// nothing yet (read here without a request, which tests count).
	if _, err := h.ledger.Reconcile(context.Background(), unusedKey{}); err != nil {
		t.Fatal(err)
	}
	tokens, err := paging.NewTokens([]byte("0123456789abcdef0123456789abcdef"), time.Hour, h.clock)
	if err != nil {
		t.Fatal(err)
	}
	if opts.log == nil {
		opts.log = slog.New(slog.DiscardHandler)
	}
	cfg := Config{Upstream: client, Ledger: h.ledger, Tokens: tokens,
		UpstreamPageRows: opts.pageRows, Logger: opts.log, TrustCollation: opts.trustCollation}
	if opts.meter != nil {
		if cfg.Telemetry, err = NewTelemetry(TelemetryConfig{MeterProvider: opts.meter}); err != nil {
			t.Fatal(err)
		}
	}
	if opts.rpm > 0 {
		sched, err := scheduler.New(scheduler.Config{Limiter: scheduler.NewLocalLimiter(opts.rpm, nil), Ledger: h.ledger,
			Cache: scheduler.NewMemoryCache(8<<20, time.Minute, nil)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sched.Close() })
		h.sched, cfg.Scheduler = sched, sched
		if opts.wrapSched != nil {
			cfg.Scheduler = opts.wrapSched(sched)
		}
	}
	if opts.noCache {
		cfg.PageCacheBytes = -1
	}
	h.server, err = NewBacklinksServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.server.Close() })
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(ServerOptions(ServerConfig{Logger: slog.New(slog.DiscardHandler)})...)
	v1.RegisterBacklinksServiceServer(srv, h.server)
	v1.RegisterQuotaServiceServer(srv, NewQuotaServer(h.ledger))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.backlinks = v1.NewBacklinksServiceClient(conn)
	h.quota = v1.NewQuotaServiceClient(conn)
	return h
}

// used is the pool's spend and reservations in the ledger.
func (h *harness) used(t testing.TB) (used, reserved int64) {
	t.Helper()
	u, err := h.ledger.Usage(context.Background(), DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	return u.Pool.Used, u.Pool.Reserved
}

// unusedKey is the usage of an upstream key nothing has spent.
type unusedKey struct{}

func (unusedKey) UpstreamUsage(context.Context) (int64, time.Time, error) { return 0, time.Time{}, nil }
