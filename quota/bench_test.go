package quota

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/redistest"
)

// BenchmarkReserveSettle measures one Reserve plus one Settle, the unit of
// work per upstream page, on each store; it reports ops/s and the p99 of
// the pair.
func BenchmarkReserveSettle(b *testing.B) {
	for _, kind := range storeKinds() {
		b.Run(kind.name, func(b *testing.B) {
			ctx := context.Background()
			l, err := New(kind.open(b), Config{Budget: uniqueBudget(), PoolLimit: maxUnits, ResetDay: 1,
				Lease: time.Minute, Tenants: map[string]int64{"a": maxUnits}})
			if err != nil {
				b.Fatal(err)
			}
			openPeriod(b, l)
			lat := make([]time.Duration, 0, 1024)
			start := time.Now()
			for b.Loop() {
				t := time.Now()
				r, err := l.Reserve(ctx, "a", "backlinks", 2)
				if err != nil {
					b.Fatal(err)
				}
				if err := settle(l, ctx, r, 1); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t))
			}
			report(b, start, lat)
		})
	}
}

// BenchmarkReserveSettleParallel is the same pair from GOMAXPROCS×4
// goroutines sharing one Ledger, as one busy replica would.
func BenchmarkReserveSettleParallel(b *testing.B) {
	for _, kind := range storeKinds() {
		b.Run(kind.name, func(b *testing.B) {
			ctx := context.Background()
			l, err := New(kind.open(b), Config{Budget: uniqueBudget(), PoolLimit: maxUnits, ResetDay: 1, Lease: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			openPeriod(b, l)
			b.SetParallelism(4)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r, err := l.Reserve(ctx, "a", "backlinks", 2)
					if err != nil {
						b.Error(err)
						return
					}
					if err := settle(l, ctx, r, 1); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
		})
	}
}

func report(b *testing.B, start time.Time, lat []time.Duration) {
	b.ReportMetric(float64(len(lat))/time.Since(start).Seconds(), "ops/s")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

// BenchmarkRedisStepVsEvalsha compares one ledger step of a page (Reserve
// plus Finish, each one FCALL returning what is left) with the floor of the
// same work: two EVALSHA of a script that does nothing, through the same
// go-redis client at the same concurrency. The two run in alternating
// rounds, so that both see the same machine. ratio is the ledger's
// throughput over the floor's (floor time over ledger time per step): what
// is left of raw EVALSHA once the ledger's scripts do their work.
func BenchmarkRedisStepVsEvalsha(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			ctx := context.Background()
			c := redistest.Client(b)
			l, err := New(NewRedisStore(c), Config{Budget: uniqueBudget(), PoolLimit: maxUnits, ResetDay: 1,
				Lease: time.Minute, Tenants: map[string]int64{"a": maxUnits}})
			if err != nil {
				b.Fatal(err)
			}
			openPeriod(b, l)
			noop := redis.NewScript("return 1")
			if err := noop.Load(ctx, c).Err(); err != nil {
				b.Fatal(err)
			}
			step := func() error {
				r, err := l.Reserve(ctx, "a", "backlinks", 2)
				if err != nil {
					return err
				}
				_, err = l.Finish(ctx, r, Outcome{Actual: 1})
				return err
			}
			floor := func() error {
				if err := noop.EvalSha(ctx, c, []string{"k"}).Err(); err != nil {
					return err
				}
				return noop.EvalSha(ctx, c, []string{"k"}).Err()
			}
			parallel := func(n int, fn func() error) time.Duration {
				var wg sync.WaitGroup
				var next atomic.Int64
				start := time.Now()
				for range clients {
					wg.Go(func() {
						for next.Add(1) <= int64(n) {
							if err := fn(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				return time.Since(start)
			}
			const round = 200
			var floorT, ledgerT time.Duration
			for done := 0; done < b.N; done += round {
				n := min(round, b.N-done)
				b.StopTimer()
				floorT += parallel(n, floor)
				b.StartTimer()
				ledgerT += parallel(n, step)
			}
			ledgerPer, floorPer := ledgerT/time.Duration(b.N), floorT/time.Duration(b.N)
			b.ReportMetric(float64(b.N)/ledgerT.Seconds(), "steps/s")
			b.ReportMetric(float64(ledgerPer.Microseconds()), "µs/step")
			b.ReportMetric(float64(floorPer.Microseconds()), "floor-µs/step")
			b.ReportMetric(float64(floorPer)/float64(ledgerPer), "ratio")
		})
	}
}
