package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/poll"
	"github.com/linkgate/linkgate/internal/redistest"
	"github.com/linkgate/linkgate/quota"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// handLimiter gives a slot only when the test hands one out, so that the
// order of admission is decided by the queue alone.
type handLimiter struct {
	slots    chan struct{}
	interval time.Duration
	takes    atomic.Int32
	paused   atomic.Int64
}

func newHandLimiter() *handLimiter {
	return &handLimiter{slots: make(chan struct{}, 100), interval: time.Second}
}

func (l *handLimiter) Take(context.Context, bool) (time.Duration, error) {
	select {
	case <-l.slots:
		l.takes.Add(1)
		return 0, nil
	default:
		return time.Millisecond, nil
	}
}

func (l *handLimiter) Pause(_ context.Context, d time.Duration) error {
	l.paused.Store(int64(d))
	return nil
}

func (l *handLimiter) Interval() time.Duration { return l.interval }

func (l *handLimiter) give(n int) {
	for range n {
		l.slots <- struct{}{}
	}
}

func newLedger(t *testing.T, clk *clock.Fake) *quota.Ledger {
	t.Helper()
	return newLedgerOn(t, quota.NewMemoryStore(), clk)
}

func newLedgerOn(t *testing.T, store quota.Store, clk *clock.Fake) *quota.Ledger {
	t.Helper()
	l, err := quota.New(store, quota.Config{Budget: fmt.Sprintf("b%d", time.Now().UnixNano()), PoolLimit: 1_000_000, ResetDay: 1,
		Lease: time.Minute, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	// A first start: the period is opened by the first reconciliation.
	if _, err := l.Reconcile(context.Background(), upstreamUsed(0)); err != nil {
		t.Fatal(err)
	}
	return l
}

// upstreamUsed is the upstream's usage as a fixed figure.
type upstreamUsed int64

func (u upstreamUsed) UpstreamUsage(context.Context) (int64, time.Time, error) {
	return int64(u), time.Time{}, nil
}

func newScheduler(t *testing.T, cfg Config) *Scheduler {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func pool(t *testing.T, l *quota.Ledger) quota.Report {
	t.Helper()
	r, err := l.AllUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 5*time.Second, time.Millisecond, what, cond)
}

// ok is a Send that answers at once with a reported cost.
func ok(charged int64) func(context.Context) (Response, error) {
	return func(context.Context) (Response, error) {
		return Response{Body: []byte("body"), Charged: charged, Reported: true, Requests: 1}, nil
	}
}

// TestNothingReservedWhileQueued: calls waiting for a rate slot hold no
// units, so they cannot make other callers' reservations fail, and a
// replica that dies with calls queued leaves nothing for the lease to
// charge: only the request actually sent is charged (provisionally) when
// its lease lapses.
func TestNothingReservedWhileQueued(t *testing.T) {
	for _, store := range []struct {
		name string
		open func(t *testing.T) quota.Store
	}{
		{"memory", func(*testing.T) quota.Store { return quota.NewMemoryStore() }},
		{"redis", func(t *testing.T) quota.Store { return quota.NewRedisStore(redistest.Client(t)) }},
	} {
		t.Run(store.name, func(t *testing.T) { nothingReservedWhileQueued(t, store.open(t)) })
	}
}

func nothingReservedWhileQueued(t *testing.T, store quota.Store) {
	clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	ledger := newLedgerOn(t, store, clk)
	lim := newHandLimiter()
	s := newScheduler(t, Config{Limiter: lim, Ledger: ledger})
	lim.give(1)
	release := make(chan struct{})
	sending := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = s.Do(context.Background(), Call{Tenant: "a", Label: "x", Units: 1000, Send: func(context.Context) (Response, error) {
			close(sending)
			<-release
			return Response{Charged: 1000, Reported: true, Requests: 1}, nil
		}})
	})
	<-sending
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := s.Do(context.Background(), Call{Tenant: "bulk", Label: "x", Class: Bulk, Units: 6000, Send: ok(6000)})
			errs <- err
		})
	}
	eventually(t, "20 queued calls", func() bool { n, _ := s.q.ahead(Bulk); return n == 20 })
	if r := pool(t, ledger); r.Pool.Reserved != 1000 {
		t.Fatalf("reserved %d with 20 calls queued, want only the 1000 of the call in flight", r.Pool.Reserved)
	}
	// The replica "dies": its queue goes, the request in flight never
	// settles, and its lease lapses.
	s.Close()
	for range 20 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("queued call ended with %v, want ErrClosed", err)
		}
	}
	if _, err := s.Do(context.Background(), Call{Tenant: "late", Label: "x", Units: 1, Send: ok(1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("a call after Close: %v, want ErrClosed", err)
	}
	clk.Advance(2 * time.Minute)
	r := pool(t, ledger)
	if r.Pool.Used != 1000 || r.Provisional != 1000 || r.Pool.Reserved != 0 {
		t.Fatalf("after the lease: used %d, provisional %d, reserved %d; want 1000, 1000, 0", r.Pool.Used, r.Provisional, r.Pool.Reserved)
	}
	close(release)
	wg.Wait()
}

// TestQueueDeadline: a call whose deadline would pass in the queue is
// refused at once with linkgate's own error and the wait it would have had.
func TestQueueDeadline(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	ledger := newLedger(t, clk)
	lim := newHandLimiter()
	s := newScheduler(t, Config{Limiter: lim, Ledger: ledger})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { _, _ = s.Do(ctx, Call{Tenant: "a", Label: "x", Units: 100, Send: ok(100)}) })
	}
	eventually(t, "3 queued calls", func() bool { n, _ := s.q.ahead(Interactive); return n == 3 })
	dctx, dcancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer dcancel()
	sent := false
	start := time.Now()
	_, err := s.Do(dctx, Call{Tenant: "b", Label: "x", Units: 100, Send: func(context.Context) (Response, error) {
		sent = true
		return Response{}, nil
	}})
	var qe *QueueError
	if !errors.As(err, &qe) || qe.Wait < 3*time.Second || sent {
		t.Fatalf("err = %v (sent %v), want a QueueError of about 3 slots", err, sent)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("the refusal took %s: it must come at once", time.Since(start))
	}
	if r := pool(t, ledger); r.Pool.Reserved != 0 || r.Pool.Used != 0 {
		t.Fatalf("a refused call moved the ledger: %+v", r.Pool)
	}
	cancel()
	wg.Wait()
}

