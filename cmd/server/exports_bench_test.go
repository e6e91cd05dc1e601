package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// BenchmarkExport100k exports 100,000 rows with the key to itself at a
// scaled rate of 10 requests a second (ten times the real key's 60 a
// minute) and reports:
//
//   - wall-vs-ideal: the export's wall time ÷ (upstream requests needed ÷
//     the key's rate), goal ≤ 1.05;
//
//   - units-vs-ideal: the units the upstream charged ÷ (rows × the per-row
//     price), goal ≤ 1.002;
//
//   - peak-heap-MiB: the most heap the running export added;
//
//   - interactive-p50-ms / -max-ms: a List of another tenant, every 300 ms,
//     while two exports share the key.
//
//     go test -run '^$' -bench Export100k -benchtime 1x ./cmd/server/
func BenchmarkExport100k(b *testing.B) {
	const (
		rows     = 100_000
		pageRows = 1000
		perSec   = 10
	)
	for b.Loop() {
		sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}, RequestsPerMinute: perSec, RateWindow: time.Second,
			Latency: 30 * time.Millisecond, CacheTTL: -1, Logger: slog.New(slog.DiscardHandler)})
		srv := httptest.NewServer(sim)
		cfg := testConfig(b, srv.URL)
		// Slightly under the upstream's window, as an operator sets it.
		cfg.UpstreamRPM, cfg.UpstreamPageRows, cfg.PageCacheBytes = perSec*60*0.97, pageRows, 0
		cfg.BudgetUnits, cfg.LogLevel = 1_000_000_000, slog.LevelError
		s, _ := startTest(b, cfg)
		c := dial(b, s.grpcAddr)
		ops, exports := longrunningpb.NewOperationsClient(c.conn), v1.NewExportServiceClient(c.conn)
		ctx := context.Background()
		request := func(target string) *v1.CreateExportRequest {
			return &v1.CreateExportRequest{Request: &v1.CreateExportRequest_Backlinks{Backlinks: &v1.StreamBacklinksRequest{Target: target}}}
		}
		wait := func(key, name string) {
			for {
				op, err := ops.WaitOperation(as(ctx, key), &longrunningpb.WaitOperationRequest{Name: name})
				if err != nil {
					b.Fatal(err)
				}
				if op.GetDone() {
					if op.GetError() != nil {
						b.Fatalf("the export failed: %v", op.GetError())
					}
					return
				}
			}
		}
		price, err := c.backlinks.EstimateCost(as(ctx, keyB), &v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Backlinks{
			Backlinks: &v1.ListBacklinksRequest{Target: fmt.Sprintf("sized-%d.example", rows)}}})
		if err != nil {
			b.Fatal(err)
		}

		// The simulator shares the process: its data for the target (and
		// its index of the default order) is built before measuring, so
		// that the heap figure is linkgate's own.
		if _, err := c.backlinks.ListBacklinks(as(ctx, keyB), &v1.ListBacklinksRequest{Target: fmt.Sprintf("sized-%d.example", rows), PageSize: 1}); err != nil {
			b.Fatal(err)
		}

		// One export alone: time, units and memory.
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		var peak atomic.Uint64
		stop := make(chan struct{})
		var sampled sync.WaitGroup
		sampled.Go(func() {
			var m runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		})
		units0, requests0 := sim.KeyUsage(upstreamKey), sim.Requests()
		start := time.Now()
		op, err := exports.CreateExport(as(ctx, keyB), request(fmt.Sprintf("sized-%d.example", rows)))
		if err != nil {
			b.Fatal(err)
		}
		wait(keyB, op.GetName())
		wall := time.Since(start)
		close(stop)
		sampled.Wait()
		units, requests := sim.KeyUsage(upstreamKey)-units0, sim.Requests()-requests0
		needed := (rows + pageRows - 1) / pageRows
		ideal := time.Duration(float64(needed) / perSec * float64(time.Second))
		b.ReportMetric(wall.Seconds()/ideal.Seconds(), "wall-vs-ideal")
		b.ReportMetric(float64(units)/float64(rows*price.GetPerRowUnits()), "units-vs-ideal")
		b.ReportMetric(float64(requests), "upstream-requests")
		b.ReportMetric(float64(peak.Load()-min(peak.Load(), base.HeapInuse))/(1<<20), "peak-heap-MiB")

		// Two exports of two tenants share the key; a third tenant's List
		// calls pass them.
		var lat []time.Duration
		done := make(chan struct{})
		var listed sync.WaitGroup
		listed.Go(func() {
			for j := 0; ; j++ {
				select {
				case <-done:
					return
				case <-time.After(300 * time.Millisecond):
				}
				t0 := time.Now()
				if _, err := c.backlinks.ListRefDomains(as(ctx, keyA), &v1.ListRefDomainsRequest{
					Target: fmt.Sprintf("fresh-%d-%d.example", time.Now().UnixNano(), j), PageSize: 10}); err != nil {
					b.Errorf("interactive List: %v", err)
					continue
				}
				lat = append(lat, time.Since(t0))
			}
		})
		var both sync.WaitGroup
		for _, key := range []string{keyB, keyAdmin} {
			op, err := exports.CreateExport(as(ctx, key), request(fmt.Sprintf("sized-%d.example", rows/2)))
			if err != nil {
				b.Fatal(err)
			}
			both.Go(func() { wait(key, op.GetName()) })
		}
		both.Wait()
		close(done)
		listed.Wait()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		if len(lat) > 0 {
			b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "interactive-p50-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "interactive-max-ms")
		}
		srv.Close()
	}
}
