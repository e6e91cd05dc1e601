package quota

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
)

// truthCases are the ledger rules that make it converge to the upstream's
// figure: idempotent reserve, balances returned by each step, denials that
// tell held room from spent room, provisional charges that a reconciliation
// corrects down as well as up. They run against every store.
var truthCases = []struct {
	name string
	run  func(t *testing.T, s Store, clk *clock.Fake)
}{
	{"a retried reserve counts once", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 100 })
		now := clk.Now()
		cur := PeriodAt(now, 15)
		op := ReserveOp{Budget: l.cfg.Budget, Cur: cur, Prev: cur.Previous(), Now: now, ID: "same-id",
			Tenant: "a", Label: "x", Units: 40, Expires: now.Add(time.Minute), PoolLimit: 100}
		for range 3 {
			res, err := s.Reserve(ctx, op)
			if err != nil || !res.Granted || res.Remaining != 60 {
				t.Fatalf("Reserve = %+v, %v; want granted with 60 left", res, err)
			}
		}
		checkPool(t, l, 0, 40)
	}},
	{"reserve and settle return what is left", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 1000; c.Tenants = map[string]int64{"a": 300} })
		r := mustReserve(t, l, "a", "x", 100)
		if r.Remaining != 200 {
			t.Fatalf("Reserve left %d, want 200", r.Remaining)
		}
		left, err := l.Finish(ctx, r, Outcome{Actual: 60})
		if err != nil || left != 240 {
			t.Fatalf("Finish = %d, %v; want 240", left, err)
		}
		b := mustReserve(t, l, "b", "x", 500)
		if b.Remaining != 440 { // 1000 - 60 - 500
			t.Fatalf("untenanted Reserve left %d, want 440", b.Remaining)
		}
		if left, err = l.Finish(ctx, b, Outcome{Release: true}); err != nil || left != 940 {
			t.Fatalf("Release = %d, %v; want 940", left, err)
		}
	}},
	{"room held by requests in flight is not spent", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 100 })
		mustSettle(t, l, mustReserve(t, l, "a", "x", 30), 30)
		held := mustReserve(t, l, "a", "x", 60)
		_, err := l.Reserve(ctx, "b", "x", 20)
		var de *DeniedError
		if !errors.As(err, &de) || !de.HeldInFlight() {
			t.Fatalf("Reserve(20) with 60 held = %v, want a denial held in flight", err)
		}
		mustSettle(t, l, held, 60)
		_, err = l.Reserve(ctx, "b", "x", 20)
		if !errors.As(err, &de) || de.HeldInFlight() {
			t.Fatalf("Reserve(20) with 90 spent = %v, want a denial of spent budget", err)
		}
	}},
	{"a reconcile takes back provisional charges the upstream never made", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 1_000_000 })
		// One confirmed page, ten cut requests charged in full on
		// presumption; the upstream charged only the first (the rest were
		// its cache hits).
		mustSettle(t, l, mustReserve(t, l, "a", "backlinks", 6006), 6006)
		for range 10 {
			if _, err := l.Finish(ctx, mustReserve(t, l, "a", "backlinks", 6006), Outcome{Actual: 6006, Provisional: true}); err != nil {
				t.Fatal(err)
			}
		}
		if rep := mustReport(t, l); rep.Pool.Used != 66066 || rep.Provisional != 60060 {
			t.Fatalf("before reconcile used/provisional = %d/%d", rep.Pool.Used, rep.Provisional)
		}
		d, err := l.Reconcile(ctx, fixedUpstream{used: 12012})
		if err != nil {
			t.Fatal(err)
		}
		rep := mustReport(t, l)
		if d.Corrected != 54054 || rep.Pool.Used != 12012 || rep.Provisional != 0 || rep.Corrected != 54054 {
			t.Fatalf("after reconcile: drift %+v, used %d, provisional %d, corrected %d; want the upstream's 12012",
				d, rep.Pool.Used, rep.Provisional, rep.Corrected)
		}
		if rep.SpendByTenant["a"] != 12012 || rep.SpendByLabel["backlinks"] != 12012 {
			t.Fatalf("tenant/label spend %v %v, want 12012", rep.SpendByTenant, rep.SpendByLabel)
		}
	}},
	{"a reconcile never goes below confirmed spend", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 10_000 })
		mustSettle(t, l, mustReserve(t, l, "a", "x", 500), 500)
		if _, err := l.Finish(ctx, mustReserve(t, l, "a", "x", 100), Outcome{Actual: 100, Provisional: true}); err != nil {
			t.Fatal(err)
		}
		// The upstream lags and reports less than was confirmed.
		if _, err := l.Reconcile(ctx, fixedUpstream{used: 200}); err != nil {
			t.Fatal(err)
		}
		checkPool(t, l, 500, 0)
		// Provisional charges are confirmed by a reading that covers them.
		if _, err := l.Finish(ctx, mustReserve(t, l, "a", "x", 100), Outcome{Actual: 100, Provisional: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Reconcile(ctx, fixedUpstream{used: 700}); err != nil {
			t.Fatal(err)
		}
		checkPool(t, l, 700, 0) // 600 + 100 adopted from elsewhere; nothing taken back
	}},
	{"a lapsed lease is provisional", func(t *testing.T, s Store, clk *clock.Fake) {
		ctx := context.Background()
		l := newLedger(t, s, clk, func(c *Config) { c.PoolLimit = 10_000 })
		mustReserve(t, l, "a", "x", 1000) // its holder dies
		clk.Advance(2 * time.Minute)
		if rep := mustReport(t, l); rep.Pool.Used != 1000 || rep.Provisional != 1000 {
			t.Fatalf("after the lease used/provisional = %d/%d, want 1000/1000", rep.Pool.Used, rep.Provisional)
		}
		if _, err := l.Reconcile(ctx, fixedUpstream{used: 0}); err != nil {
			t.Fatal(err)
		}
		checkPool(t, l, 0, 0)
	}},
}

func TestLedgerConverges(t *testing.T) {
	for _, kind := range storeKinds() {
		t.Run(kind.name, func(t *testing.T) {
			for _, tc := range truthCases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, kind.open(t), clock.NewFake(t0))
				})
			}
		})
	}
}
