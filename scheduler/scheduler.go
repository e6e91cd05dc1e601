// Package scheduler is the one door in front of the upstream key. Every paid
// upstream call, from every caller, goes through Scheduler.Do in this order:
//
//  1. Cache: a fresh copy of the same request in the page cache serves it at
//     no cost and without a rate slot.
//  2. Coalesce: an identical request already in flight in this process
//     serves it too (singleflight keyed by the request's cache key).
//  3. Admit: wait in a fair queue for a rate slot of the key. The rate is
//     the key's as a whole (Limiter: in Redis for every replica, or in
//     process). Nothing is reserved while waiting. A call whose deadline
//     would pass in the queue is refused at once with a *QueueError that
//     says how long the wait would have been.
//  4. Re-check the cache: another replica may have fetched the page while
//     this one waited.
//  5. Reserve in the ledger what the call can cost.
//  6. Send, then settle with the cost the upstream reported, release when
//     it answered with an error, or charge provisionally when the request
//     left and no answer came back (a reconciliation corrects it later).
//     A page answered is delivered even if the ledger failed to record it.
//
// The package knows neither gRPC nor Ahrefs: a Call carries its own Send,
// and the upstream client calls the Gate before each HTTP attempt, so that
// retries take rate slots too.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/quota"
)

// Class orders work in the queue.
type Class int

const (
	// Interactive work is waited for by a person or a request/response
	// caller: unary List calls, stats, the first page of a stream.
	Interactive Class = iota
	// Bulk work is a follow-on page of a stream: a pipeline that reads a
	// long result and can wait a little more.
	Bulk
	// retry is an attempt of an interactive call already admitted,
	// retried by the upstream client: it goes first, its caller has
	// waited already.
	retry
	// bulkRetry is an attempt of a bulk call already admitted: first among
	// bulk work, never ahead of interactive work, which would otherwise
	// wait behind every retry of a replica's streams.
	bulkRetry
	numClasses
)

