package quota

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
)

// storeClock is a store with a clock of its own that every replica sharing
// it reads (Redis: the server's TIME). Periods, leases and the expiry of
// finished records are then measured on that one clock, so a replica whose
// clock is ahead cannot open the next period early, nor one whose clock is
// behind date its leases in the past. Stores used by one process (memory,
// bolt) have none: the process' clock is the only one.
type storeClock interface {
	// Time returns the store's current time for budget (whose keys may
	// live on one node of several).
	Time(ctx context.Context, budget string) (time.Time, error)
}

// resync is how often a replica measures its clock against the store's
// again: drift between two clocks over this span is far below a second,
// and one round trip per replica every 30 s costs nothing.
const resync = 30 * time.Second

// ledgerClock is the ledger's time. With a store clock it is the store's time,
// read without a round trip as the time last measured on the store plus
// what the replica's clock has counted since. On a real clock that count
// is monotonic, so a step of the replica's wall clock changes nothing.
type ledgerClock struct {
	store     storeClock // nil: the local clock decides
	budget    string
	local     clock.Clock
	last      atomic.Pointer[reading]
	measuring atomic.Bool
}

// reading pairs the store's time with the local clock at the same moment.
type reading struct {
	store, local time.Time
	taken        time.Time // by the process' own clock, for resync
}

func newLedgerClock(s Store, budget string, local clock.Clock) *ledgerClock {
	c := &ledgerClock{budget: budget, local: local}
	c.store, _ = s.(storeClock)
	return c
}

// now returns the ledger's current time. The first call measures the
// store's clock (a failure is the store's: it wraps ErrUnavailable); a
// later one measures again once the reading is resync old, and keeps the
// last reading if that fails, since the step itself will meet the
// store's trouble.
func (c *ledgerClock) now(ctx context.Context) (time.Time, error) {
	if c.store == nil {
		return c.local.Now().UTC(), nil
	}
	r := c.last.Load()
	switch {
	case r == nil:
		var err error
		if r, err = c.measure(ctx); err != nil {
			return time.Time{}, err
		}
	case time.Since(r.taken) >= resync && c.measuring.CompareAndSwap(false, true):
		if fresh, err := c.measure(ctx); err == nil {
			r = fresh
		}
		c.measuring.Store(false)
	}
	return r.store.Add(c.local.Now().Sub(r.local)).UTC(), nil
}

// lastNow is now without a round trip: the last reading, or the local
// clock before any.
func (c *ledgerClock) lastNow() time.Time {
	if r := c.last.Load(); r != nil {
		return r.store.Add(c.local.Now().Sub(r.local)).UTC()
	}
	return c.local.Now().UTC()
}

// measure reads the store's clock; the local time it is paired with is
// the middle of the round trip, so the error is at most half of it.
func (c *ledgerClock) measure(ctx context.Context) (*reading, error) {
	before := c.local.Now()
	t, err := c.store.Time(ctx, c.budget)
	if err != nil {
		return nil, err
	}
	after := c.local.Now()
	r := &reading{store: t, local: before.Add(after.Sub(before) / 2), taken: time.Now()}
	c.last.Store(r)
	return r, nil
}
