package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/redistest"
	"github.com/linkgate/linkgate/upstream"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestOneReconcilerPerBudget: three replicas sharing a Redis ledger each
// run the reconciler's loop, but one at a time reconciles: the upstream's
// usage is read about once per period of the loop, not three times.
func TestOneReconcilerPerBudget(t *testing.T) {
	addr := redistest.Addr(t)
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}})
	var reads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, upstream.LimitsAndUsagePath) {
			reads.Add(1)
		}
		sim.ServeHTTP(w, r)
	}))
	defer srv.Close()
	const every = 200 * time.Millisecond
	budget := "reconcile" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	start := time.Now()
	for range 3 {
		cfg := testConfig(t, srv.URL)
		cfg.RedisAddr, cfg.BudgetName, cfg.ReconcileEvery = addr, budget, every
		cfg.TokenKey = "reconcile-token-key-0123456789abcdef"
		startTest(t, cfg)
	}
	time.Sleep(10 * every)
	n, runs := int(reads.Load()), int(time.Since(start)/every)
	if n == 0 || n > runs+1 {
		t.Fatalf("%d reads of the upstream's usage in %d periods of the reconciler, want one a period at most", n, runs)
	}
}
