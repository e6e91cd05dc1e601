package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/linkgate/linkgate/upstream"
)

// limitsReader reads the key's subscription and usage (upstream.Client).
type limitsReader interface {
	LimitsAndUsage(ctx context.Context) (upstream.LimitsAndUsage, error)
}

// planWatch is what the reconciler reads the upstream's usage through: it
// also notes the name of the key's plan, and when it changes makes the
// key's row cap forget what it learned. A cap learned under the old plan
// would take every page of a lower one for the end of the data, and keep
// the pages of a higher one small.
type planWatch struct {
	src  limitsReader
	caps *upstream.RowCap
	log  *slog.Logger

	mu   sync.Mutex
	plan string
	seen bool
}

// UpstreamUsage implements quota.UpstreamUsage.
func (p *planWatch) UpstreamUsage(ctx context.Context) (used int64, resetDate time.Time, err error) {
	l, err := p.src.LimitsAndUsage(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	p.saw(l.Subscription)
	return l.UnitsUsageAPIKey, l.UsageResetDate, nil
}

// check reads the plan alone, on a replica that does not reconcile: the
// request is free, and every replica learns its own cap.
func (p *planWatch) check(ctx context.Context) {
	if _, _, err := p.UpstreamUsage(ctx); err != nil {
		p.log.Warn("the key's plan cannot be read", "err", err)
	}
}

func (p *planWatch) saw(plan string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen && plan != p.plan {
		p.log.Warn("the key's plan changed: its learned row cap is forgotten and learned again from the next pages",
			"from", p.plan, "to", plan, "forgotten_cap", p.caps.Cap())
		p.caps.Forget()
	}
	p.plan, p.seen = plan, true
}
