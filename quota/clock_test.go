package quota

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/redistest"
)

// TestRedisSkewedReplicaAtTheReset: a replica whose clock is 38 minutes
// ahead, past the period's reset, still spends in the period the store's
// clock is in, next to a replica on time: once the budget is spent it is
// refused like every other, until the store's clock reaches the reset.
func TestRedisSkewedReplicaAtTheReset(t *testing.T) {
	ctx := context.Background()
	world := clock.NewFake(time.Date(2025, 3, 14, 23, 40, 0, 0, time.UTC)) // the reset is on the 15th at 00:00
	ahead := clock.NewFake(world.Now().Add(38 * time.Minute))
	s := redisStoreAt(redistest.Client(t), world)
	onTime := newLedger(t, s, world, nil)
	skewed, err := New(s, func() Config { cfg := onTime.cfg; cfg.Clock = ahead; return cfg }())
	if err != nil {
		t.Fatal(err)
	}
	mustSettle(t, onTime, mustReserve(t, onTime, "a", "x", 1000), 1000) // the budget is spent
	var de *DeniedError
	if r, err := skewed.Reserve(ctx, "b", "x", 50); !errors.As(err, &de) || de.Scope != ScopePool {
		t.Fatalf("the replica ahead after the budget was spent: %+v, %v; want a denial by the pool", r, err)
	}
	u, err := skewed.Usage(ctx, "b")
	if err != nil || !u.Pool.PeriodEnd.Equal(time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)) || u.Pool.Remaining != 0 {
		t.Fatalf("the replica ahead sees %+v, %v; want the spent period ending on the 15th", u.Pool, err)
	}
	// At the store's reset, both replicas are in the new period.
	world.Advance(21 * time.Minute)
	ahead.Advance(21 * time.Minute)
	for _, l := range []*Ledger{skewed, onTime} {
		r := mustReserve(t, l, "b", "x", 50)
		if r.Period != "2025-03-15" {
			t.Fatalf("after the reset: reserved in period %s, want 2025-03-15", r.Period)
		}
		mustSettle(t, l, r, 50)
	}
}

// TestRedisSkewedReplicaLeases: on the Redis server's own clock (TIME), a
// replica 3 minutes slow with a 2-minute lease dates its leases by the
// server, so a replica on time does not charge its live requests as
// lapsed; nor does one 38 minutes ahead make leases that outlive theirs.
func TestRedisSkewedReplicaLeases(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	s := NewRedisStore(c)
	cfg := Config{Budget: uniqueBudget(), PoolLimit: 10_000, ResetDay: 1, Lease: 2 * time.Minute}
	replica := func(skew time.Duration) *Ledger {
		cfg := cfg
		cfg.Clock = skewedClock{Clock: clock.System, skew: skew}
		l, err := New(s, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	onTime, slow, fast := replica(0), replica(-3*time.Minute), replica(38*time.Minute)
	openPeriod(t, onTime)
	server, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var held []Reservation
	for _, l := range []*Ledger{slow, fast} {
		r := mustReserve(t, l, "a", "x", 100)
		if d := r.Expires.Sub(server.Add(cfg.Lease)); d < -time.Second || d > 5*time.Second {
			t.Fatalf("a lease expires %s after the server's now + lease, want within a few seconds", d)
		}
		if want := PeriodAt(server, cfg.ResetDay).Key; r.Period != want {
			t.Fatalf("reserved in period %s, want the server's %s", r.Period, want)
		}
		held = append(held, r)
	}
	// The replica on time reports (and so sweeps) the ledger: both
	// requests are live, none is charged.
	rep := mustReport(t, onTime)
	if rep.Expired != 0 || rep.Provisional != 0 || rep.Pool.Reserved != 200 || rep.Pool.Used != 0 {
		t.Fatalf("live requests of skewed replicas: expired %d, provisional %d, reserved %d, used %d; want 0, 0, 200, 0",
			rep.Expired, rep.Provisional, rep.Pool.Reserved, rep.Pool.Used)
	}
	for _, r := range held {
		mustSettle(t, onTime, r, 30)
	}
	rep = mustReport(t, slow)
	if rep.Pool.Used != 60 || rep.Provisional != 0 || rep.Pool.Reserved != 0 {
		t.Fatalf("settled: used %d, provisional %d, reserved %d; want 60, 0, 0", rep.Pool.Used, rep.Provisional, rep.Pool.Reserved)
	}
}

// TestLedgerClockResyncs: the ledger reads the store's clock once, then
// counts on its own, and reads it again when the reading is old; a
// failed reading fails the first step with the store's ErrUnavailable.
func TestLedgerClockResyncs(t *testing.T) {
	ctx := context.Background()
	local := clock.NewFake(time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC))
	store := &steppedClock{t: time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC).Add(time.Hour)}
	c := &ledgerClock{store: store, budget: "b", local: local}
	store.err = ErrUnavailable
	if _, err := c.now(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("no reading: %v, want ErrUnavailable", err)
	}
	store.err = nil
	if now, err := c.now(ctx); err != nil || !now.Equal(store.t) {
		t.Fatalf("first reading: %s, %v; want the store's %s", now, err, store.t)
	}
	local.Advance(time.Minute)
	if now, _ := c.now(ctx); !now.Equal(store.t.Add(time.Minute)) || store.reads != 2 {
		t.Fatalf("a minute on: %s after %d reads, want the store's time plus a minute from one reading", now, store.reads)
	}
	store.t = store.t.Add(time.Minute + 5*time.Second) // the store's clock gained 5 s on ours
	c.last.Load().taken = time.Now().Add(-resync)
	if now, _ := c.now(ctx); !now.Equal(store.t) || store.reads != 3 {
		t.Fatalf("after resync: %s after %d reads, want %s", now, store.reads, store.t)
	}
	store.err = ErrUnavailable // a failed resync keeps the last reading
	c.last.Load().taken = time.Now().Add(-resync)
	if now, err := c.now(ctx); err != nil || !now.Equal(store.t) {
		t.Fatalf("failed resync: %s, %v", now, err)
	}
}

type steppedClock struct {
	t     time.Time
	err   error
	reads int
}

func (s *steppedClock) Time(context.Context, string) (time.Time, error) {
	s.reads++
	return s.t, s.err
}

// skewedClock is a replica's real clock, off by skew.
type skewedClock struct {
	clock.Clock
	skew time.Duration
}

func (c skewedClock) Now() time.Time { return c.Clock.Now().Add(c.skew) }
