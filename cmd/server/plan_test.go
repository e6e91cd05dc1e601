package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/internal/redistest"
	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/upstream"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestPlanChangeForgetsTheRowCap: the key's plan is lowered to a 300-row
// cap while linkgate runs, after it learned that the key serves pages of
// 1,000. Once a replica has read the plan again, no reading loses a row:
// without forgetting, every capped page would be shorter than the most the
// key was served, and so the end of the data. The reconciler reads the plan
// in the usage it reconciles; replicas that do not hold the reconciler's
// lease read it on their own, as each learns its own cap.
func TestPlanChangeForgetsTheRowCap(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		shared   bool // on Redis, another holder keeping the reconciler's lease
	}{
		{"the reconciler", 1, false},
		{"replicas without the reconciler's lease", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}, Subscription: "Enterprise"})
			const every = 100 * time.Millisecond
			var redisAddr, budget string
			if tc.shared {
				redisAddr = redistest.Addr(t)
				budget = "plan" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
				held, err := quota.NewRedisStore(redistest.Client(t)).HoldLease(t.Context(), budget, "reconciler", "elsewhere", time.Hour)
				if err != nil || !held {
					t.Fatalf("the reconciler's lease: held %v, %v", held, err)
				}
			}
			type replica struct {
				c     clients
				logs  *logsink.Buffer
				reads atomic.Int32 // of limits-and-usage
			}
			replicas := make([]*replica, tc.replicas)
			for i := range replicas {
				r := &replica{}
				// Each replica reaches the simulator through its own front,
				// which counts its readings of the plan.
				front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					if strings.HasSuffix(req.URL.Path, upstream.LimitsAndUsagePath) {
						r.reads.Add(1)
					}
					sim.ServeHTTP(w, req)
				}))
				t.Cleanup(front.Close)
				cfg := testConfig(t, front.URL)
				cfg.ReconcileEvery = every
				if tc.shared {
					cfg.RedisAddr, cfg.BudgetName = redisAddr, budget
					cfg.TokenKey = "plan-token-key-0123456789abcdef0123"
				}
				var s *server
				s, r.logs = startTest(t, cfg)
				r.c = dial(t, s.grpcAddr)
				replicas[i] = r
			}
			for i, r := range replicas {
				if n := readWhole(t, r.c, fmt.Sprintf("sized-%d.example", 2500+i)); n != 2500+i {
					t.Fatalf("replica %d, before the plan changed: %d rows, want %d", i, n, 2500+i)
				}
			}

			sim.SetPlan("Advanced", 300)
			for i, r := range replicas {
				since := r.reads.Load()
				deadline := time.Now().Add(10 * time.Second)
				for r.reads.Load() < since+2 {
					if time.Now().After(deadline) {
						t.Fatalf("replica %d read the plan %d times in 10 s, want once a period of %v", i, r.reads.Load()-since, every)
					}
					time.Sleep(every / 4)
				}
			}

			for i, r := range replicas {
				if n := readWhole(t, r.c, fmt.Sprintf("sized-%d.example", 2600+i)); n != 2600+i {
					t.Errorf("replica %d, after the plan changed: %d rows, want %d", i, n, 2600+i)
				}
				if !strings.Contains(r.logs.String(), "the key's plan changed") {
					t.Errorf("replica %d does not log the plan's change", i)
				}
			}
		})
	}
}

// readWhole reads a target whole by one StreamBacklinks and counts its
// distinct rows.
func readWhole(t *testing.T, c clients, target string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(as(t.Context(), keyB), 30*time.Second)
	defer cancel()
	st, err := c.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: target, Select: []string{"url_from,url_to"}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return len(seen)
		}
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		for _, b := range m.GetBacklinks() {
			k := b.GetUrlFrom() + " " + b.GetUrlTo()
			if seen[k] {
				t.Fatalf("%s: row %q twice", target, k)
			}
			seen[k] = true
		}
	}
}
