package quota

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/redistest"
)

// upstreamCounter is the upstream's own count of what it charged.
type upstreamCounter struct{ used atomic.Int64 }

func (u *upstreamCounter) UpstreamUsage(context.Context) (int64, time.Time, error) {
	return u.used.Load(), time.Time{}, nil
}

// reconciler runs l's reconciliations when they are asked for, as
// cmd/server's loop does, until ctx ends.
func reconciler(ctx context.Context, t *testing.T, l *Ledger, up UpstreamUsage) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-l.ReconcileRequests():
				if _, err := l.Reconcile(ctx, up); err != nil && ctx.Err() == nil {
					t.Logf("reconcile: %v", err)
					time.Sleep(20 * time.Millisecond)
					l.RequestReconcile()
				}
			}
		}
	})
	return &wg
}

// TestRedisRestartedEmptyUnderLoad: two replicas, six callers spending
// pages of 6,006 units of a 60,000 budget; Redis is killed and restarted
// without its data when 48,048 are spent. The ledger is unknown until
// rebuilt from the upstream's usage, so the upstream never charges more
// than the budget and the pages that were in flight; an admin's tenant
// limit and that tenant's spend survive; pages in flight are recorded.
func TestRedisRestartedEmptyUnderLoad(t *testing.T) {
	const page, budget = 6006, 60_000
	srv := redistest.Start(t)
	up := &upstreamCounter{}
	var tenantSpend sync.Map // tenant -> *atomic.Int64, as the upstream charged it
	charged := func(tenant string) *atomic.Int64 {
		v, _ := tenantSpend.LoadOrStore(tenant, new(atomic.Int64))
		return v.(*atomic.Int64)
	}
	cfg := Config{Budget: uniqueBudget(), PoolLimit: budget, ResetDay: 1, Lease: time.Minute}
	var replicas []*Ledger
	for range 2 {
		l, err := New(NewRedisStore(srv.Client()), cfg)
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := replicas[0].Reconcile(ctx, up); err != nil { // the first start
		t.Fatal(err)
	}
	limit := int64(2 * page)
	if err := replicas[0].SetTenantLimit(ctx, "capped", &limit); err != nil {
		t.Fatal(err)
	}
	for _, l := range replicas {
		if _, err := l.AllUsage(ctx); err != nil { // every replica has read the override
			t.Fatal(err)
		}
	}
	var wgs []*sync.WaitGroup
	for _, l := range replicas {
		wgs = append(wgs, reconciler(ctx, t, l, up))
	}

	// spend is one caller: reserve, the upstream charges, settle. A page
	// reserved before the loss and finished after it was in flight at the
	// loss.
	var lost atomic.Bool
	var inFlightAtLoss atomic.Int64
	spend := func(l *Ledger, tenant string, stop func() bool) {
		for !stop() {
			r, err := l.Reserve(ctx, tenant, "backlinks", page)
			var de *DeniedError
			switch {
			case errors.As(err, &de) && de.Scope == ScopePool && !de.HeldInFlight():
				return // the budget is spent
			case err != nil:
				time.Sleep(2 * time.Millisecond) // denied for now, unavailable, or rebuilding
				continue
			}
			before := !lost.Load()
			up.used.Add(page)
			charged(tenant).Add(page)
			time.Sleep(time.Millisecond) // the page's round trip
			if before && lost.Load() {
				inFlightAtLoss.Add(1)
			}
			if _, err := l.Finish(ctx, r, Outcome{Actual: page}); err != nil && !errors.Is(err, ErrUnavailable) {
				t.Errorf("Finish: %v", err)
			}
		}
	}
	// The capped tenant spends its limit first; then five callers spend
	// the pool and the capped one keeps asking.
	spend(replicas[0], "capped", func() bool { return charged("capped").Load() >= limit })
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() { spend(replicas[i%2], "bulk", func() bool { return false }) })
	}
	wg.Go(func() { spend(replicas[1], "capped", func() bool { return false }) })
	for up.used.Load() < 8*page {
		time.Sleep(time.Millisecond)
	}
	lost.Store(true)
	srv.Restart()
	wg.Wait()
	cancel()
	for _, w := range wgs {
		w.Wait()
	}

	// Pages in flight at the loss may be charged on top, no more.
	if max := budget + inFlightAtLoss.Load()*page; up.used.Load() > max {
		t.Fatalf("the upstream charged %d of a %d budget (at most %d with %d pages in flight at the loss)",
			up.used.Load(), budget, max, inFlightAtLoss.Load())
	}
	if c := charged("capped").Load(); c > limit+page {
		t.Fatalf("the capped tenant was charged %d: its limit of %d (and one page in flight) did not survive the loss", c, limit)
	}
	// The ledger holds what the upstream charged, or more by what was in
	// flight when a reconciliation confirmed a provisional charge.
	if _, err := replicas[0].Reconcile(context.Background(), up); err != nil {
		t.Fatal(err)
	}
	rep := mustReport(t, replicas[0])
	if u := up.used.Load(); rep.Pool.Used < u || rep.Pool.Used > u+6*page || rep.Pool.Reserved != 0 {
		t.Fatalf("ledger used %d reserved %d, upstream %d", rep.Pool.Used, rep.Pool.Reserved, u)
	}
	if rep.SpendByTenant["capped"] < limit {
		t.Fatalf("the capped tenant's spend %d lost what it spent before the loss (%d); charged %d; %+v", rep.SpendByTenant["capped"], limit, charged("capped").Load(), rep)
	}
	t.Logf("upstream %d of %d; %d pages in flight at the loss; ledger %d, rebuilt %d, direct %d; capped %d",
		up.used.Load(), budget, inFlightAtLoss.Load(), rep.Pool.Used, rep.Rebuilt, rep.Direct, charged("capped").Load())
}

