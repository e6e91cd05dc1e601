package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/redistest"
	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// cluster is several linkgate replicas sharing one Redis (ledger, rate,
// page cache) and one upstream key, as deploy/kubernetes runs them, in one
// process (as gubernator tests its cluster).
type clusterRun struct {
	replicas int
	// The key's rate: perWindow requests per window at the simulator,
	// which answers 429 beyond; linkgate is configured with rpm.
	perWindow int
	window    time.Duration
	rpm       float64
	latency   time.Duration // of every upstream data response
	streams   int           // bulk streams of tenant "bulk", spread over the replicas
	duration  time.Duration // how long the bulk streams run
	// interactiveEvery spaces the interactive tenant's List calls.
	interactiveEvery time.Duration
}

// clusterFigures is what a run measured.
type clusterFigures struct {
	requests    int           // upstream requests, all replicas
	elapsed     time.Duration // from the first to the last upstream request
	maxInWindow int           // most requests in any sliding window
	rateLimited int           // 429s the upstream answered
	bulkRows    int64
	interactive []time.Duration // latency of each interactive List
	// ahead is, for each interactive List, the upstream requests of others
	// that arrived between the call and its own request.
	ahead      []int
	ledger     int64 // the ledger's used units after a reconcile
	upstream   int64 // what the upstream charged
	reserved   int64 // left reserved after the run
	corrected  int64 // provisional units the reconcile took back
	coalesced  int64
	failedList int
}

type arrival struct {
	at     time.Time
	target string
}

