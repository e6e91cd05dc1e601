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
	// nothing is adopted (fix Config.ResetDay), but by a rebuild.
	PeriodMismatch bool
	// Rebuilt: the period's ledger was unknown (a first start, or a store
	// that lost its data) and was rebuilt from the upstream's figure, the
	// tenants' spend and the overrides this replica last read; Adopted is
	// what the rebuild took from the upstream's figure.
	Rebuilt bool
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
//
// Reconcile is also how a period whose ledger is unknown (ErrRebuilding)
// is rebuilt: it opens the period at the upstream's figure, raises the
// tenants' spend to what this replica last read of it, and restores the
// tenant limit overrides the store lost.
func (l *Ledger) Reconcile(ctx context.Context, src UpstreamUsage) (d Drift, err error) {
	defer func() {
		if err != nil {
			l.failed.Store(&err)
		} else {
			l.failed.Store(nil)
		}
	}()
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
	d = Drift{At: now, PeriodStart: cur.Start, PeriodEnd: cur.End, Upstream: used, ResetDate: reset}
	if !reset.IsZero() {
		ry, rm, rd := reset.UTC().Date()
		ey, em, ed := cur.End.Date()
		d.PeriodMismatch = ry != ey || rm != em || rd != ed
	}
	lost := l.lost.Swap(false)
	res, err := l.store.Reconcile(ctx, ReconcileOp{Budget: l.cfg.Budget, Cur: cur, Prev: cur.Previous(),
		Now: now, Upstream: used, Adopt: !d.PeriodMismatch, Seed: l.seen.seed(lost)})
	if err != nil {
		if lost {
			l.lost.Store(true)
		}
		return Drift{}, err
	}
	d.Ledger, d.Reserved, d.Adopted, d.Corrected = res.LedgerUsed, res.Reserved, res.Adopted, res.Corrected
	d.Difference, d.Rebuilt = used-res.LedgerUsed, res.Rebuilt
	// What the store holds now, with what this replica contributed, is
	// what a later rebuild would restore.
	s, err := l.store.Snapshot(ctx, SnapshotOp{Budget: l.cfg.Budget, Cur: cur, Prev: cur.Previous(), Now: now})
	if err == nil && l.seen.read(cur.Key, s) && !lost && !res.Rebuilt {
		// Another replica rebuilt the period: add what this one read.
		l.RequestReconcile()
	}
	return d, nil
}