// TestFairness: interactive work goes before bulk work (with one bulk call
// after every InteractiveRun interactive ones), and tenants of one class
// share slots by weight.
func TestFairness(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	ledger := newLedger(t, clk)
	lim := newHandLimiter()
	s := newScheduler(t, Config{Limiter: lim, Ledger: ledger, Weights: map[string]float64{"heavy": 3}, InteractiveRun: 4})
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	enqueue := func(tenant string, c Class, n int) {
		for range n {
			wg.Go(func() {
				_, err := s.Do(context.Background(), Call{Tenant: tenant, Label: "x", Class: c, Units: 10, Send: func(context.Context) (Response, error) {
					mu.Lock()
					order = append(order, tenant+"/"+c.String())
					mu.Unlock()
					return Response{Charged: 10, Reported: true, Requests: 1}, nil
				}})
				if err != nil {
					t.Error(err)
				}
			})
		}
	}
	enqueue("heavy", Bulk, 12)
	enqueue("light", Bulk, 12)
	eventually(t, "24 bulk calls", func() bool { n, _ := s.q.ahead(Bulk); return n == 24 })
	enqueue("person", Interactive, 5)
	eventually(t, "5 interactive calls", func() bool { n, _ := s.q.ahead(Interactive); return n == 5 })
	for i := range 29 {
		lim.give(1)
		eventually(t, "a call sent", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == i+1 })
	}
	wg.Wait()
	// Four interactive calls, one bulk call, then the last interactive one.
	for i, want := range []string{"person/interactive", "person/interactive", "person/interactive", "person/interactive"} {
		if order[i] != want {
			t.Fatalf("slot %d went to %s, want %s (order %v)", i, order[i], want, order)
		}
	}
	if order[4] == "person/interactive" || order[5] != "person/interactive" {
		t.Fatalf("after 4 interactive slots one bulk call must pass, then interactive again: %v", order[:6])
	}
	heavy := 0
	for _, o := range order[6:18] { // 12 slots of bulk work while both tenants wait
		if o == "heavy/bulk" {
			heavy++
		}
	}
	if heavy < 8 || heavy > 10 {
		t.Fatalf("heavy (weight 3) got %d of 12 bulk slots, want about 9: %v", heavy, order)
	}
}

