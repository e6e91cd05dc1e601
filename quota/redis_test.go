package quota

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/redistest"
)

func TestRedisUnreachableFailsClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there any more
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	led := newUnopened(t, NewRedisStore(c), clock.NewFake(t0), nil)
	ctx := context.Background()
	_, err = led.Reserve(ctx, "a", "x", 1)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "cannot be reached") {
		t.Fatalf("Reserve = %v, want ErrUnavailable", err)
	}
	if err := led.Ping(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping = %v", err)
	}
}

// TestRedisKeys checks the key layout: one hash slot per budget, one hash
// per period, with the period in its key and a TTL that ends a retention
// time after the period. Reservations are fields of it: a finished one is
// kept for keepFinished, then dropped by the next sweep.
func TestRedisKeys(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	clk := clock.NewFake(t0)
	s := NewRedisStore(c, WithRedisRetention(24*time.Hour))
	l := newLedger(t, s, clk, nil)
	done := mustReserve(t, l, "a", "x", 10)
	mustSettle(t, l, done, 10)
	open := mustReserve(t, l, "a", "x", 5)
	keys, err := c.Keys(ctx, "linkgate:quota:{"+l.cfg.Budget+"}:*").Result()
	p := PeriodAt(clk.Now(), 15)
	slices.Sort(keys)
	limits := s.base(l.cfg.Budget) + ":limits"
	if err != nil || len(keys) != 2 || keys[0] != limits || keys[1] != s.period(l.cfg.Budget, p) {
		t.Fatalf("keys %v %v, want the budget's limits (with its marker) and the period's hash", keys, err)
	}
	// The limits never expire: no eviction policy that spares keys
	// without a TTL can take them.
	if ttl, err := c.PTTL(ctx, limits).Result(); err != nil || ttl != -1 {
		t.Fatalf("limits TTL %v, %v; want none", ttl, err)
	}
	keys = keys[1:]
	// Redis Cluster hashes only the text between the first '{' and the
	// next '}': the budget, for every key of it.
	_, rest, _ := strings.Cut(keys[0], "{")
	if tag, _, _ := strings.Cut(rest, "}"); tag != l.cfg.Budget || !strings.Contains(keys[0], ":p:"+p.Key+":") {
		t.Fatalf("key %s does not hash on the budget %s or lacks the period %s", keys[0], l.cfg.Budget, p.Key)
	}
	want := p.End.Add(24 * time.Hour).Sub(clk.Now())
	if ttl, err := c.PTTL(ctx, keys[0]).Result(); err != nil || ttl > want || ttl < want-time.Minute {
		t.Fatalf("key %s TTL %v, want about %v", keys[0], ttl, want)
	}
	record := func(r Reservation) bool {
		n, err := c.HExists(ctx, keys[0], "o\x1e"+r.ID).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	mustSettle(t, l, open, 5)
	clk.Advance(keepFinished - time.Second)
	mustReport(t, l)
	if !record(done) || !record(open) {
		t.Fatal("a finished reservation's record was dropped before keepFinished")
	}
	clk.Advance(time.Second)
	mustReport(t, l)
	if record(done) || record(open) {
		t.Fatal("a finished reservation's record outlived keepFinished")
	}
	checkPool(t, l, 15, 0)
	// Its record gone, a settlement is a direct charge, provisional: a
	// reconciliation takes it back if the upstream never made it.
	mustSettle(t, l, done, 10)
	if rep := mustReport(t, l); rep.Pool.Used != 25 || rep.Direct != 1 || rep.Provisional != 10 {
		t.Fatalf("after settling a dropped record: used %d, direct %d, provisional %d; want 25, 1, 10",
			rep.Pool.Used, rep.Direct, rep.Provisional)
	}
}

// TestRedisReserveChargesLapsedLease: the pool's 'due' spares Reserve its
// sweep only until a lease may have run out.
func TestRedisReserveChargesLapsedLease(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	clk := clock.NewFake(t0)
	s := NewRedisStore(c)
	l := newLedger(t, s, clk, func(c *Config) { c.Lease = time.Minute })
	pool := s.period(l.cfg.Budget, l.Period())
	mustReserve(t, l, "a", "x", 7)
	clk.Advance(30 * time.Second)
	mustSettle(t, l, mustReserve(t, l, "a", "x", 3), 3)
	clk.Advance(31 * time.Second) // the first lease ran out a second ago
	mustReserve(t, l, "a", "x", 1)
	if n, err := c.HGet(ctx, pool, "expired_units").Int64(); err != nil || n != 7 {
		t.Fatalf("expired_units = %d, %v; want 7", n, err)
	}
	checkPool(t, l, 10, 1)
}

// TestRedisSweepsThePreviousPeriod: while the period before still has an
// open lease, Reserve in the new one goes on, and the lease is charged by
// the first Reserve after it runs out.
func TestRedisSweepsThePreviousPeriod(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	clk := clock.NewFake(time.Date(2025, 3, 14, 23, 59, 30, 0, time.UTC))
	s := NewRedisStore(c)
	l := newLedger(t, s, clk, func(c *Config) { c.Lease = time.Minute })
	old := l.Period()
	mustReserve(t, l, "a", "x", 7)
	clk.Advance(45 * time.Second) // a new period; the lease has 15 s left
	for range 3 {
		mustSettle(t, l, mustReserve(t, l, "a", "x", 1), 1)
	}
	if n, err := c.HGet(ctx, s.period(l.cfg.Budget, old), "expired").Int64(); !errors.Is(err, redis.Nil) {
		t.Fatalf("expired = %d, %v before the lease ran out", n, err)
	}
	clk.Advance(16 * time.Second)
	mustReserve(t, l, "a", "x", 1)
	if n, err := c.HGet(ctx, s.period(l.cfg.Budget, old), "expired_units").Int64(); err != nil || n != 7 {
		t.Fatalf("expired_units of the period before = %d, %v; want 7", n, err)
	}
	checkPool(t, l, 3, 1)
}

// TestRedisTenantLimitCopy: a period's hash keeps a copy of a tenant's
// limit override; changing the override drops the copies of the periods
// around the caller's own, so that a replica whose clock is already in the
// next period sees the change too.
func TestRedisTenantLimitCopy(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	s := NewRedisStore(c)
	late := clock.NewFake(time.Date(2025, 3, 14, 23, 59, 59, 0, time.UTC)) // one replica, still in the old period
	early := clock.NewFake(time.Date(2025, 3, 15, 0, 0, 1, 0, time.UTC))   // another, already in the new one
	limits := func(c *Config) { c.Tenants = map[string]int64{"a": 10} }
	l := newLedger(t, s, late, limits)
	// Even on one clock, a reading taken just before the reset and one just
	// after meet at the boundary.
	l2, err := New(redisStoreAt(c, early), func() Config { cfg := l.cfg; cfg.Clock = early; return cfg }())
	if err != nil {
		t.Fatal(err)
	}
	mustReserve(t, l2, "a", "x", 5) // copies "no override" into the new period
	hundred := int64(100)
	if err := l.SetTenantLimit(ctx, "a", &hundred); err != nil {
		t.Fatal(err)
	}
	mustReserve(t, l2, "a", "x", 50) // above the configured 10: the override is seen
	if err := l.SetTenantLimit(ctx, "a", nil); err != nil {
		t.Fatal(err)
	}
	var de *DeniedError
	if _, err := l2.Reserve(ctx, "a", "x", 1); !errors.As(err, &de) || de.Scope != ScopeTenant || de.Limit != 10 {
		t.Fatalf("Reserve after the override was removed = %v, want a denial by the tenant's limit of 10", err)
	}
}

// TestRedisLoadsItsFunctions: a server without the ledger's functions (new,
// or restarted without persistence) gets them from the first call.
func TestRedisLoadsItsFunctions(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	l := newLedger(t, NewRedisStore(c), clock.NewFake(t0), nil)
	mustSettle(t, l, mustReserve(t, l, "a", "x", 10), 10)
	if err := c.FunctionDelete(ctx, ledgerLibrary.name).Err(); err != nil {
		t.Fatal(err)
	}
	mustSettle(t, l, mustReserve(t, l, "a", "x", 5), 5)
	libs, err := c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: ledgerLibrary.name}).Result()
	if err != nil || len(libs) != 1 || len(libs[0].Functions) != len(ledgerLibrary.fn) {
		t.Fatalf("libraries %+v, %v; want %s with its %d functions", libs, err, ledgerLibrary.name, len(ledgerLibrary.fn))
	}
	checkPool(t, l, 15, 0)
}
