package scheduler

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// The queue's policy (docs/scheduler.md):
//
//   - Classes: retries of admitted interactive calls first, then
//     interactive work, then retries of bulk calls, then bulk work. After
//     InteractiveRun interactive slots in a row while bulk work waits, one
//     bulk call (or retry) goes, so bulk work slows under interactive load
//     but never stops.
//   - Tenants: within a class, weighted fair queueing. Each tenant has a
//     virtual time that grows by 1/weight per slot it gets; the waiting
//     tenant with the smallest virtual time goes next, first come first
//     served within a tenant. A tenant that was idle starts at the class's
//     current virtual time, so idleness earns no credit to burst later.
type queue struct {
	mu             sync.Mutex
	classes        [numClasses]classQueue
	weights        map[string]float64
	interactiveRun int
	run            int // interactive slots given in a row while bulk waited
	signal         chan struct{}
	// nextFree is when the dispatcher expects the next slot, for the
	// estimate of a new call's wait.
	nextFree time.Time
	closed   bool // no dispatcher any more: calls fail with ErrClosed
	// granted, when set (by tests), learns the class each slot went to, on
	// the dispatcher's goroutine, right after the slot was taken.
	granted func(Class)
}

type classQueue struct {
	tenants map[string]*tenantQueue
	n       int     // waiters
	vnow    float64 // virtual time of the last slot given
}

type tenantQueue struct {
	vtime   float64
	waiters []*waiter
}

type waiter struct {
	tenant string
	class  Class
	ready  chan error // buffered: the dispatcher never blocks on it
	done   bool       // granted or failed; guarded by queue.mu
}

func newQueue(weights map[string]float64, interactiveRun int) *queue {
	q := &queue{weights: weights, interactiveRun: interactiveRun, signal: make(chan struct{}, 1)}
	for i := range q.classes {
		q.classes[i].tenants = map[string]*tenantQueue{}
	}
	return q
}

func (q *queue) weight(tenant string) float64 {
	if w, ok := q.weights[tenant]; ok {
		return w
	}
	return 1
}

// order is the classes as the queue serves them.
var order = [numClasses]Class{retry, Interactive, bulkRetry, Bulk}

// ahead is how many waiters go before a new call of class c, and when the
// next slot is expected.
func (q *queue) ahead(c Class) (int, time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, o := range order {
		n += q.classes[o].n
		if o == c {
			break
		}
	}
	return n, q.nextFree
}

// bulkWaits reports whether bulk work (a call or a retry) waits.
func (q *queue) bulkWaits() bool { return q.classes[Bulk].n+q.classes[bulkRetry].n > 0 }

// push queues w, or returns false once the queue is closed.
func (q *queue) push(w *waiter) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	cq := &q.classes[w.class]
	tq := cq.tenants[w.tenant]
	if tq == nil {
		tq = &tenantQueue{}
		cq.tenants[w.tenant] = tq
	}
	if len(tq.waiters) == 0 {
		// Back from idle: no credit for the time it did not use.
		tq.vtime = max(tq.vtime, cq.vnow)
	}
	tq.waiters = append(tq.waiters, w)
	cq.n++
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
	return true
}

// remove takes w out of the queue; false when it was already granted or
// failed (its ready channel then holds the outcome).
func (q *queue) remove(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.done {
		return false
	}
	cq := &q.classes[w.class]
	tq := cq.tenants[w.tenant]
	for i, x := range tq.waiters {
		if x == w {
			tq.waiters = append(tq.waiters[:i], tq.waiters[i+1:]...)
			cq.n--
			break
		}
	}
	w.done = true
	return true
}

// urgent reports whether interactive work (a call or a retry of one)
// waits, which then claims the key's next slot ahead of every replica's
// bulk work. It claims also when that slot goes to this replica's bulk
// work after a run of interactive slots: left unclaimed, the slot would go
// to whichever replica's bulk work asked first, and the interactive call
// would wait behind every replica's bulk queue.
func (q *queue) urgent() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.classes[retry].n > 0 || q.classes[Interactive].n > 0
}

func (q *queue) waiting() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, cq := range q.classes {
		n += cq.n
	}
	return n > 0
}

func (q *queue) setNextFree(t time.Time) {
	q.mu.Lock()
	q.nextFree = t
	q.mu.Unlock()
}

// next picks the waiter that gets the slot just taken, by the policy
// above, and hands it err (nil: the slot). False when nobody waits.
func (q *queue) next(err error) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	var c Class
	switch bulk := q.bulkWaits(); {
	case q.classes[retry].n > 0:
		c = retry
	case q.classes[Interactive].n > 0 && (!bulk || q.run < q.interactiveRun):
		c = Interactive
		if bulk {
			q.run++
		}
	case q.classes[bulkRetry].n > 0:
		c, q.run = bulkRetry, 0
	case bulk:
		c, q.run = Bulk, 0
	default:
		return false
	}
	cq := &q.classes[c]
	var name string
	var best *tenantQueue
	for n, tq := range cq.tenants {
		if len(tq.waiters) > 0 && (best == nil || tq.vtime < best.vtime || tq.vtime == best.vtime && n < name) {
			name, best = n, tq
		}
	}
	w := best.waiters[0]
	best.waiters = best.waiters[1:]
	cq.n--
	cq.vnow = best.vtime
	best.vtime += 1 / q.weight(name)
	w.done = true
	if err == nil && q.granted != nil {
		q.granted(c)
	}
	w.ready <- err
	return true
}

