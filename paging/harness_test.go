package paging

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/scheduler"
	"github.com/linkgate/linkgate/upstream"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const simKey = "test-upstream-key"

// tenant is the tenant of the harness' runs.
const tenant = "default"

// harness is the engine over the simulator (through the real HTTP client),
// a memory ledger and a scheduler without a rate: no gRPC anywhere.
type harness struct {
	sim    *ahrefssim.Server
	ledger *quota.Ledger
	tokens *Tokens
	engine *Engine
	clock  *clock.Fake
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{clock: clock.NewFake(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))}
	h.sim = ahrefssim.New(ahrefssim.Config{Keys: []string{simKey}, Logger: slog.New(slog.DiscardHandler)})
	simServer := httptest.NewServer(h.sim)
	t.Cleanup(simServer.Close)
	client, err := upstream.New(upstream.Config{BaseURL: simServer.URL, Key: simKey, KeepBody: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	h.ledger, err = quota.New(quota.NewMemoryStore(), quota.Config{Budget: "test", PoolLimit: 1e12, ResetDay: 1, Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ledger.Reconcile(context.Background(), unusedKey{}); err != nil {
		t.Fatal(err)
	}
	h.tokens, err = NewTokens([]byte("0123456789abcdef0123456789abcdef"), time.Hour, h.clock)
	if err != nil {
		t.Fatal(err)
	}
	sched, err := scheduler.New(scheduler.Config{Limiter: scheduler.Unlimited{}, Ledger: h.ledger,
		Cache: scheduler.NewMemoryCache(8<<20, time.Minute, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sched.Close() })
	h.engine, err = New(Config{Upstream: client, Scheduler: sched, Ledger: h.ledger, Tokens: h.tokens,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// used is the pool's spend and reservations in the ledger.
func (h *harness) used(t testing.TB) (used, reserved int64) {
	t.Helper()
	u, err := h.ledger.Usage(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	return u.Pool.Used, u.Pool.Reserved
}

// unusedKey is the usage of an upstream key nothing has spent.
type unusedKey struct{}

func (unusedKey) UpstreamUsage(context.Context) (int64, time.Time, error) { return 0, time.Time{}, nil }