// TestCoalescing: identical calls in flight share one upstream request and
// one reservation; the others are served free.
func TestCoalescing(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	ledger := newLedger(t, clk)
	s := newScheduler(t, Config{Limiter: Unlimited{}, Ledger: ledger, Cache: NewMemoryCache(1<<20, time.Minute, clk)})
	var sends atomic.Int32
	release := make(chan struct{})
	call := Call{Tenant: "a", Label: "x", Key: "same", Units: 600, Send: func(context.Context) (Response, error) {
		sends.Add(1)
		<-release
		return Response{Body: []byte(`{"rows":[]}`), Charged: 600, Reported: true, Requests: 1}, nil
	}}
	results := make(chan Result, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			r, err := s.Do(context.Background(), call)
			if err != nil {
				t.Error(err)
			}
			results <- r
		})
	}
	eventually(t, "the first send", func() bool { return sends.Load() == 1 })
	time.Sleep(20 * time.Millisecond) // let the other three join the flight
	close(release)
	wg.Wait()
	close(results)
	var charged int64
	shared := 0
	for r := range results {
		charged += r.Charged
		if r.Shared {
			shared++
		}
		if string(r.Body) != `{"rows":[]}` {
			t.Errorf("body %q", r.Body)
		}
	}
	rep := pool(t, ledger)
	if sends.Load() != 1 || shared != 3 || charged != 600 || rep.Pool.Used != 600 || rep.Settled != 1 {
		t.Fatalf("sends %d, shared %d, charged %d, ledger used %d in %d settlements; want 1, 3, 600, 600, 1",
			sends.Load(), shared, charged, rep.Pool.Used, rep.Settled)
	}
	// And the page is in the cache now: free, without a slot or a send.
	r, err := s.Do(context.Background(), call)
	if err != nil || !r.Cached || sends.Load() != 1 {
		t.Fatalf("repeat: %+v, %v, sends %d", r, err, sends.Load())
	}
}

