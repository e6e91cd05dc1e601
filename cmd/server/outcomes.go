package main

import (
	"errors"
	"sync"

	"github.com/linkgate/linkgate/upstream"
)

// outcomes judges the upstream from real calls: it is down after `after`
// failures in a row (an outage: 5xx, transport errors, bodies cut short)
// and up again at the next success. Errors that say nothing about the
// upstream's health (a bad request, a 404, a caller who went away, a 429)
// change nothing.
type outcomes struct {
	mu       sync.Mutex
	after    int
	failures int
}

func newOutcomes(after int) *outcomes { return &outcomes{after: after} }

// record notes one call's error (nil: success) and reports whether the
// verdict changed.
func (o *outcomes) record(err error) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	was := o.failures < o.after
	switch {
	case err == nil:
		o.failures = 0
	case errors.Is(err, upstream.ErrUpstreamUnavailable):
		o.failures++
	default:
		return false
	}
	return was != (o.failures < o.after)
}

func (o *outcomes) up() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.failures < o.after
}
