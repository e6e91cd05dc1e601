package quota

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
	led := newUnopened(t, NewRedisStore(c), newClock(t0), nil)
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
	clk := newClock(t0)
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

// TestRedisReadsEarlierRecords: reservations recorded by the earlier layout
// (a JSON record in the period's res hash, no 'due' in the pool) still
// settle, and still lapse and are charged, so an upgrade loses nothing.
func TestRedisReadsEarlierRecords(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	clk := newClock(t0)
	s := NewRedisStore(c)
	l := newUnopened(t, s, clk, func(c *Config) { c.Lease = time.Minute })
	p := l.Period()
	k := earlierKeys(s, l.cfg.Budget, p)
	expires := clk.Now().Add(time.Minute)
	for _, id := range []string{"settles", "lapses"} {
		rec := fmt.Sprintf(`{"t":"a","l":"x","u":10,"e":%d,"s":"open","a":0}`, expires.UnixMilli())
		if err := c.HSet(ctx, k[4], id, rec).Err(); err != nil {
			t.Fatal(err)
		}
		c.ZAdd(ctx, k[5], redis.Z{Score: float64(expires.UnixMilli()), Member: id})
	}
	c.HSet(ctx, k[0], "reserved", 20)
	c.HSet(ctx, k[2], "a", 20)
	openPeriod(t, l)
	mustSettle(t, l, Reservation{ID: "settles", Budget: l.cfg.Budget, Tenant: "a", Label: "x",
		Units: 10, Period: p.Key, Expires: expires}, 4)
	checkPool(t, l, 4, 10)
	clk.Advance(2 * time.Minute)
	mustReserve(t, l, "b", "x", 1)
	// Charged by that Reserve, before any report swept.
	if n, err := c.HGet(ctx, k[0], "expired").Int64(); err != nil || n != 1 {
		t.Fatalf("expired = %d, %v; want the lapsed lease charged by Reserve", n, err)
	}
	rep := mustReport(t, l)
	if rep.Pool.Used != 14 || rep.Pool.Reserved != 1 || rep.Expired != 1 || rep.SpendByTenant["a"] != 14 {
		t.Fatalf("report %+v", rep)
	}
}

// TestRedisReserveChargesLapsedLease: the pool's 'due' spares Reserve its
// sweep only until a lease may have run out.
func TestRedisReserveChargesLapsedLease(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	clk := newClock(t0)
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

// earlierKeys returns the keys of a period in the earlier layout: pool,
// tused, tres, label, res, lease.
func earlierKeys(s *RedisStore, budget string, p Period) []string {
	b := strings.TrimSuffix(s.period(budget, p), "pool")
	return []string{b + "pool", b + "tused", b + "tres", b + "label", b + "res", b + "lease"}
}

// TestRedisFoldsEarlierLayout: a period kept in the earlier layout (the
// counters in four hashes, open leases in a sorted set, each record a key
// of its own) is folded into the period's hash by the first script that
// meets it, with its spend, its open reservations and its finished records.
func TestRedisFoldsEarlierLayout(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	clk := newClock(t0)
	s := NewRedisStore(c)
	l := newUnopened(t, s, clk, func(c *Config) { c.Lease = time.Minute; c.Tenants = map[string]int64{"a": 100} })
	p := l.Period()
	k := earlierKeys(s, l.cfg.Budget, p)
	expires := clk.Now().Add(time.Minute)
	open := Reservation{ID: "open", Budget: l.cfg.Budget, Tenant: "a", Label: "x", Units: 10, Period: p.Key, Expires: expires}
	done := Reservation{ID: "done", Budget: l.cfg.Budget, Tenant: "a", Label: "x", Units: 5, Period: p.Key, Expires: expires}
	ttl := time.Hour
	for _, cmd := range [][]any{
		{"HSET", k[0], "used", 25, "reserved", 10, "settled", 2, "due", expires.UnixMilli(), "prev_swept", 1},
		{"HSET", k[1], "a", 20, "b", 5},
		{"HSET", k[2], "a", 10},
		{"HSET", k[3], "a\x1fx", 20, "b\x1fy", 5},
		{"SET", k[4] + ":open", fmt.Sprintf("open\x1f10\x1f%d\x1f0\x1fx\x1fa", expires.UnixMilli()), "PX", ttl.Milliseconds()},
		{"SET", k[4] + ":done", fmt.Sprintf("settled\x1f5\x1f%d\x1f4\x1fx\x1fa", expires.UnixMilli()), "PX", ttl.Milliseconds()},
		{"ZADD", k[5], expires.UnixMilli(), "open"},
	} {
		if err := c.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(cmd, err)
		}
	}
	openPeriod(t, l)
	rep := mustReport(t, l)
	if rep.Pool.Used != 25 || rep.Pool.Reserved != 10 || rep.SpendByTenant["a"] != 20 || rep.SpendByLabel["y"] != 5 {
		t.Fatalf("report after the fold %+v", rep)
	}
	if u, err := l.Usage(ctx, "a"); err != nil || u.Tenant.Remaining != 70 {
		t.Fatalf("usage of a = %+v, %v; want 70 left of 100 (20 used, 10 reserved)", u.Tenant, err)
	}
	for _, old := range k[1:] {
		if n, err := c.Exists(ctx, old).Result(); err != nil || n != 0 {
			t.Fatalf("%s still there after the fold (%d, %v)", old, n, err)
		}
	}
	// The finished record is still found: settling it again changes nothing.
	mustSettle(t, l, done, 4)
	mustSettle(t, l, open, 7)
	checkPool(t, l, 32, 0)
	// And the open one, moved into the hash, lapses like any other.
	mustReserve(t, l, "a", "x", 3)
	clk.Advance(2 * time.Minute)
	mustReserve(t, l, "b", "x", 1)
	if rep := mustReport(t, l); rep.Pool.Used != 35 || rep.Expired != 1 || rep.SpendByTenant["a"] != 30 {
		t.Fatalf("report %+v", rep)
	}
}

// TestRedisSweepsThePreviousPeriod: while the period before still has an
// open lease, Reserve in the new one goes on, and the lease is charged by
// the first Reserve after it runs out.
func TestRedisSweepsThePreviousPeriod(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	clk := newClock(time.Date(2025, 3, 14, 23, 59, 30, 0, time.UTC))
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
	late := newClock(time.Date(2025, 3, 14, 23, 59, 59, 0, time.UTC)) // one replica, still in the old period
	early := newClock(time.Date(2025, 3, 15, 0, 0, 1, 0, time.UTC))   // another, already in the new one
	limits := func(c *Config) { c.Tenants = map[string]int64{"a": 10} }
	l := newLedger(t, s, late, limits)
	// Even on one clock, a reading taken just before the reset and one just
	// after meet at the boundary.
	l2, err := New(redisStoreAt(c, early.Now), func() Config { cfg := l.cfg; cfg.Clock = early.Now; return cfg }())
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
	l := newLedger(t, NewRedisStore(c), newClock(t0), nil)
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