// String names the class for metrics and logs.
func (c Class) String() string {
	switch c {
	case Interactive:
		return "interactive"
	case Bulk:
		return "bulk"
	case retry:
		return "retry"
	case bulkRetry:
		return "bulk-retry"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// Call is one paid upstream call.
type Call struct {
	Tenant string
	// Label is the ledger label the units are spent under (the dataset).
	Label string
	Class Class
	// Key identifies the request for coalescing and caching: equal keys
	// mean equal answers. Empty: neither coalesced nor cached.
	Key string
	// Units is the most the call can cost; it is reserved just before the
	// call is sent.
	Units int64
	// Send makes the call. It runs at most once per Do, after admission and
	// reservation; the upstream client's Gate consumes the admitted slot for
	// its first attempt and queues again for retries.
	Send func(ctx context.Context) (Response, error)
}

// Response is what Send reports about the call, also when it failed.
type Response struct {
	// Body is what the cache keeps and hands to later identical calls
	// (nil: nothing to cache). It must not be modified afterwards.
	Body []byte
	// Charged is the units the upstream reported across the call's
	// attempts; Reported says whether any response reported a cost.
	Charged  int64
	Reported bool
	// Unanswered: a request left and no answer came back, so the upstream
	// may have charged it. The upstream client knows when that is.
	Unanswered bool
	// UpstreamCached: the upstream answered from its own cache (free).
	UpstreamCached bool
	// Requests is the HTTP requests sent, retries included.
	Requests int
}

// Result is the outcome of Do.
type Result struct {
	Response
	// Cached: served from linkgate's page cache, without a request.
	Cached bool
	// Shared: served by an identical call in flight for another caller.
	Shared bool
	// Provisional: Charged was presumed (the request got no answer) and
	// charged in full; a reconciliation will confirm or correct it.
	Provisional bool
	// Reserved is the units reserved for the call (0 when none was).
	Reserved int64
	// Remaining is what the tenant may still spend, as the ledger said in
	// the reservation's last step; RemainingKnown is false when the call
	// made no ledger step (served from cache or shared).
	Remaining      int64
	RemainingKnown bool
	// Waited is how long the call waited in the queue for its rate slot.
	Waited time.Duration
}

// QueueError refuses a call that linkgate's own queue could not admit
// before the caller's deadline. Nothing was reserved or sent.
type QueueError struct {
	// Wait is how long the call would have had to wait for its slot.
	Wait time.Duration
}

// Error says whose queue refused: linkgate's, not the upstream's.
func (e *QueueError) Error() string {
	return fmt.Sprintf("linkgate's queue for the upstream key: the next rate slot for this call is about %s away, past the caller's deadline",
		e.Wait.Round(time.Millisecond))
}

// Ledger is the part of the quota ledger the scheduler spends through: two
// steps per call, each one store round trip returning what is left.
type Ledger interface {
	Reserve(ctx context.Context, tenant, label string, units int64) (quota.Reservation, error)
	Finish(ctx context.Context, r quota.Reservation, o quota.Outcome) (remaining int64, err error)
}

// Cache keeps answers by Call.Key.
type Cache interface {
	Get(ctx context.Context, key string) ([]byte, bool)
	Put(ctx context.Context, key string, body []byte)
}

// Config configures a Scheduler.
type Config struct {
	Limiter Limiter
	Ledger  Ledger
	// Cache is the page cache; nil means none.
	Cache Cache
	// Weights are the tenants' shares of the rate within a class; a tenant
	// not listed has weight 1.
	Weights map[string]float64
	// InteractiveRun is how many interactive slots in a row may pass
	// waiting bulk work before one bulk call goes (so that bulk work is
	// never starved). Default 4.
	InteractiveRun int
	// Outcome, if set, is told the error (nil on success) of every call
	// sent, for health from real outcomes.
	Outcome func(err error)
	// Clock is the clock of waits and estimates; nil means clock.System.
	Clock clock.Clock
	// HeldWait is how long a call whose reservation is refused only
	// because requests in flight hold the room (quota.DeniedError's
	// HeldInFlight) waits for them to settle before the refusal stands.
	// Default 30s; the caller's deadline cuts it short.
	HeldWait time.Duration
}

// Scheduler runs paid upstream calls. It is safe for concurrent use; Close
// stops its dispatcher.
type Scheduler struct {
	cfg     Config
	q       *queue
	flights singleflight.Group
	stop    context.CancelFunc
	done    chan struct{}

	finishMu sync.Mutex
	finished chan struct{} // closed and replaced when a call's reservation ends
}

// New starts a scheduler.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Limiter == nil || cfg.Ledger == nil {
		return nil, errors.New("scheduler: a limiter and a ledger are required")
	}
	if cfg.InteractiveRun <= 0 {
		cfg.InteractiveRun = 4
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.HeldWait <= 0 {
		cfg.HeldWait = 30 * time.Second
	}
	for t, w := range cfg.Weights {
		if w <= 0 {
			return nil, fmt.Errorf("scheduler: tenant %q: weight %g must be positive", t, w)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Scheduler{cfg: cfg, stop: stop, done: make(chan struct{}), finished: make(chan struct{})}
	s.q = newQueue(cfg.Weights, cfg.InteractiveRun)
	go func() {
		defer close(s.done)
		s.dispatch(ctx)
	}()
	return s, nil
}

// Close stops the dispatcher; calls still queued fail with ErrClosed.
func (s *Scheduler) Close() error {
	s.stop()
	<-s.done
	s.q.closeAll(ErrClosed)
	return nil
}

// ErrClosed is returned to calls queued when the scheduler closes.
var ErrClosed = errors.New("scheduler: closed")

// Do runs c through the cache, coalescing, the queue, the ledger and the
// upstream, in that order. The error is Send's, a *quota.DeniedError, a
// *QueueError, or the context's; the Result is meaningful with Send's error
// too (what was charged).
func (s *Scheduler) Do(ctx context.Context, c Call) (Result, error) {
	if c.Key == "" {
		return s.run(ctx, c)
	}
	if s.cfg.Cache != nil {
		if b, ok := s.cfg.Cache.Get(ctx, c.Key); ok {
			return Result{Response: Response{Body: b}, Cached: true}, nil
		}
	}
	// led says whether this caller's call runs the flight: its Send writes
	// into the caller's own variables, so the leader always waits for it
	// (it ends soon after ctx does: it runs under ctx).
	var led atomic.Bool
	ch := s.flights.DoChan(c.Key, func() (any, error) {
		led.Store(true)
		r, err := s.run(ctx, c)
		return flight{r, err}, nil
	})
	var v singleflight.Result
	select {
	case v = <-ch:
	case <-ctx.Done():
		if !led.Load() {
			return Result{}, ctx.Err()
		}
		v = <-ch
	}
	f := v.Val.(flight)
	if led.Load() {
		return f.res, f.err
	}
	if f.err == nil && f.res.Body == nil {
		// The leader's answer was too large to keep: this caller needs its
		// own rows.
		return s.run(ctx, c)
	}
	if f.err != nil && ctx.Err() == nil && !isUpstreamFailure(f.err) {
		// The leader went away, or was refused for its own reasons (its
		// deadline, its tenant's budget): this caller tries on its own.
		return s.run(ctx, c)
	}
	// Another caller paid for this one: it is free here.
	shared := Result{Response: Response{Body: f.res.Body, UpstreamCached: f.res.UpstreamCached}, Shared: true}
	return shared, f.err
}

// PanicError is a panic in a call's Send, recovered so that it ends that
// call only: the scheduler runs Send in goroutines (coalesced flights)
// whose panic nothing else could recover.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("scheduler: the call panicked: %v", e.Value) }

// send runs c.Send, turning a panic into a *PanicError. The request may
// have left, so the call is settled as one that got no answer: charged
// provisionally, never under-counted.
func send(ctx context.Context, c Call) (resp Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			resp, err = Response{Unanswered: true}, &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return c.Send(ctx)
}

// heldPoll is how often a call refused by room held in flight asks the
// ledger again when none of this replica's calls finishes: the requests
// holding the room may be another replica's.
const heldPoll = 200 * time.Millisecond

// reserve reserves what c can cost. A refusal by room that requests in
// flight hold is not the budget running out: the room comes back as they
// settle, so the call waits for that rather than failing because pages
// overlapped; for at most Config.HeldWait, and stopping a poll before the
// caller's deadline, so that the caller still learns why it was refused.
func (s *Scheduler) reserve(ctx, ledgerCtx context.Context, c Call) (quota.Reservation, error) {
	var giveUp *time.Timer
	for {
		finished := s.finishSignal() // taken first: a finish during Reserve is not missed
		r, err := s.cfg.Ledger.Reserve(ledgerCtx, c.Tenant, c.Label, c.Units)
		var denied *quota.DeniedError
		if !errors.As(err, &denied) || !denied.HeldInFlight() {
			return r, err
		}
		if giveUp == nil {
			wait := s.cfg.HeldWait
			if dl, ok := ctx.Deadline(); ok {
				wait = min(wait, time.Until(dl)-heldPoll)
			}
			if wait <= 0 {
				return r, err
			}
			giveUp = time.NewTimer(wait)
			defer giveUp.Stop()
		}
		poll := time.NewTimer(heldPoll)
		select {
		case <-finished:
		case <-poll.C:
		case <-giveUp.C:
			return r, err
		case <-ctx.Done():
			return r, err
		}
		poll.Stop()
	}
}

func (s *Scheduler) finishSignal() <-chan struct{} {
	s.finishMu.Lock()
	defer s.finishMu.Unlock()
	return s.finished
}

// noteFinished wakes the calls waiting for room held in flight.
func (s *Scheduler) noteFinished() {
	s.finishMu.Lock()
	defer s.finishMu.Unlock()
	close(s.finished)
	s.finished = make(chan struct{})
}

type flight struct {
	res Result
	err error
}

// isUpstreamFailure: the leader's call reached the upstream and failed;
// a follower would fail the same way, so it shares the error.
func isUpstreamFailure(err error) bool {
	var qe *QueueError
	var de *quota.DeniedError
	return !errors.As(err, &qe) && !errors.As(err, &de) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrClosed)
}

// run admits, reserves, sends and settles one call.
func (s *Scheduler) run(ctx context.Context, c Call) (Result, error) {
	var res Result
	waited, err := s.admit(ctx, c.Tenant, c.Class)
	res.Waited = waited
	if err != nil {
		return res, err
	}
	sendCtx := withGrant(ctx, c.Tenant, c.Class)
	if c.Key != "" && s.cfg.Cache != nil {
		if b, ok := s.cfg.Cache.Get(ctx, c.Key); ok {
			res.Response, res.Cached = Response{Body: b}, true
			return res, nil
		}
	}
	// Ledger steps ignore the caller's cancellation: a caller who goes away
	// must never leave units reserved.
	ledgerCtx := context.WithoutCancel(ctx)
	r, err := s.reserve(ctx, ledgerCtx, c)
	if err != nil {
		return res, err
	}
	res.Reserved, res.Remaining, res.RemainingKnown = r.Units, r.Remaining, true
	resp, sendErr := send(sendCtx, c)
	if s.cfg.Outcome != nil && resp.Requests > 0 {
		s.cfg.Outcome(sendErr)
	}
	res.Response = resp
	var o quota.Outcome
	switch {
	case resp.Reported:
		o.Actual = resp.Charged
	case resp.Unanswered:
		o.Actual, o.Provisional = r.Units, true
		res.Charged, res.Provisional = r.Units, true
	default:
		o.Release = true
		res.Charged = 0
	}
	// A page the upstream answered is paid: it is delivered even when the
	// ledger could not record its cost. The store settles a reservation it
	// lost as a direct charge; one it could not be reached for stays open
	// and its lease charges it in full, provisionally.
	left, ferr := s.cfg.Ledger.Finish(ledgerCtx, r, o)
	s.noteFinished()
	if ferr == nil {
		res.Remaining = left
	}
	if sendErr != nil {
		return res, sendErr
	}
	if c.Key != "" && s.cfg.Cache != nil && resp.Body != nil {
		s.cfg.Cache.Put(ledgerCtx, c.Key, resp.Body)
	}
	return res, nil
}