// closeAll fails every waiter with err, and every later call.
func (q *queue) closeAll(err error) {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	for q.next(err) {
	}
}

// dispatch hands out rate slots: whenever calls wait, it takes a slot
// from the limiter (or sleeps until one is expected) and gives it to the
// waiter the policy picks at that moment, so that a call arriving while
// the dispatcher sleeps still goes by its class and tenant.
func (s *Scheduler) dispatch(ctx context.Context) {
	for {
		if !s.q.waiting() {
			select {
			case <-s.q.signal:
				continue
			case <-ctx.Done():
				return
			}
		}
		wait, err := s.cfg.Limiter.Take(ctx, s.q.urgent())
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			// The shared limiter cannot be reached: fail closed, the queue
			// cannot know the key's rate without it.
			for s.q.next(err) {
			}
		case wait > 0:
			s.q.setNextFree(s.cfg.Clock.Now().Add(wait))
			if !s.pause(ctx, wait) {
				return
			}
		default:
			s.q.setNextFree(time.Time{})
			s.q.next(nil) // nobody left: the slot goes unused, the rate is kept
		}
	}
}

// Queued is the number of calls waiting for a rate slot now.
func (s *Scheduler) Queued() int {
	n, _ := s.q.ahead(Bulk)
	return n
}

// pause waits d, or less when a call arrives: interactive work that
// arrives while the dispatcher waits for bulk work's slot must claim the
// next slot now (Limiter.Take with urgent), not when the wait ends. False
// when ctx is done.
func (s *Scheduler) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.q.signal:
	case <-ctx.Done():
		return false
	}
	return true
}

// admit waits for a rate slot for one call of tenant in class, or refuses
// at once with a *QueueError when the expected wait ends after ctx's
// deadline. It returns how long the call waited.
func (s *Scheduler) admit(ctx context.Context, tenant string, c Class) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	start := s.cfg.Clock.Now()
	if est := s.estimate(c, start); est > 0 {
		if dl, ok := ctx.Deadline(); ok && start.Add(est).After(dl) {
			return 0, &QueueError{Wait: est}
		}
	}
	w := &waiter{tenant: tenant, class: c, ready: make(chan error, 1)}
	if !s.q.push(w) {
		return 0, ErrClosed
	}
	select {
	case err := <-w.ready:
		return s.cfg.Clock.Now().Sub(start), err
	case <-ctx.Done():
		if !s.q.remove(w) {
			if err := <-w.ready; err != nil {
				return s.cfg.Clock.Now().Sub(start), err
			}
			// A slot granted as the caller left goes unused.
		}
		return s.cfg.Clock.Now().Sub(start), ctx.Err()
	}
}

// estimate is the expected wait of a new call of class c: until the next
// slot, plus one interval per call ahead of it. It is this replica's view;
// other replicas sharing the key make the real wait longer, which the
// caller's deadline then cuts short.
func (s *Scheduler) estimate(c Class, now time.Time) time.Duration {
	n, next := s.q.ahead(c)
	est := time.Duration(n) * s.cfg.Limiter.Interval()
	if d := next.Sub(now); d > 0 {
		est += d
	}
	return est
}

// grant is the rate slot a call was admitted with, carried in the context
// of its Send so that the upstream client's first attempt uses it.
type grant struct {
	tenant string
	class  Class
	used   atomic.Bool
}

type grantKey struct{}

func withGrant(ctx context.Context, tenant string, c Class) context.Context {
	return context.WithValue(ctx, grantKey{}, &grant{tenant: tenant, class: c})
}

// Gate is what the upstream client calls before each HTTP attempt and
// after a 429. The first attempt of a call run by Do uses the slot the call
// was admitted with; every other attempt (retries, calls made outside Do
// such as the reconciler's free usage reads) waits for a slot of its own.
type Gate struct{ s *Scheduler }

// Gate returns the scheduler's gate for the upstream client.
func (s *Scheduler) Gate() Gate { return Gate{s} }

// Wait takes a rate slot for one HTTP attempt.
func (g Gate) Wait(ctx context.Context) error {
	if gr, ok := ctx.Value(grantKey{}).(*grant); ok {
		if gr.used.CompareAndSwap(false, true) {
			return nil
		}
		c := retry
		if gr.class == Bulk {
			c = bulkRetry
		}
		_, err := g.s.admit(ctx, gr.tenant, c)
		return err
	}
	_, err := g.s.admit(ctx, "", Interactive)
	return err
}

// Throttled slows every caller of the key, on every replica sharing the
// limiter, for d after the upstream answered 429.
func (g Gate) Throttled(ctx context.Context, d time.Duration) {
	if d <= 0 {
		d = g.s.cfg.Limiter.Interval()
	}
	_ = g.s.cfg.Limiter.Pause(context.WithoutCancel(ctx), d)
}

// ErrLimiterUnavailable is wrapped by the errors of a limiter whose store
// cannot be reached; calls then fail closed.
var ErrLimiterUnavailable = errors.New("scheduler: the rate limiter's store cannot be reached")