// TestSettlement: the ledger step after a send follows what the upstream
// said: its reported cost, a release for an answered error, a provisional
// full charge for a request that got no answer.
func TestSettlement(t *testing.T) {
	for _, tc := range []struct {
		name              string
		resp              Response
		err               error
		used, provisional int64
	}{
		{"reported", Response{Charged: 420, Reported: true, Requests: 1}, nil, 420, 0},
		{"answered error", Response{Requests: 1}, errors.New("HTTP 500"), 0, 0},
		{"no answer", Response{Unanswered: true, Requests: 1}, context.Canceled, 1000, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
			ledger := newLedger(t, clk)
			s := newScheduler(t, Config{Limiter: Unlimited{}, Ledger: ledger})
			res, err := s.Do(context.Background(), Call{Tenant: "a", Label: "x", Units: 1000,
				Send: func(context.Context) (Response, error) { return tc.resp, tc.err }})
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v", err)
			}
			rep := pool(t, ledger)
			if rep.Pool.Used != tc.used || rep.Provisional != tc.provisional || rep.Pool.Reserved != 0 {
				t.Fatalf("used %d provisional %d reserved %d", rep.Pool.Used, rep.Provisional, rep.Pool.Reserved)
			}
			if res.Provisional != (tc.provisional > 0) || !res.RemainingKnown || res.Remaining != 1_000_000-tc.used {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// TestGate: the first attempt of an admitted call uses its slot; a retry
// waits for a slot of its own; a 429 pauses the limiter.
func TestGate(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	lim := newHandLimiter()
	s := newScheduler(t, Config{Limiter: lim, Ledger: newLedger(t, clk)})
	g := s.Gate()
	lim.give(1)
	attempts := 0
	done := make(chan error, 1)
	go func() {
		_, err := s.Do(context.Background(), Call{Tenant: "a", Label: "x", Units: 10, Send: func(ctx context.Context) (Response, error) {
			for range 2 {
				if err := g.Wait(ctx); err != nil {
					return Response{}, err
				}
				attempts++
			}
			g.Throttled(ctx, 7*time.Second)
			return Response{Charged: 10, Reported: true, Requests: 2}, nil
		}})
		done <- err
	}()
	eventually(t, "the retry to queue", func() bool { n, _ := s.q.ahead(retry); return n == 1 })
	if lim.takes.Load() != 1 {
		t.Fatalf("the first attempt took %d slots, want the admitted one", lim.takes.Load())
	}
	lim.give(1)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if attempts != 2 || lim.takes.Load() != 2 || time.Duration(lim.paused.Load()) != 7*time.Second {
		t.Fatalf("attempts %d, takes %d, pause %s", attempts, lim.takes.Load(), time.Duration(lim.paused.Load()))
	}
}

// TestLocalLimiter: slots are evenly spaced, never two within an interval,
// and a pause holds every one back.
func TestLocalLimiter(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	l := NewLocalLimiter(60, clk)
	ctx := context.Background()
	if w, _ := l.Take(ctx, false); w != 0 {
		t.Fatalf("first take waits %s", w)
	}
	if w, _ := l.Take(ctx, false); w != time.Second {
		t.Fatalf("second take waits %s, want 1s", w)
	}
	clk.Advance(time.Second)
	if w, _ := l.Take(ctx, false); w != 0 {
		t.Fatalf("after an interval: %s", w)
	}
	_ = l.Pause(ctx, 5*time.Second)
	clk.Advance(time.Second)
	if w, _ := l.Take(ctx, false); w != 4*time.Second {
		t.Fatalf("paused: %s, want 4s", w)
	}
}

// TestRedisLimiterShared: replicas sharing a Redis limiter never together
// take more than the key's rate, and a 429 seen by one pauses all.
func TestRedisLimiterShared(t *testing.T) {
	c := redistest.Client(t)
	name := fmt.Sprintf("k%d", time.Now().UnixNano())
	const rpm = 1200 // 50ms a slot
	var taken atomic.Int32
	ctx := context.Background()
	var wg sync.WaitGroup
	start := time.Now()
	for range 3 {
		l := NewRedisLimiter(c, "test:rate", name, rpm)
		wg.Go(func() {
			for time.Since(start) < 500*time.Millisecond {
				w, err := l.Take(ctx, false)
				if err != nil {
					t.Error(err)
					return
				}
				if w == 0 {
					taken.Add(1)
				} else {
					time.Sleep(w)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if max := int32(elapsed/(50*time.Millisecond)) + 1; taken.Load() > max || taken.Load() < 5 {
		t.Fatalf("3 replicas took %d slots in %s, want at most %d (and some)", taken.Load(), elapsed, max)
	}
	a, b := NewRedisLimiter(c, "test:rate", name, rpm), NewRedisLimiter(c, "test:rate", name, rpm)
	if err := a.Pause(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if w, err := b.Take(ctx, false); err != nil || w < 1500*time.Millisecond {
		t.Fatalf("after another replica's 429: wait %s, %v; want about 2s", w, err)
	}
}

// TestRedisLimiterClaim: interactive work that finds the slot taken claims
// the next one; another replica's bulk work leaves it alone.
func TestRedisLimiterClaim(t *testing.T) {
	c := redistest.Client(t)
	name := fmt.Sprintf("c%d", time.Now().UnixNano())
	ctx := context.Background()
	bulk, person := NewRedisLimiter(c, "test:rate", name, 600), NewRedisLimiter(c, "test:rate", name, 600) // 100ms
	if w, _ := bulk.Take(ctx, false); w != 0 {
		t.Fatalf("first take waits %s", w)
	}
	w, _ := person.Take(ctx, true) // claims the next slot
	if w <= 0 {
		t.Fatal("the slot was free twice")
	}
	time.Sleep(w + 5*time.Millisecond)
	if w, _ := bulk.Take(ctx, false); w == 0 {
		t.Fatal("bulk work took a slot claimed by interactive work")
	}
	if w, _ := person.Take(ctx, true); w != 0 {
		t.Fatalf("the claimant waits %s for its slot", w)
	}
}

// TestRedisLimiterClaimsAfterAPause: interactive work that finds the key
// paused (an upstream 429) claims the first slot after the pause, which
// every replica's bulk work is also waiting for.
func TestRedisLimiterClaimsAfterAPause(t *testing.T) {
	c := redistest.Client(t)
	name := fmt.Sprintf("p%d", time.Now().UnixNano())
	ctx := context.Background()
	bulk, person := NewRedisLimiter(c, "test:rate", name, 600), NewRedisLimiter(c, "test:rate", name, 600) // 100ms
	if err := bulk.Pause(ctx, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	w, _ := person.Take(ctx, true) // claims the slot at the pause's end
	if w <= 0 {
		t.Fatal("a slot was free during the pause")
	}
	time.Sleep(w + 5*time.Millisecond)
	if w, _ := bulk.Take(ctx, false); w == 0 {
		t.Fatal("bulk work took the slot after the pause that interactive work claimed")
	}
	if w, _ := person.Take(ctx, true); w != 0 {
		t.Fatalf("the claimant waits %s for its slot", w)
	}
}

// TestClaimsThroughTheBulkTurn: a replica whose interactive work has had
// its run of slots while its bulk work waited still claims the key's next
// slot, which its bulk work then gets; left unclaimed, the slot would go to
// whichever replica's bulk work asked first, and the interactive call
// would wait while every other replica's bulk work went.
func TestClaimsThroughTheBulkTurn(t *testing.T) {
	q := newQueue(nil, 2)
	wait := func(c Class) *waiter {
		w := &waiter{tenant: "t", class: c, ready: make(chan error, 1)}
		q.push(w)
		return w
	}
	bulk := wait(Bulk)
	for i := range 2 { // the run: interactive slots while bulk work waits
		w := wait(Interactive)
		if !q.urgent() || !q.next(nil) || !w.done {
			t.Fatalf("interactive call %d of the run did not claim and get the slot", i)
		}
	}
	person := wait(Interactive)
	if !q.urgent() {
		t.Fatal("interactive work waits and its replica does not claim the next slot")
	}
	if !q.next(nil) || !bulk.done || person.done {
		t.Fatal("after the run, the claimed slot must go to the bulk call")
	}
	if !q.urgent() || !q.next(nil) || !person.done {
		t.Fatal("the interactive call must claim and get the slot after the bulk turn")
	}
}

func TestMemoryCache(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	c := NewMemoryCache(350, time.Minute, clk)
	ctx := context.Background()
	for i := range 10 {
		c.Put(ctx, fmt.Sprint(i), make([]byte, 100))
	}
	if c.Bytes() > 350 {
		t.Fatalf("holds %d bytes, bound 350", c.Bytes())
	}
	if _, ok := c.Get(ctx, "0"); ok {
		t.Fatal("the oldest page survived the byte bound")
	}
	if _, ok := c.Get(ctx, "9"); !ok {
		t.Fatal("the newest page is missing")
	}
	clk.Advance(61 * time.Second)
	if _, ok := c.Get(ctx, "9"); ok {
		t.Fatal("a page older than the TTL was served")
	}
}

func TestRedisCache(t *testing.T) {
	rc := redistest.Client(t)
	c := NewRedisCache(rc, fmt.Sprintf("test:cache:%d", time.Now().UnixNano()), 350, time.Minute)
	ctx := context.Background()
	for i := range 10 {
		c.Put(ctx, fmt.Sprint(i), []byte(fmt.Sprintf("%0100d", i)))
	}
	n, err := c.Bytes(ctx)
	if err != nil || n > 350 {
		t.Fatalf("holds %d bytes (%v), bound 350", n, err)
	}
	if _, ok := c.Get(ctx, "0"); ok {
		t.Fatal("the oldest page survived the byte bound")
	}
	if b, ok := c.Get(ctx, "9"); !ok || string(b) != fmt.Sprintf("%0100d", 9) {
		t.Fatalf("the newest page: %q %v", b, ok)
	}
	// A second replica's cache over the same Redis sees it.
	other := NewRedisCache(rc, c.prefix[:len(c.prefix)-len(":{pages}")], 350, time.Minute)
	if _, ok := other.Get(ctx, "9"); !ok {
		t.Fatal("another replica does not see the shared page")
	}
}

// TestPaidPageSurvivesALostReservation: the store loses its data (Redis
// restarted empty) while a page is in flight. The page is paid: it is
// delivered and cached, and its cost is recorded as a direct charge,
// rather than the call failing with the reservation unknown.
func TestPaidPageSurvivesALostReservation(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	ledger := newLedgerOn(t, quota.NewRedisStore(srv.Client()), clk)
	lim := newHandLimiter()
	cache := NewMemoryCache(1<<20, time.Hour, clk)
	s := newScheduler(t, Config{Limiter: lim, Ledger: ledger, Cache: cache})
	lim.give(1)
	res, err := s.Do(ctx, Call{Tenant: "a", Label: "backlinks", Key: "page-1", Units: 6006,
		Send: func(context.Context) (Response, error) {
			srv.Restart() // the upstream answers while the ledger forgets
			return Response{Body: []byte("rows"), Charged: 6006, Reported: true, Requests: 1}, nil
		}})
	if err != nil || string(res.Body) != "rows" {
		t.Fatalf("Do = %q, %v; want the paid page delivered", res.Body, err)
	}
	if b, ok := cache.Get(ctx, "page-1"); !ok || string(b) != "rows" {
		t.Fatal("the paid page was not cached")
	}
	// Before the rebuild nothing is granted; the rebuild adopts the
	// upstream's figure, which counts the page.
	if _, err := ledger.Reserve(ctx, "a", "backlinks", 1); !errors.Is(err, quota.ErrRebuilding) {
		t.Fatalf("Reserve before the rebuild = %v, want ErrRebuilding", err)
	}
	// Cached pages are served meanwhile: they reserve nothing.
	res, err = s.Do(ctx, Call{Tenant: "b", Label: "backlinks", Key: "page-1", Units: 6006,
		Send: func(context.Context) (Response, error) { t.Error("a cached page was sent"); return Response{}, nil }})
	if err != nil || !res.Cached || string(res.Body) != "rows" {
		t.Fatalf("a cached page while the ledger is rebuilt = %+v, %v", res, err)
	}
	if _, err := ledger.Reconcile(ctx, upstreamUsed(6006)); err != nil {
		t.Fatal(err)
	}
	rep := pool(t, ledger)
	if rep.Direct != 1 || rep.Pool.Used != 6006 || rep.SpendByTenant["a"] != 6006 {
		t.Fatalf("ledger after the rebuild: used %d, direct %d, tenant a %d; want the page recorded once",
			rep.Pool.Used, rep.Direct, rep.SpendByTenant["a"])
	}
}

// unreachableFinish is a ledger whose store answers Reserve and is gone
// for Finish.
type unreachableFinish struct{ *quota.Ledger }

func (unreachableFinish) Finish(context.Context, quota.Reservation, quota.Outcome) (int64, error) {
	return 0, fmt.Errorf("%w: gone", quota.ErrUnavailable)
}

// TestPaidPageSurvivesAnUnreachableLedger: a page answered is delivered
// even when its settlement cannot reach the store; the reservation left
// open is charged in full when its lease lapses.
func TestPaidPageSurvivesAnUnreachableLedger(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	ledger := newLedger(t, clk)
	lim := newHandLimiter()
	s := newScheduler(t, Config{Limiter: lim, Ledger: unreachableFinish{ledger}})
	lim.give(1)
	res, err := s.Do(context.Background(), Call{Tenant: "a", Label: "x", Units: 100, Send: ok(60)})
	if err != nil || string(res.Body) != "body" {
		t.Fatalf("Do = %q, %v; want the paid page delivered", res.Body, err)
	}
	clk.Advance(2 * time.Minute)
	if rep := pool(t, ledger); rep.Pool.Used != 100 || rep.Provisional != 100 {
		t.Fatalf("used %d, provisional %d; want the lapsed lease charged in full, provisionally", rep.Pool.Used, rep.Provisional)
	}
}

// TestHeldInFlightWaits: a call refused only because requests in flight
// hold the room waits for them to settle instead of failing, so pages that
// overlap near the end of a budget are all served; a refusal by room that
// is spent, or held past HeldWait, stands.
func TestHeldInFlightWaits(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	ledger, err := quota.New(quota.NewMemoryStore(), quota.Config{Budget: "held", PoolLimit: 10_000, ResetDay: 1,
		Lease: time.Minute, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.Reconcile(context.Background(), upstreamUsed(0)); err != nil {
		t.Fatal(err)
	}
	s := newScheduler(t, Config{Limiter: Unlimited{}, Ledger: ledger, HeldWait: time.Hour})
	release := make(chan struct{})
	sending := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := s.Do(context.Background(), Call{Tenant: "a", Label: "x", Units: 6000, Send: func(context.Context) (Response, error) {
			close(sending)
			<-release
			return Response{Charged: 1800, Reported: true, Requests: 1}, nil
		}})
		first <- err
	}()
	<-sending
	second := make(chan error, 1)
	var sent atomic.Bool
	go func() {
		_, err := s.Do(context.Background(), Call{Tenant: "b", Label: "x", Units: 6000, Send: func(ctx context.Context) (Response, error) {
			sent.Store(true)
			return ok(1800)(ctx)
		}})
		second <- err
	}()
	// The second call is refused by the ledger while the first holds 6,000
	// of the 10,000: it must wait, not fail.
	eventually(t, "the second call to be refused once", func() bool {
		_, err := ledger.Reserve(context.Background(), "probe", "x", 6000)
		var d *quota.DeniedError
		return errors.As(err, &d) && d.HeldInFlight()
	})
	select {
	case err := <-second:
		t.Fatalf("the call ended with %v while the room was only held", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil || !sent.Load() {
		t.Fatalf("after the room came back: %v, sent %v", err, sent.Load())
	}
	// 3,600 spent: 6,000 more does not fit, and nothing holds room.
	var d *quota.DeniedError
	if _, err := s.Do(context.Background(), Call{Tenant: "c", Label: "x", Units: 6500, Send: ok(1)}); !errors.As(err, &d) || d.HeldInFlight() {
		t.Fatalf("a call past the spent budget: %v, want a denial at once", err)
	}

	// Held by a holder that never comes back: the refusal stands after HeldWait.
	short := newScheduler(t, Config{Limiter: Unlimited{}, Ledger: ledger, HeldWait: 100 * time.Millisecond})
	hold, err := ledger.Reserve(context.Background(), "gone", "x", 3000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.Do(context.Background(), Call{Tenant: "c", Label: "x", Units: 5000, Send: ok(1)}); !errors.As(err, &d) || !d.HeldInFlight() {
		t.Fatalf("held past HeldWait: %v, want the held-in-flight denial", err)
	}
	// A caller's deadline cuts the wait short, and it learns why.
	dctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := s.Do(dctx, Call{Tenant: "c", Label: "x", Units: 5000, Send: ok(1)}); !errors.As(err, &d) || !d.HeldInFlight() || dctx.Err() != nil {
		t.Fatalf("held until the deadline: %v (context: %v), want the held-in-flight denial before the deadline", err, dctx.Err())
	}
	_, _ = ledger.Finish(context.Background(), hold, quota.Outcome{Release: true})
}