// TestRedisLostPeriodIsNotReopened: a period's hash gone while the budget's
// marker names it (an operator's DEL, a key evicted) is unknown, not a
// new period at zero.
func TestRedisLostPeriodIsNotReopened(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	s := NewRedisStore(c)
	l := newLedger(t, s, clock.NewFake(t0), func(c *Config) { c.PoolLimit = 100 })
	mustSettle(t, l, mustReserve(t, l, "a", "x", 90), 90)
	if err := c.Del(ctx, s.period(l.cfg.Budget, l.Period())).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Reserve(ctx, "a", "x", 50); !errors.Is(err, ErrRebuilding) {
		t.Fatalf("Reserve on a lost period = %v, want ErrRebuilding", err)
	}
	if _, err := l.Reconcile(ctx, fixedUpstream{used: 90}); err != nil {
		t.Fatal(err)
	}
	var de *DeniedError
	if _, err := l.Reserve(ctx, "a", "x", 50); !errors.As(err, &de) || de.Remaining != 10 {
		t.Fatalf("Reserve after the rebuild = %v, want a denial with 10 left", err)
	}
}

// TestRedisRefusesAnEvictingServer: a Redis that may evict keys
// (allkeys-lru, as a cache is configured) fails Ping with ErrEvicting, and
// Reserve after it, with a message that names the setting to change.
func TestRedisRefusesAnEvictingServer(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
	var seen []RedisServer
	s := NewRedisStore(srv.Client(), WithRedisWatch(func(r RedisServer) { seen = append(seen, r) }))
	l := newUnopened(t, s, clock.NewFake(t0), nil)
	err := l.Ping(ctx)
	if !errors.Is(err, ErrEvicting) || !strings.Contains(err.Error(), "allkeys-lru") ||
		!strings.Contains(err.Error(), "noeviction") {
		t.Fatalf("Ping = %v, want ErrEvicting naming allkeys-lru and noeviction", err)
	}
	if _, err := l.Reserve(ctx, "a", "x", 1); !errors.Is(err, ErrEvicting) {
		t.Fatalf("Reserve on an evicting server = %v, want ErrEvicting", err)
	}
	if len(seen) != 1 || seen[0].MaxmemoryPolicy != "allkeys-lru" || !seen[0].Evicting() {
		t.Fatalf("watched %+v", seen)
	}
	// Set right, the next Ping accepts it and says what persistence gives.
	if err := srv.Client().ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx); err != nil {
		t.Fatalf("Ping after noeviction = %v", err)
	}
	if len(seen) != 2 || !strings.Contains(seen[1].Durability(), "no persistence") {
		t.Fatalf("watched %+v", seen)
	}
	openPeriod(t, l)
	mustReserve(t, l, "a", "x", 1)
}

// TestRedisWatchSeesARestart: a restarted server is another run id, which
// the watcher is told of at the next Ping.
func TestRedisWatchSeesARestart(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "everysec")
	var seen []RedisServer
	s := NewRedisStore(srv.Client(), WithRedisWatch(func(r RedisServer) { seen = append(seen, r) }))
	for range 2 {
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for s.Ping(ctx) != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(seen) != 2 || seen[0].RunID == seen[1].RunID || !strings.Contains(seen[0].Durability(), "about a second") {
		t.Fatalf("watched %+v", seen)
	}
}

// TestRedisWithoutInfo: a server whose ACL refuses INFO and CONFIG (as a
// managed Redis may) is reachable and not refused; its settings are
// reported as unknown.
func TestRedisWithoutInfo(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	if err := srv.Client().Do(ctx, "ACL", "SETUSER", "ledger", "on", ">ledger-password", "~*", "&*", "+@all", "-info", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "ledger", Password: "ledger-password"})
	t.Cleanup(func() { _ = c.Close() })
	var seen []RedisServer
	s := NewRedisStore(c, WithRedisWatch(func(r RedisServer) { seen = append(seen, r) }))
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping without INFO = %v", err)
	}
	if len(seen) != 1 || seen[0].Evicting() || !strings.Contains(seen[0].Durability(), "INFO refused") {
		t.Fatalf("watched %+v", seen)
	}
	l := newLedger(t, s, clock.NewFake(t0), nil)
	mustSettle(t, l, mustReserve(t, l, "a", "x", 5), 5)
}
