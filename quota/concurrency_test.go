package quota

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/redistest"
)

// hammer runs workers that reserve, settle (actual ≤ estimate) and release
// random amounts against one budget, spread over ledgers (one per store
// handle, as replicas would be). Demand is far above the limits, so most of
// the run happens at the limit. Every worker keeps checking the invariant;
// at the end, used must be exactly the sum of settled actuals.
func hammer(t *testing.T, stores []Store, workers, ops int) {
	t.Helper()
	ctx := context.Background()
	clk := clock.NewFake(t0)
	budget := uniqueBudget()
	limits := map[string]int64{"a": 600, "b": 900}
	const pool = 2000
	var ledgers []*Ledger
	for _, s := range stores {
		ledgers = append(ledgers, newLedger(t, s, clk, func(c *Config) {
			c.Budget, c.PoolLimit, c.Tenants = budget, pool, limits
		}))
	}
	var settled, granted, denied atomic.Int64
	var mu sync.Mutex
	var failure error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if failure == nil {
			failure = err
		}
	}
	check := func(l *Ledger) {
		rep, err := l.AllUsage(ctx)
		if err != nil {
			fail(err)
			return
		}
		if rep.Pool.Used+rep.Pool.Reserved > pool {
			fail(errors.New("pool overspent"))
		}
		for _, a := range rep.Tenants {
			if a.Limit > 0 && a.Used+a.Reserved > a.Limit {
				fail(errors.New("tenant " + a.Name + " overspent"))
			}
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			l := ledgers[w%len(ledgers)]
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := range ops {
				tenant := []string{"a", "b", "c"}[rng.IntN(3)]
				units := 1 + rng.Int64N(40)
				r, err := l.Reserve(ctx, tenant, "x", units)
				var de *DeniedError
				switch {
				case errors.As(err, &de):
					denied.Add(1)
					continue
				case err != nil:
					fail(err)
					return
				}
				granted.Add(1)
				if rng.IntN(4) == 0 {
					err = release(l, ctx, r)
				} else {
					actual := rng.Int64N(units + 1)
					if err = settle(l, ctx, r, actual); err == nil {
						settled.Add(actual)
					}
				}
				if err != nil {
					fail(err)
					return
				}
				if i%10 == 0 {
					check(l)
				}
			}
		})
	}
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	rep := mustReport(t, ledgers[0])
	if rep.Pool.Used != settled.Load() || rep.Pool.Reserved != 0 {
		t.Fatalf("used %d reserved %d, want used = settled actuals %d", rep.Pool.Used, rep.Pool.Reserved, settled.Load())
	}
	var byTenant int64
	for _, v := range rep.SpendByTenant {
		byTenant += v
	}
	if byTenant != rep.Pool.Used || rep.SpendByLabel["x"] != rep.Pool.Used {
		t.Fatalf("spend by tenant %d / label %d != used %d", byTenant, rep.SpendByLabel["x"], rep.Pool.Used)
	}
	if denied.Load() == 0 || granted.Load() == 0 {
		t.Fatalf("granted %d denied %d: the run never reached the limits", granted.Load(), denied.Load())
	}
	t.Logf("granted %d, denied %d, used %d of %d", granted.Load(), denied.Load(), rep.Pool.Used, int64(pool))
}

func TestConcurrentReserveSettle(t *testing.T) {
	ops := map[string]int{"memory": 400, "bolt": 30, "redis": 200}
	for _, kind := range storeKinds() {
		t.Run(kind.name, func(t *testing.T) {
			hammer(t, []Store{kind.open(t)}, 8, ops[kind.name])
		})
	}
	// Independent clients, each with its own connection pool and Ledger, as
	// separate replicas would be.
	t.Run("redis/replicas", func(t *testing.T) {
		var stores []Store
		for range 4 {
			stores = append(stores, NewRedisStore(redistest.Client(t)))
		}
		hammer(t, stores, 8, 200)
	})
}
