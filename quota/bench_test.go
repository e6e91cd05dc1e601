package quota

import (
	"context"
	"slices"
	"testing"
	"time"
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
			lat := make([]time.Duration, 0, 1024)
			start := time.Now()
			for b.Loop() {
				t := time.Now()
				r, err := l.Reserve(ctx, "a", "backlinks", 2)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Settle(ctx, r, 1); err != nil {
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
			b.SetParallelism(4)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r, err := l.Reserve(ctx, "a", "backlinks", 2)
					if err != nil {
						b.Error(err)
						return
					}
					if err := l.Settle(ctx, r, 1); err != nil {
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
