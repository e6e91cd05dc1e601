package quota

import (
	"context"
	"fmt"
	"time"
)

// UpstreamUsage reports what the upstream says was used in its current
// period and when that period resets. The upstream client's
// limits-and-usage call implements it.
type UpstreamUsage interface {
	UpstreamUsage(ctx context.Context) (used int64, resetDate time.Time, err error)
}

// Drift is the outcome of one reconciliation.
type Drift struct {
	At          time.Time
	PeriodStart time.Time
	PeriodEnd   time.Time
	Upstream    int64     // used according to the upstream
	Ledger      int64     // used according to the ledger, before adoption
	Reserved    int64     // reserved in the ledger at that moment
	Difference  int64     // Upstream - Ledger; positive: spent outside linkgate (or in flight)
	Adopted     int64     // units added to the ledger as external spend
	Corrected   int64     // provisional units taken back: presumed spend the upstream never charged
	ResetDate   time.Time // as reported by the upstream
	// PeriodMismatch is true when the upstream resets on another date than
	// the ledger's period end; the figures then cover different spans, so
	// nothing is adopted (fix Config.ResetDay).
	PeriodMismatch bool
}

// Reconcile compares the upstream's usage with the ledger. When the
// upstream is higher than what the ledger has used and reserved, it adopts
// the difference as external spend (someone else used the same key); the
// reserved part is not adopted because those units may already be spent
// upstream and will be settled here. When the ledger is higher, it takes
// back provisional charges (lapsed leases, requests that got no answer) up
// to the difference, never going below confirmed spend. Either way the
// provisional charges left are confirmed. The drift is kept and shown by
// AllUsage.
func (l *Ledger) Reconcile(ctx context.Context, src UpstreamUsage) (Drift, error) {
	used, reset, err := src.UpstreamUsage(ctx)
	if err != nil {
		return Drift{}, fmt.Errorf("quota: reading upstream usage: %w", err)
	}
	if used < 0 || used > maxUnits {
		return Drift{}, fmt.Errorf("quota: upstream usage %d out of range", used)
	}
	now, err := l.clock.now(ctx)
	if err != nil {
		return Drift{}, err
	}
	cur := PeriodAt(now, l.cfg.ResetDay)
	d := Drift{At: now, PeriodStart: cur.Start, PeriodEnd: cur.End, Upstream: used, ResetDate: reset}
	if !reset.IsZero() {
		ry, rm, rd := reset.UTC().Date()
		ey, em, ed := cur.End.Date()
		d.PeriodMismatch = ry != ey || rm != em || rd != ed
	}
	res, err := l.store.Reconcile(ctx, ReconcileOp{Budget: l.cfg.Budget, Cur: cur, Prev: cur.Previous(),
		Now: now, Upstream: used, Adopt: !d.PeriodMismatch})
	if err != nil {
		return Drift{}, err
	}
	d.Ledger, d.Reserved, d.Adopted, d.Corrected = res.LedgerUsed, res.Reserved, res.Adopted, res.Corrected
	d.Difference = used - res.LedgerUsed
	return d, nil
}
