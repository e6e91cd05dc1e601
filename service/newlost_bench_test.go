package service

import (
	"context"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

// BenchmarkStreamNewLost measures a whole new/lost stream through the
// service (both feeds of a 50,000-link target since 2020, 1,000-row
// upstream pages, 1,000-event messages): events per second, and the peak
// of the live heap while it runs, sampled every millisecond, above the
// heap before it started.
func BenchmarkStreamNewLost(b *testing.B) {
	h := newHarness(b, harnessOptions{pageRows: 1000, noCache: true})
	h.sim.SetCacheTTL(-1)
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	heap := func() int64 {
		metrics.Read(sample)
		return int64(sample[0].Value.Uint64())
	}
	var events int64
	var peak atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		runtime.GC()
		base := heap()
		done := make(chan struct{})
		go func() {
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					if d := heap() - base; d > peak.Load() {
						peak.Store(d)
					}
				}
			}
		}()
		b.StartTimer()
		st, err := h.backlinks.StreamNewLostBacklinks(context.Background(), &v1.StreamNewLostBacklinksRequest{
			Target: benchTarget, Since: "2020-01-01"})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			msg, err := st.Recv()
			if err != nil {
				break
			}
			n += len(msg.GetNewLostBacklinks())
		}
		b.StopTimer()
		close(done)
		if n == 0 {
			b.Fatal("no event streamed: the benchmark measures nothing")
		}
		events += int64(n)
		b.StartTimer()
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(peak.Load())/(1<<20), "MiB-heap-peak")
	b.ReportMetric(float64(events)/float64(b.N), "events/op")
}
