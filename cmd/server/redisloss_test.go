package main

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/internal/redistest"
	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestServerRebuildsALostRedisLedger: the Redis under a running server is
// restarted empty. Paid pages are refused UNAVAILABLE (LEDGER_REBUILDING,
// or the ledger unreachable while Redis is down) until the rebuild that the
// first refusal asked for at once, not at the periodic reconciliation ten
// minutes away; after it the ledger holds the upstream's figure.
func TestServerRebuildsALostRedisLedger(t *testing.T) {
	rs := redistest.Start(t)
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}})
	up := httptest.NewServer(sim)
	t.Cleanup(up.Close)
	cfg := testConfig(t, up.URL)
	cfg.RedisAddr, cfg.TokenKey = rs.Addr, "redis-loss-token-key-0123456789abcdef"
	cfg.BudgetName, cfg.ReconcileEvery = "loss", 10*time.Minute
	s, logs := startTest(t, cfg)
	c := dial(t, s.grpcAddr)
	ctx := as(context.Background(), keyB)
	page := 0
	list := func() error {
		page++ // another target each time: no page cache hit
		_, err := c.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: fmt.Sprintf("sized-%d.example", 200+page), PageSize: 100})
		return err
	}
	if err := list(); err != nil {
		t.Fatal(err)
	}
	rs.Restart()
	var refusals []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := list()
		if err == nil {
			break
		}
		st := status.Convert(err)
		reason := ""
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				reason = info.GetReason()
			}
		}
		if st.Code() != codes.Unavailable || (reason != "LEDGER_REBUILDING" && reason != "LEDGER_UNAVAILABLE") {
			t.Fatalf("a page while the ledger is lost: %v (%s), want UNAVAILABLE", err, reason)
		}
		refusals = append(refusals, reason)
		if time.Now().After(deadline) {
			t.Fatalf("not rebuilt after 10 s: %v\nlog:\n%s", refusals, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "rebuilt the ledger's period") || !strings.Contains(logs.String(), "no persistence") {
		t.Fatalf("the log says nothing of the rebuild or of Redis' persistence:\n%s", logs)
	}
	l, err := quota.New(quota.NewRedisStore(rs.Client()), quota.Config{Budget: "loss", PoolLimit: cfg.BudgetUnits,
		ResetDay: cfg.ResetDay, Lease: cfg.Lease})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := l.AllUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pool.Used != sim.KeyUsage(upstreamKey) || rep.Rebuilt == 0 {
		t.Fatalf("ledger used %d (rebuilt %d), upstream %d", rep.Pool.Used, rep.Rebuilt, sim.KeyUsage(upstreamKey))
	}
	t.Logf("refused while rebuilding: %v", refusals)
}

