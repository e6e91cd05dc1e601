package quota

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	led := newLedger(t, NewRedisStore(c), newClock(t0), nil)
	ctx := context.Background()
	_, err = led.Reserve(ctx, "a", "x", 1)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "cannot be reached") {
		t.Fatalf("Reserve = %v, want ErrUnavailable", err)
	}
	if err := led.Ping(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping = %v", err)
	}
}

// TestRedisKeys checks the key layout: one hash slot per budget, the period
// in the key, and a TTL that ends a retention time after the period, except
// for the record of a finished reservation, which is kept keepFinished.
func TestRedisKeys(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	clk := newClock(t0)
	l := newLedger(t, NewRedisStore(c, WithRedisRetention(24*time.Hour)), clk, nil)
	mustSettle(t, l, mustReserve(t, l, "a", "x", 10), 10)
	open := mustReserve(t, l, "a", "x", 5)
	keys, err := c.Keys(ctx, "linkgate:quota:{"+l.cfg.Budget+"}:*").Result()
	if err != nil || len(keys) < 4 {
		t.Fatalf("keys %v %v", keys, err)
	}
	p := PeriodAt(clk.Now(), 15)
	wantTTL := p.End.Add(24 * time.Hour).Sub(clk.Now())
	for _, k := range keys {
		// Redis Cluster hashes only the text between the first '{' and the
		// next '}': the budget, for every key of it.
		_, rest, _ := strings.Cut(k, "{")
		if tag, _, _ := strings.Cut(rest, "}"); tag != l.cfg.Budget {
			t.Fatalf("key %s hashes on %q, not the budget", k, tag)
		}
		if strings.HasSuffix(k, ":limits") {
			continue
		}
		if !strings.Contains(k, ":p:"+p.Key+":") {
			t.Fatalf("key %s lacks the period %s", k, p.Key)
		}
		want := wantTTL
		if strings.Contains(k, ":res:") && !strings.HasSuffix(k, ":res:"+open.ID) {
			want = keepFinished
		}
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 || ttl > want || ttl < want-time.Minute {
			t.Fatalf("key %s TTL %v, want about %v", k, ttl, want)
		}
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
	l := newLedger(t, s, clk, func(c *Config) { c.Lease = time.Minute })
	p := l.Period()
	k := s.periodKeys(l.cfg.Budget, p) // pool, tused, tres, label, res, lease
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
	pool := s.periodKeys(l.cfg.Budget, l.Period())[0]
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