func runCluster(t testing.TB, r clusterRun) clusterFigures {
	t.Helper()
	addr := redistest.Addr(t)
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}, RequestsPerMinute: r.perWindow,
		RateWindow: r.window, Latency: r.latency, Logger: slog.New(slog.DiscardHandler)})
	var mu sync.Mutex
	var arrivals []arrival
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, arrival{at: time.Now(), target: req.URL.Query().Get("target")})
		mu.Unlock()
		sim.ServeHTTP(w, req)
	}))
	defer srv.Close()

	budget := fmt.Sprintf("cluster%d", time.Now().UnixNano())
	tenants := filepath.Join(t.TempDir(), "tenants.json")
	if err := os.WriteFile(tenants, []byte(`{"tenants": [
  {"name": "bulk", "role": "reader", "keys": [{"sha256": "`+sum(keyA)+`"}]},
  {"name": "interactive", "role": "reader", "keys": [{"sha256": "`+sum(keyB)+`"}]}
]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var replicas []clients
	for range r.replicas {
		cfg := testConfig(t, srv.URL)
		cfg.RedisAddr, cfg.BudgetName, cfg.BudgetUnits = addr, budget, 1_000_000_000
		cfg.TokenKey = "cluster-token-key-0123456789abcdef"
		cfg.UpstreamRPM, cfg.UpstreamPageRows = r.rpm, 500
		cfg.TenantsFile, cfg.LogLevel = tenants, slog.LevelError
		s, _ := startTest(t, cfg)
		replicas = append(replicas, dial(t, s.grpcAddr))
	}

	var fig clusterFigures
	ctx, cancel := context.WithTimeout(context.Background(), r.duration)
	defer cancel()
	var wg sync.WaitGroup
	var rows atomic.Int64
	for i := range r.streams {
		wg.Go(func() {
			st, err := replicas[i%len(replicas)].backlinks.StreamBacklinks(as(ctx, keyA),
				&v1.StreamBacklinksRequest{Target: fmt.Sprintf("sized-%d.example", 100_000+i)})
			if err != nil {
				return
			}
			for {
				m, err := st.Recv()
				if err != nil {
					return
				}
				rows.Add(int64(len(m.GetBacklinks())))
			}
		})
	}
	type call struct {
		start  time.Time
		target string
	}
	var calls []call
	wg.Go(func() {
		tick := time.NewTicker(r.interactiveEvery)
		defer tick.Stop()
		for j := 0; ; j++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			target := fmt.Sprintf("fresh-%d-%d.example", time.Now().UnixNano(), j)
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			start := time.Now()
			_, err := replicas[j%len(replicas)].backlinks.ListRefDomains(as(cctx, keyB),
				&v1.ListRefDomainsRequest{Target: target, PageSize: 10})
			ccancel()
			if err != nil {
				fig.failedList++
				t.Logf("interactive List: %v", err)
				continue
			}
			fig.interactive = append(fig.interactive, time.Since(start))
			calls = append(calls, call{start: start, target: target})
		}
	})
	wg.Wait()
	fig.bulkRows = rows.Load()

	// Every reservation ends (streams cut in flight settle provisionally),
	// then a reconcile brings the ledger to the upstream's figure.
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ledger, err := quota.New(quota.NewRedisStore(rdb), quota.Config{Budget: budget, PoolLimit: 1_000_000_000, ResetDay: 1, Lease: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep, err := ledger.AllUsage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Pool.Reserved == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(r.latency + 50*time.Millisecond) // requests cut in flight end at the upstream too
	d, err := ledger.Reconcile(context.Background(), keyUsage{sim})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ledger.AllUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fig.ledger, fig.upstream, fig.reserved, fig.corrected = rep.Pool.Used, sim.KeyUsage(upstreamKey), rep.Pool.Reserved, d.Corrected
	fig.rateLimited = sim.RateLimited()

	mu.Lock()
	defer mu.Unlock()
	fig.requests = len(arrivals)
	if len(arrivals) > 1 {
		fig.elapsed = arrivals[len(arrivals)-1].at.Sub(arrivals[0].at)
	}
	for i := range arrivals {
		n := 0
		for j := i; j < len(arrivals) && arrivals[j].at.Sub(arrivals[i].at) < r.window; j++ {
			n++
		}
		fig.maxInWindow = max(fig.maxInWindow, n)
	}
	for _, c := range calls {
		ahead := 0
		for _, a := range arrivals {
			if a.target == c.target {
				break
			}
			if !a.at.Before(c.start) {
				ahead++
			}
		}
		fig.ahead = append(fig.ahead, ahead)
	}
	return fig
}

// keyUsage reads the simulator's usage of the key, as limits-and-usage
// reports it.
type keyUsage struct{ sim *ahrefssim.Server }

func (k keyUsage) UpstreamUsage(context.Context) (int64, time.Time, error) {
	return k.sim.KeyUsage(upstreamKey), time.Time{}, nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// TestClusterSharesTheKey: three replicas on one Redis and one key, a bulk
// tenant streaming on all of them and an interactive tenant calling List:
// the upstream never answers 429 and never sees more than its rate in any
// window, each interactive call waits about one slot (behind at most three
// other requests, below), and after a reconcile the ledger equals what the upstream
// charged, with nothing left reserved. The key's minute is scaled to two
// seconds (20 requests per 2 s is 600 a minute) to keep the run short;
// linkgate is set 10% below it: the headroom that absorbs the delay between
// linkgate's spacing and the upstream's counting, which a scaled minute
// magnifies (tens of milliseconds on a loaded machine under the race
// detector are seconds of a real minute).
func TestClusterSharesTheKey(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of traffic")
	}
	fig := runCluster(t, clusterRun{replicas: 3, perWindow: 20, window: 2 * time.Second, rpm: 540,
		latency: 30 * time.Millisecond, streams: 6, duration: 4 * time.Second, interactiveEvery: 400 * time.Millisecond})
	t.Logf("%d upstream requests in %s, at most %d in a window, %d 429s; bulk rows %d; interactive p50 %s max %s ahead %v; ledger %d upstream %d (corrected %d)",
		fig.requests, fig.elapsed, fig.maxInWindow, fig.rateLimited, fig.bulkRows,
		percentile(fig.interactive, .5), percentile(fig.interactive, 1), fig.ahead, fig.ledger, fig.upstream, fig.corrected)
	if fig.rateLimited != 0 || fig.maxInWindow > 20 {
		t.Errorf("the upstream answered %d 429s and saw %d requests in one window of 20", fig.rateLimited, fig.maxInWindow)
	}
	if fig.requests < 20 || fig.bulkRows == 0 || len(fig.interactive) < 4 || fig.failedList > 0 {
		t.Errorf("too little traffic to judge: %d requests, %d bulk rows, %d interactive calls (%d failed)",
			fig.requests, fig.bulkRows, len(fig.interactive), fig.failedList)
	}
	// Ahead of an interactive call: the request already in its slot, one
	// granted on another replica before the call's claim reached Redis,
	// and, on a machine loaded enough that the call takes longer than a
	// slot to reach the queue (the race detector, 3 replicas on 2 cores),
	// one more. Bulk work never passes it once it has claimed its slot.
	for i, a := range fig.ahead {
		if a > 3 {
			t.Errorf("interactive call %d waited behind %d other requests, want at most 3", i, a)
		}
	}
	if fig.reserved != 0 || fig.ledger != fig.upstream {
		t.Errorf("after the reconcile: %d reserved, ledger %d, upstream %d", fig.reserved, fig.ledger, fig.upstream)
	}
}

// BenchmarkClusterLoad runs the cluster for LINKGATE_LOAD_SECONDS (default
// 20) at a scaled key rate of 10 requests a second and reports upstream
// requests per minute across the replicas against the key's rate, 429s,
// the interactive calls' latency while bulk streams run, and the ledger's
// difference from the upstream after a reconcile.
//
//	go test -run '^$' -bench ClusterLoad -benchtime 1x ./cmd/server/
func BenchmarkClusterLoad(b *testing.B) {
	secs := 20
	if v := os.Getenv("LINKGATE_LOAD_SECONDS"); v != "" {
		fmt.Sscan(v, &secs)
	}
	for b.Loop() {
		fig := runCluster(b, clusterRun{replicas: 3, perWindow: 10, window: time.Second, rpm: 570,
			latency: 30 * time.Millisecond, streams: 12, duration: time.Duration(secs) * time.Second,
			interactiveEvery: 300 * time.Millisecond})
		perMinute := float64(fig.requests) / fig.elapsed.Seconds() * 60
		// The key's rate is 10 a second: 600 "a minute" of the scaled clock.
		b.ReportMetric(perMinute, "upstream-req/min")
		b.ReportMetric(600, "key-rate/min")
		b.ReportMetric(float64(fig.maxInWindow), "max-req/window-of-10")
		b.ReportMetric(float64(fig.rateLimited), "429s")
		b.ReportMetric(float64(percentile(fig.interactive, .5).Milliseconds()), "interactive-p50-ms")
		b.ReportMetric(float64(percentile(fig.interactive, .95).Milliseconds()), "interactive-p95-ms")
		b.ReportMetric(float64(percentile(fig.interactive, 1).Milliseconds()), "interactive-max-ms")
		b.ReportMetric(float64(fig.ledger-fig.upstream), "ledger-minus-upstream")
		b.ReportMetric(float64(fig.bulkRows)/fig.elapsed.Seconds(), "bulk-rows/s")
	}
}