// TestServerRefusesAnEvictingRedis: a Redis that may evict keys does not
// hold the ledger: the start fails and says which setting to change.
func TestServerRefusesAnEvictingRedis(t *testing.T) {
	rs := redistest.Start(t, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.RedisAddr, cfg.TokenKey = rs.Addr, "redis-loss-token-key-0123456789abcdef"
	logs := &logsink.Buffer{}
	s, err := start(t.Context(), cfg, newLogger(cfg, logs))
	if err == nil {
		_ = s.shutdown()
		t.Fatal("started on an allkeys-lru Redis")
	}
	if !strings.Contains(err.Error(), "allkeys-lru") || !strings.Contains(err.Error(), "noeviction") {
		t.Fatalf("start: %v; want the policy named and noeviction asked for", err)
	}
}

// TestStreamsOutliveALostRedisLedger: four streams are reading when the
// Redis under the server restarts empty. Pages in flight were paid: they
// are delivered and recorded as direct charges, and no stream ends
// INTERNAL; a stream refused while the ledger is rebuilt ends UNAVAILABLE
// with its token and resumes. Every row arrives once, and after a
// reconciliation the ledger holds the upstream's figure, within the pages
// in flight.
func TestStreamsOutliveALostRedisLedger(t *testing.T) {
	const streams, rows = 4, 3000
	rs := redistest.Start(t)
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}})
	sim.SetLatency(10 * time.Millisecond)
	up := httptest.NewServer(sim)
	t.Cleanup(up.Close)
	cfg := testConfig(t, up.URL)
	cfg.RedisAddr, cfg.TokenKey = rs.Addr, "redis-loss-token-key-0123456789abcdef"
	cfg.BudgetName, cfg.UpstreamPageRows = "streams", 100
	s, _ := startTest(t, cfg)
	c := dial(t, s.grpcAddr)
	ctx, cancel := context.WithTimeout(as(context.Background(), keyB), 60*time.Second)
	defer cancel()
	got := make([]int, streams)
	var resumed atomic.Int64
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			token := ""
			for {
				st, err := c.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{
					Target: fmt.Sprintf("sized-%d.example", rows), PageSize: 100, PageToken: token})
				if err != nil {
					t.Error(err)
					return
				}
				for {
					m, err := st.Recv()
					if err == io.EOF {
						return
					}
					if err != nil {
						stt := status.Convert(err)
						if stt.Code() != codes.Unavailable {
							t.Errorf("stream %d: %v, want the stream to go on or end UNAVAILABLE with its token", i, err)
							return
						}
						for _, d := range stt.Details() {
							if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetMetadata()["page_token"] != "" {
								token = info.GetMetadata()["page_token"]
							}
						}
						resumed.Add(1)
						time.Sleep(50 * time.Millisecond)
						break
					}
					got[i] += len(m.GetBacklinks())
					if m.GetNextPageToken() != "" {
						token = m.GetNextPageToken()
					}
				}
			}
		})
	}
	for sim.Requests() < 20 {
		time.Sleep(time.Millisecond)
	}
	rs.Restart()
	wg.Wait()
	for i, n := range got {
		if n != rows {
			t.Errorf("stream %d delivered %d rows, want %d exactly", i, n, rows)
		}
	}
	l, err := quota.New(quota.NewRedisStore(rs.Client()), quota.Config{Budget: "streams", PoolLimit: cfg.BudgetUnits,
		ResetDay: cfg.ResetDay, Lease: cfg.Lease})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Reconcile(context.Background(), keyUsage{sim}); err != nil {
		t.Fatal(err)
	}
	rep, err := l.AllUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	upstream := sim.KeyUsage(upstreamKey)
	if rep.Pool.Used < upstream || rep.Pool.Used > upstream+streams*2*101*6 || rep.Pool.Reserved != 0 {
		t.Fatalf("ledger used %d reserved %d, upstream %d", rep.Pool.Used, rep.Pool.Reserved, upstream)
	}
	t.Logf("upstream %d, ledger %d (rebuilt %d, direct %d); %d streams resumed", upstream, rep.Pool.Used, rep.Rebuilt, rep.Direct, resumed.Load())
}

// TestServerReconcilesARestartedRedis: a Redis that restarts with its
// data (AOF) may still have lost its last writes; the readiness check sees
// another run id, logs what the persistence keeps, and reconciles at once.
func TestServerReconcilesARestartedRedis(t *testing.T) {
	rs := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.RedisAddr, cfg.TokenKey = rs.Addr, "redis-loss-token-key-0123456789abcdef"
	cfg.ReconcileEvery = 10 * time.Minute
	s, logs := startTest(t, cfg)
	reconciled := func() int { return strings.Count(logs.String(), "reconciled the ledger with the upstream") }
	before := reconciled()
	rs.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for reconciled() == before {
		if time.Now().After(deadline) {
			t.Fatalf("no reconciliation after the restart:\n%s", logs)
		}
		s.checkReadiness()
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "no acknowledged write"); n < 2 {
		t.Fatalf("the persistence was logged %d times, want at start and after the restart:\n%s", n, logs)
	}
}
