package quota

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
)

// conformanceCases run unchanged against every store; each case gets a
// fresh budget on a fresh (or, for redis, shared but separate) store.
var conformanceCases = []struct {
	name string
	run  func(t *testing.T, s Store, clk *clock.Fake)
}{
	{"rollover at the reset boundary", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		before := time.Date(2025, 3, 14, 23, 59, 59, 0, time.UTC)
		clk.Set(before)
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 100 })
		mustSettle(t, l, mustReserve(t, l, "a", "backlinks", 90), 90)
		late := mustReserve(t, l, "a", "backlinks", 10)
		u, err := l.Usage(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		wantStart, wantEnd := time.Date(2025, 2, 15, 0, 0, 0, 0, time.UTC), time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)
		if !u.Pool.PeriodStart.Equal(wantStart) || !u.Pool.PeriodEnd.Equal(wantEnd) || u.Pool.Remaining != 0 {
			t.Fatalf("before reset: %+v", u.Pool)
		}
		clk.Advance(time.Second) // 00:00:00 on the 15th: a new period
		checkPool(t, l, 0, 0)
		// Settled after the rollover, charged to the period it was reserved in.
		mustSettle(t, l, late, 7)
		mustSettle(t, l, mustReserve(t, l, "a", "backlinks", 100), 100)
		rep := mustReport(t, l)
		if rep.Pool.Used != 100 || !rep.Pool.PeriodStart.Equal(wantEnd) || rep.SpendByTenant["a"] != 100 {
			t.Fatalf("after reset: %+v", rep)
		}
		clk.Set(before)
		checkPool(t, l, 97, 0)
	}},
	{"pool and tenant limits", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 100; c.Tenants = map[string]int64{"a": 30} })
		resetAt := PeriodAt(clk.Now(), 15).End
		mustReserve(t, l, "a", "x", 20)
		mustReserve(t, l, "a", "x", 10) // exactly the tenant limit
		mustReserve(t, l, "b", "x", 60)
		for _, tc := range []struct {
			tenant string
			units  int64
			want   DeniedError
		}{
			{"a", 1, DeniedError{Scope: ScopeTenant, Tenant: "a", Limit: 30, Remaining: 0, Asked: 1, Reserved: 30, ResetAt: resetAt}},
			{"b", 11, DeniedError{Scope: ScopePool, Tenant: "b", Limit: 100, Remaining: 10, Asked: 11, Reserved: 90, ResetAt: resetAt}},
		} {
			_, err := l.Reserve(ctx, tc.tenant, "x", tc.units)
			var de *DeniedError
			if !errors.As(err, &de) || !reflect.DeepEqual(*de, tc.want) {
				t.Fatalf("Reserve(%s,%d) = %v, want %+v", tc.tenant, tc.units, err, tc.want)
			}
		}
		mustReserve(t, l, "b", "x", 10) // exactly the pool limit
		checkPool(t, l, 0, 100)
	}},
	{"denial costs nothing", func(t *testing.T, s Store, clk *clock.Fake) {
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 50; c.Tenants = map[string]int64{"a": 20} })
		mustSettle(t, l, mustReserve(t, l, "a", "x", 15), 15)
		mustReserve(t, l, "b", "x", 30)
		before := mustReport(t, l)
		for _, tc := range []struct {
			tenant string
			units  int64
		}{{"a", 6}, {"b", 6}, {"c", 1000}} {
			if _, err := l.Reserve(context.Background(), tc.tenant, "x", tc.units); err == nil {
				t.Fatalf("Reserve(%s,%d) granted", tc.tenant, tc.units)
			}
		}
		if after := mustReport(t, l); !reflect.DeepEqual(before, after) {
			t.Fatalf("denials changed the ledger:\n%+v\n%+v", before, after)
		}
	}},
	{"settle and release are idempotent", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, nil)
		r := mustReserve(t, l, "a", "x", 10)
		mustSettle(t, l, r, 7)
		mustSettle(t, l, r, 7)
		mustSettle(t, l, r, 9)
		if err := release(l, ctx, r); err != nil {
			t.Fatal(err)
		}
		checkPool(t, l, 7, 0)
		r2 := mustReserve(t, l, "a", "x", 10)
		for range 2 {
			if err := release(l, ctx, r2); err != nil {
				t.Fatal(err)
			}
		}
		mustSettle(t, l, r2, 5)
		checkPool(t, l, 7, 0)
		// A cancelled caller still settles: Settle runs without its cancellation.
		cctx, cancel := context.WithCancel(ctx)
		r3 := mustReserve(t, l, "a", "x", 10)
		cancel()
		if err := settle(l, cctx, r3, 3); err != nil {
			t.Fatal(err)
		}
		if rep := mustReport(t, l); rep.Pool.Used != 10 || rep.Settled != 2 {
			t.Fatalf("report %+v", rep)
		}
		bogus := r3
		bogus.Budget = "another"
		if err := settle(l, ctx, bogus, 1); !errors.Is(err, ErrUnknownReservation) {
			t.Fatalf("a reservation of another budget: %v", err)
		}
	}},
	{"a reservation the store has no record of settles as a direct charge", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.Tenants = map[string]int64{"a": 500} })
		r := mustReserve(t, l, "a", "x", 10)
		lost := r
		lost.ID = "lost-with-the-store"
		// A page paid upstream: recorded, pool and tenant, provisionally.
		left, err := l.Finish(ctx, lost, Outcome{Actual: 40})
		if err != nil || left != 500-40-10 {
			t.Fatalf("Finish of an unknown reservation = %d, %v; want %d left", left, err, 500-40-10)
		}
		mustSettle(t, l, lost, 40) // a retry counts once
		if err := release(l, ctx, Reservation{ID: "never-seen", Budget: r.Budget, Tenant: "a", Label: "x",
			Units: 5, Period: r.Period}); err != nil {
			t.Fatalf("Release of an unknown reservation: %v", err)
		}
		rep := mustReport(t, l)
		if rep.Pool.Used != 40 || rep.Pool.Reserved != 10 || rep.SpendByTenant["a"] != 40 || rep.SpendByLabel["x"] != 40 ||
			rep.Direct != 1 || rep.Provisional != 40 || rep.Overruns != 1 {
			t.Fatalf("report %+v", rep)
		}
		// The upstream's figure confirms or takes it back.
		if _, err := l.Reconcile(ctx, fixedUpstream{used: 25}); err != nil {
			t.Fatal(err)
		}
		checkPool(t, l, 25, 10)
	}},
	{"expired reservation charged in full", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.Lease = time.Minute })
		r := mustReserve(t, l, "a", "pages", 40)
		clk.Advance(59 * time.Second)
		checkPool(t, l, 0, 40)
		clk.Advance(time.Second)
		checkPool(t, l, 40, 0)
		mustSettle(t, l, r, 10) // late and lower: the full charge stands
		if err := release(l, ctx, r); err != nil {
			t.Fatal(err)
		}
		checkPool(t, l, 40, 0)
		// Late and higher: the excess is added as an overrun.
		r2 := mustReserve(t, l, "a", "pages", 10)
		clk.Advance(2 * time.Minute)
		mustSettle(t, l, r2, 25)
		mustSettle(t, l, r2, 30)
		rep := mustReport(t, l)
		if rep.Pool.Used != 65 || rep.Expired != 2 || rep.ExpiredUnits != 50 || rep.Overruns != 1 ||
			rep.OverrunUnits != 15 || rep.SpendByTenant["a"] != 65 || rep.SpendByLabel["pages"] != 65 {
			t.Fatalf("report %+v", rep)
		}
		// A reservation never seen again is charged by whoever looks next,
		// here Reserve itself, even across the rollover.
		mustReserve(t, l, "b", "pages", 5)
		clk.Set(PeriodAt(clk.Now(), 15).End.Add(time.Hour))
		mustReserve(t, l, "b", "pages", 1)
		clk.Set(t0.Add(3 * time.Minute))
		checkPool(t, l, 70, 0)
	}},
	{"overrun recorded", func(t *testing.T, s Store, clk *clock.Fake) {
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 100 })
		a, b := mustReserve(t, l, "a", "refdomains", 60), mustReserve(t, l, "b", "backlinks", 10)
		mustSettle(t, l, a, 150) // already spent upstream: recorded, not refused
		mustSettle(t, l, b, 4)
		rep := mustReport(t, l)
		want := map[string]int64{"refdomains": 150, "backlinks": 4}
		if rep.Pool.Used != 154 || rep.Pool.Remaining != 0 || rep.Overruns != 1 || rep.OverrunUnits != 90 ||
			!reflect.DeepEqual(rep.SpendByLabel, want) || rep.SpendByTenant["a"] != 150 {
			t.Fatalf("report %+v", rep)
		}
		byTenant := map[string]map[string]int64{"a": {"refdomains": 150}, "b": {"backlinks": 4}}
		if !reflect.DeepEqual(rep.SpendByTenantLabel, byTenant) {
			t.Fatalf("spend by tenant and label = %v, want %v", rep.SpendByTenantLabel, byTenant)
		}
		if _, err := l.Reserve(context.Background(), "b", "x", 1); err == nil {
			t.Fatal("granted above an overspent pool")
		}
	}},
	{"tenant limit override persists", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.Tenants = map[string]int64{"a": 10} })
		limit := int64(50)
		if err := l.SetTenantLimit(ctx, "a", &limit); err != nil {
			t.Fatal(err)
		}
		l2, err := New(s, l.cfg) // another replica, or a restart
		if err != nil {
			t.Fatal(err)
		}
		mustReserve(t, l2, "a", "x", 50)
		u, err := l2.Usage(ctx, "a")
		if err != nil || u.Tenant.Limit != 50 || u.Tenant.Remaining != 0 || u.Tenant.Reserved != 50 {
			t.Fatalf("usage %+v %v", u, err)
		}
		if err := l2.SetTenantLimit(ctx, "a", nil); err != nil {
			t.Fatal(err)
		}
		if u, _ := l.Usage(ctx, "a"); u.Tenant.Limit != 10 {
			t.Fatalf("override not removed: %+v", u.Tenant)
		}
		rep := mustReport(t, l)
		if len(rep.Tenants) != 1 || rep.Tenants[0].Name != "a" {
			t.Fatalf("tenants %+v", rep.Tenants)
		}
	}},
	{"finish goes by the stored reservation", func(t *testing.T, s Store, clk *clock.Fake) {
		l := newLedger(t, s, clk, func(c *Config) { c.Tenants = map[string]int64{"a": 100, "b": 100} })
		r := mustReserve(t, l, "a", "x", 10)
		altered := r
		altered.Tenant, altered.Label, altered.Units = "b", "y", 3
		mustSettle(t, l, altered, 4)
		rep := mustReport(t, l)
		if rep.Pool.Used != 4 || rep.Pool.Reserved != 0 || rep.SpendByTenant["a"] != 4 || rep.SpendByTenant["b"] != 0 ||
			rep.SpendByLabel["x"] != 4 || rep.Overruns != 0 {
			t.Fatalf("report %+v", rep)
		}
	}},
	{"a ledger that lost its data is unknown until rebuilt", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 1000; c.Tenants = map[string]int64{"a": 300} })
		limit := int64(200)
		if err := l.SetTenantLimit(ctx, "b", &limit); err != nil {
			t.Fatal(err)
		}
		mustSettle(t, l, mustReserve(t, l, "a", "x", 250), 250)
		mustSettle(t, l, mustReserve(t, l, "b", "x", 150), 150)
		inFlight := mustReserve(t, l, "c", "x", 50)
		// The store loses everything: a Redis restarted empty, a bolt file
		// lost. This replica keeps what it read.
		l.store = emptyLike(t, s)
		_, err := l.Reserve(ctx, "c", "x", 1)
		if !errors.Is(err, ErrRebuilding) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Reserve on a lost ledger = %v, want ErrRebuilding (unavailable), not a grant or a denial", err)
		}
		select {
		case <-l.ReconcileRequests():
		default:
			t.Fatal("finding the ledger lost asked for no reconciliation")
		}
		// The page in flight was paid: recorded, directly.
		mustSettle(t, l, inFlight, 50)
		// The upstream charged 450: 250 + 150 + 50.
		d, err := l.Reconcile(ctx, fixedUpstream{used: 450})
		if err != nil || !d.Rebuilt || d.Adopted != 400 {
			t.Fatalf("rebuild = %+v, %v; want rebuilt adopting 400", d, err)
		}
		rep := mustReport(t, l)
		if rep.Pool.Used != 450 || rep.Rebuilt != 400 || rep.SpendByTenant["a"] != 250 || rep.SpendByTenant["b"] != 150 ||
			rep.SpendByTenant["c"] != 50 || rep.Direct != 1 {
			t.Fatalf("after the rebuild %+v", rep)
		}
		// The override and the tenants' spend came back with it.
		var de *DeniedError
		if _, err := l.Reserve(ctx, "b", "x", 51); !errors.As(err, &de) || de.Scope != ScopeTenant || de.Limit != 200 {
			t.Fatalf("Reserve(b, 51) after the rebuild = %v, want the override of 200 with 150 spent", err)
		}
		if _, err := l.Reserve(ctx, "a", "x", 51); !errors.As(err, &de) || de.Scope != ScopeTenant {
			t.Fatalf("Reserve(a, 51) after the rebuild = %v, want a's limit of 300 with 250 spent", err)
		}
		mustReserve(t, l, "b", "x", 50)
	}},
	{"the first start and each new period are opened", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newUnopened(t, s, clk, func(c *Config) { c.PoolLimit = 1000 })
		if _, err := l.Reserve(ctx, "a", "x", 1); !errors.Is(err, ErrRebuilding) {
			t.Fatalf("Reserve before the first reconciliation = %v, want ErrRebuilding", err)
		}
		d, err := l.Reconcile(ctx, fixedUpstream{used: 300}) // spent before linkgate ran
		if err != nil || !d.Rebuilt || d.Adopted != 300 {
			t.Fatalf("first reconciliation = %+v, %v", d, err)
		}
		mustSettle(t, l, mustReserve(t, l, "a", "x", 700), 700)
		// The next period opens at zero: the store knew the one before. A
		// reconciliation first, while the upstream still reports the old
		// period, opens it too and adopts nothing.
		old := PeriodAt(clk.Now(), 15)
		clk.Set(old.End)
		if d, err := l.Reconcile(ctx, fixedUpstream{used: 1000, reset: old.End}); err != nil || d.Rebuilt || d.Adopted != 0 {
			t.Fatalf("reconciliation at the rollover = %+v, %v; want the new period opened, nothing adopted", d, err)
		}
		mustSettle(t, l, mustReserve(t, l, "a", "x", 1000), 1000)
		if d, err := l.Reconcile(ctx, fixedUpstream{used: 1000}); err != nil || d.Rebuilt || d.Adopted != 0 {
			t.Fatalf("reconciliation of the new period = %+v, %v; want nothing rebuilt", d, err)
		}
	}},
	{"reconcile adopts a higher upstream figure", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, nil)
		mustSettle(t, l, mustReserve(t, l, "a", "x", 100), 100)
		mustReserve(t, l, "a", "x", 50)
		end := PeriodAt(clk.Now(), 15).End
		d, err := l.Reconcile(ctx, fixedUpstream{used: 500, reset: end})
		if err != nil {
			t.Fatal(err)
		}
		if d.Upstream != 500 || d.Ledger != 100 || d.Reserved != 50 || d.Difference != 400 || d.Adopted != 350 || d.PeriodMismatch {
			t.Fatalf("drift %+v", d)
		}
		rep := mustReport(t, l)
		if rep.Pool.Used != 450 || rep.External != 350 || rep.Drift != 400 || rep.Upstream != 500 || rep.SpendByTenant["a"] != 100 {
			t.Fatalf("report %+v", rep)
		}
		// Lower upstream, or another reset date: recorded, nothing adopted.
		for _, u := range []fixedUpstream{{used: 10, reset: end}, {used: 5000, reset: end.AddDate(0, 0, 3)}} {
			d, err := l.Reconcile(ctx, u)
			if err != nil || d.Adopted != 0 {
				t.Fatalf("drift %+v %v", d, err)
			}
		}
		checkPool(t, l, 450, 50)
	}},
}

