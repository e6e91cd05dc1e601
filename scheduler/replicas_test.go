package scheduler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/redistest"
	"github.com/linkgate/linkgate/quota"
)

// slotOrder numbers the key's slots in the limiter's own order: every take
// runs in one Redis transaction with an INCR of a counter, so a slot's
// number is its place among all replicas' takes, whatever the machine's
// load does to the goroutines that use the slots afterwards. An arrival
// is numbered by the same counter.
type slotOrder struct {
	c     redis.UniversalClient
	key   string
	mu    sync.Mutex
	slots []slot // every slot granted, with the class it went to
}

type slot struct {
	n     int64
	class Class
}

// now is the number an event gets in the order of takes.
func (o *slotOrder) now(ctx context.Context) (int64, error) { return o.c.Incr(ctx, o.key).Result() }

// interactive is the number of the slot of the i-th interactive call, in
// the order they were made (one at a time), if it was granted. The slot
// may be numbered before the call's arrival: the queue hands a slot to
// whoever waits when the limiter's answer comes back.
func (o *slotOrder) interactive(i int) (n int64, found bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.slots {
		if s.class != Interactive {
			continue
		}
		if i == 0 {
			return s.n, true
		}
		i--
	}
	return 0, false
}

// between counts the slots numbered between from and to.
func (o *slotOrder) between(from, to int64) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	k := 0
	for _, s := range o.slots {
		if s.n > from && s.n < to {
			k++
		}
	}
	return k
}

// orderedLimiter is a replica's RedisLimiter whose takes are numbered.
type orderedLimiter struct {
	*RedisLimiter
	order *slotOrder
	last  int64 // the last slot taken; used on the dispatcher's goroutine only
	// done is the number of this replica's last take whose outcome is
	// noted: takes are made one at a time, so every take numbered below
	// it is noted too.
	done atomic.Int64
}

// Take implements Limiter.
func (l *orderedLimiter) Take(ctx context.Context, urgent bool) (time.Duration, error) {
	var n *redis.IntCmd
	var take *redis.Cmd
	if _, err := l.order.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.Incr(ctx, l.order.key)
		take = l.take(ctx, p, urgent)
		return nil
	}); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrLimiterUnavailable, err)
	}
	us, err := take.Int64()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrLimiterUnavailable, err)
	}
	if us == 0 {
		l.last = n.Val() // noted when the queue says whom the slot went to
	} else {
		l.done.Store(n.Val())
	}
	return time.Duration(us) * time.Microsecond, nil
}

// granted notes the class the last slot went to.
func (l *orderedLimiter) granted(c Class) {
	l.order.mu.Lock()
	defer l.order.mu.Unlock()
	l.order.slots = append(l.order.slots, slot{l.last, c})
	l.done.Store(l.last)
}

// TestInteractiveFirstAcrossReplicas: three replicas share one key's rate
// in Redis, each with four bulk streams always waiting; an interactive
// call arriving at any replica goes within about two slots, counted as the
// slots the limiter granted to any replica's bulk work between its arrival
// and its own slot, in the limiter's order.
func TestInteractiveFirstAcrossReplicas(t *testing.T) {
	c := redistest.Client(t)
	name := fmt.Sprintf("i%d", time.Now().UnixNano())
	const rpm = 600 // 100 ms a slot
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	if err := scriptTake.Load(ctx, c).Err(); err != nil { // for the transactions' EVALSHA
		t.Fatal(err)
	}
	order := &slotOrder{c: c, key: "test:order:" + name}
	var sent atomic.Int64 // bulk requests sent
	var replicas []*Scheduler
	var limiters []*orderedLimiter
	for range 3 {
		ledger, err := quota.New(quota.NewMemoryStore(), quota.Config{Budget: "b", PoolLimit: quota.MaxUnits, ResetDay: 1, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ledger.Reconcile(ctx, upstreamUsed(0)); err != nil {
			t.Fatal(err)
		}
		lim := &orderedLimiter{RedisLimiter: NewRedisLimiter(c, "test:rate", name, rpm), order: order}
		s := newScheduler(t, Config{Limiter: lim, Ledger: ledger})
		s.q.granted = lim.granted
		limiters = append(limiters, lim)
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
							sent.Add(1)
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
	eventually(t, "the bulk streams to run", func() bool { return sent.Load() >= 6 })
	worst, worstAt := 0, 0
	for i := range 30 {
		s := replicas[rand.IntN(len(replicas))]
		// Arrive anywhere within two slots, as a person would.
		time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond)
		arrived, err := order.now(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Do(ctx, Call{Tenant: "person", Label: "x", Units: 1, Send: ok(1)}); err != nil {
			t.Fatal(err)
		}
		own, found := order.interactive(i)
		if !found {
			t.Fatalf("interactive call %d was sent without a slot of its own", i)
		}
		// Every slot numbered before its own is noted once each replica
		// has noted a take after it.
		eventually(t, "the replicas to note their slots", func() bool {
			for _, l := range limiters {
				if l.done.Load() < own {
					return false
				}
			}
			return true
		})
		passed := order.between(arrived, own)
		if passed > worst {
			worst, worstAt = passed, i
		}
	}
	if worst > 2 {
		t.Fatalf("interactive call %d waited while %d slots went to bulk work, want at most 2", worstAt, worst)
	}
	t.Logf("at most %d slots went to bulk work ahead of an interactive call", worst)
}
