package scheduler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/redistest"
	"github.com/linkgate/linkgate/quota"
)

// grantLog numbers the calls sent by every replica in the order they go.
type grantLog struct {
	mu    sync.Mutex
	bulk  int // bulk calls sent so far
	total int
}

func (g *grantLog) sent(c Class) (bulkSoFar int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total++
	if c == Bulk {
		g.bulk++
	}
	return g.bulk
}

func (g *grantLog) bulkSent() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.bulk
}

// TestInteractiveFirstAcrossReplicas: three replicas share one key's rate
// in Redis, each with four bulk streams always waiting; an interactive
// call arriving at any replica goes within about two slots, counted as
// bulk calls sent by any replica between its arrival and its own send.
func TestInteractiveFirstAcrossReplicas(t *testing.T) {
	c := redistest.Client(t)
	name := fmt.Sprintf("i%d", time.Now().UnixNano())
	const rpm = 600 // 100 ms a slot
	var log grantLog
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	var replicas []*Scheduler
	for range 3 {
		ledger, err := quota.New(quota.NewMemoryStore(), quota.Config{Budget: "b", PoolLimit: quota.MaxUnits, ResetDay: 1, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ledger.Reconcile(ctx, upstreamUsed(0)); err != nil {
			t.Fatal(err)
		}
		s := newScheduler(t, Config{Limiter: NewRedisLimiter(c, "test:rate", name, rpm), Ledger: ledger})
		replicas = append(replicas, s)
		for range 4 { // bulk streams: one page always waiting
			wg.Go(func() {
				for ctx.Err() == nil {
					_, _ = s.Do(ctx, Call{Tenant: "bulk", Label: "x", Class: Bulk, Units: 1, Send: func(ctx context.Context) (Response, error) {
						// As the upstream client does: a slot per attempt,
						// and now and then a 429 that pauses every replica.
						for attempt := 1; ; attempt++ {
							if err := s.Gate().Wait(ctx); err != nil {
								return Response{Requests: attempt - 1}, err
							}
							log.sent(Bulk)
							time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond) // the upstream's answer
							if rand.IntN(4) > 0 {
								return Response{Charged: 1, Reported: true, Requests: attempt}, nil
							}
							s.Gate().Throttled(ctx, time.Duration(1+rand.IntN(3))*100*time.Millisecond)
						}
					}})
				}
			})
		}
	}
	eventually(t, "the bulk streams to run", func() bool { return log.bulkSent() >= 6 })
	worst, worstAt := 0, 0
	for i := range 30 {
		s := replicas[rand.IntN(len(replicas))]
		// Arrive anywhere within two slots, as a person would.
		time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond)
		arrived := log.bulkSent()
		var passed int
		if _, err := s.Do(ctx, Call{Tenant: "person", Label: "x", Units: 1, Send: func(context.Context) (Response, error) {
			passed = log.sent(Interactive) - arrived
			return Response{Charged: 1, Reported: true, Requests: 1}, nil
		}}); err != nil {
			t.Fatal(err)
		}
		if passed > worst {
			worst, worstAt = passed, i
		}
	}
	if worst > 2 {
		t.Fatalf("interactive call %d waited while %d bulk calls went, want at most 2", worstAt, worst)
	}
	t.Logf("at most %d bulk calls went ahead of an interactive call", worst)
}