type fixedUpstream struct {
	used  int64
	reset time.Time
}

func (f fixedUpstream) UpstreamUsage(context.Context) (int64, time.Time, error) {
	return f.used, f.reset, nil
}

func TestConformance(t *testing.T) {
	for _, kind := range storeKinds() {
		t.Run(kind.name, func(t *testing.T) {
			for _, tc := range conformanceCases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, kind.open(t), clock.NewFake(t0))
				})
			}
		})
	}
}

type failingUpstream struct{ err error }

func (f failingUpstream) UpstreamUsage(context.Context) (int64, time.Time, error) {
	return 0, time.Time{}, f.err
}

// TestRebuildErrorTellsWhy: while a failing upstream keeps the period from
// being rebuilt, Reserve's error says why, so that a refused key shows as
// the operator's problem rather than as the ledger's.
func TestRebuildErrorTellsWhy(t *testing.T) {
	ctx := context.Background()
	l := newUnopened(t, NewMemoryStore(), clock.NewFake(t0), nil)
	refused := errors.New("upstream: the key is refused")
	if _, err := l.Reconcile(ctx, failingUpstream{refused}); !errors.Is(err, refused) {
		t.Fatalf("Reconcile = %v", err)
	}
	_, err := l.Reserve(ctx, "a", "x", 1)
	var rb *RebuildError
	if !errors.Is(err, ErrRebuilding) || !errors.Is(err, ErrUnavailable) || !errors.Is(err, refused) || !errors.As(err, &rb) {
		t.Fatalf("Reserve = %v, want ErrRebuilding caused by the refusal", err)
	}
	openPeriod(t, l)
	mustReserve(t, l, "a", "x", 1)
}
