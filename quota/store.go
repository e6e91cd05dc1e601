package quota

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrUnavailable is wrapped by every error that means the ledger store could
// not be reached. Reserve fails closed on it: no unit is ever granted without
// the store having recorded the reservation.
var ErrUnavailable = errors.New("quota: the ledger store cannot be reached")

// ErrRebuilding is Reserve's error while the current period's ledger is
// unknown: the store holds no mark that the period was opened (a first
// start, or a store that lost its data). An empty ledger is not a ledger
// with nothing spent, so no unit is granted until a reconciliation has
// rebuilt the period from the upstream's usage; Reserve asks for one at
// once (Ledger.RequestReconcile). It wraps ErrUnavailable: the ledger is
// unavailable for a moment, the budget is not exhausted.
var ErrRebuilding = fmt.Errorf("%w: the ledger of this period is unknown until it is rebuilt from the upstream's usage", ErrUnavailable)

// RebuildError is Reserve's error while the period's ledger is unknown: it
// is ErrRebuilding, and Cause is why the last reconciliation, which would
// have rebuilt it, failed (nil: none has failed), so that an upstream that
// refuses the key shows as that.
type RebuildError struct{ Cause error }

func (e *RebuildError) Error() string {
	if e.Cause == nil {
		return ErrRebuilding.Error()
	}
	return ErrRebuilding.Error() + "; the last reconciliation failed: " + e.Cause.Error()
}

// Unwrap returns ErrRebuilding and the cause.
func (e *RebuildError) Unwrap() []error {
	if e.Cause == nil {
		return []error{ErrRebuilding}
	}
	return []error{ErrRebuilding, e.Cause}
}

// ErrUnknownReservation is returned by Finish for a reservation of another
// budget or without an id. A reservation of this budget that the store has
// no record of (its data was lost, or it finished more than an hour ago)
// is not an error: the units it reports were spent upstream, so Finish
// settles it as a direct charge.
var ErrUnknownReservation = errors.New("quota: unknown reservation")

// Store holds the ledger state. Each method is one atomic operation of the
// store (one mutex section, one bolt transaction, one Redis script): the
// check-and-reserve logic never spans two calls, which is what keeps several
// replicas from overspending together.
//
// Every operation that reads counters first charges in full the reservations
// of Cur and Prev whose lease has run out, so expired holders are counted no
// matter which replica looks next.
type Store interface {
	// Reserve grants op.Units if pool and tenant both have room, or reports
	// which limit was hit. A denial writes nothing but the lease sweep and
	// its bookkeeping.
	Reserve(ctx context.Context, op ReserveOp) (ReserveResult, error)
	// Finish settles (op.Release false) or releases a reservation. Repeating
	// it, or calling it after the other, changes nothing. A settlement of a
	// reservation the store has no record of is a direct charge of the
	// actual units, provisional: the store may have lost the reservation
	// after the upstream's figure a rebuild adopted already counted them.
	Finish(ctx context.Context, op FinishOp) (FinishResult, error)
	// Snapshot returns the counters of op.Cur after the lease sweep.
	Snapshot(ctx context.Context, op SnapshotOp) (Snapshot, error)
	// SetTenantLimit persists (or with a nil Limit removes) a tenant limit
	// override.
	SetTenantLimit(ctx context.Context, op LimitOp) error
	// Reconcile records the upstream figure for op.Cur and, if op.Adopt,
	// raises the pool's used figure to it (as external spend). A period not
	// opened is rebuilt: the upstream's figure is adopted whatever
	// op.Adopt, op.Seed restores what the store has nothing newer of, and
	// the period is marked opened.
	Reconcile(ctx context.Context, op ReconcileOp) (ReconcileResult, error)
	// Ping reports whether the store can be reached.
	Ping(ctx context.Context) error
	// Close releases the store's resources (not a Redis client it was given).
	Close() error
}

// FinishResult is what the tenant of a finished reservation may still
// reserve, read in the same atomic step.
type FinishResult struct {
	Remaining int64
	// TenantUsed is the tenant's spend in the reservation's period after
	// it, which the ledger remembers (Seed); Opened is when the period was
	// opened or last rebuilt (unix ms; 0: unknown), which tells a replica
	// that the period was rebuilt since it last looked.
	TenantUsed int64
	Opened     int64
}

// ReserveOp is one reservation attempt as the Ledger hands it to a Store.
type ReserveOp struct {
	Budget      string
	Cur, Prev   Period
	Now         time.Time
	ID          string
	Tenant      string
	Label       string
	Units       int64
	Expires     time.Time
	PoolLimit   int64
	TenantLimit int64 // from configuration; a stored override wins; 0 = none
}

// ReserveResult tells whether a reservation was granted and, if not, which
// limit refused it, how much that limit had left and how much of it open
// reservations hold. Granted, Remaining is what the tenant may still reserve
// after this reservation. Unknown: the period was never opened in this
// store (or its mark was lost), so nothing was granted.
type ReserveResult struct {
	Granted   bool
	Unknown   bool
	Scope     Scope
	Limit     int64
	Remaining int64
	Reserved  int64
	Opened    int64 // of a denial: as FinishResult.Opened
}

// FinishOp settles or releases the reservation Res.
type FinishOp struct {
	Budget  string
	Res     Reservation
	Period  Period // the reservation's own period
	Now     time.Time
	Actual  int64
	Release bool
	// Provisional marks a settlement presumed rather than reported (the
	// request left and no answer came back): a reconciliation may take it
	// back.
	Provisional bool
	// PoolLimit and TenantLimit let the store compute what is left.
	PoolLimit, TenantLimit int64
}

// SnapshotOp asks for the counters of one period.
type SnapshotOp struct {
	Budget    string
	Cur, Prev Period
	Now       time.Time
}

// Snapshot is the raw state of one period of a budget.
type Snapshot struct {
	Pool           map[string]int64 // fields named by the pool* constants
	TenantUsed     map[string]int64
	TenantReserved map[string]int64
	LabelUsed      map[string]int64
	Overrides      map[string]int64 // tenant limit overrides (not per period)
	// OverridesKnown: the budget's marker is there, so the store has not
	// lost the overrides since they were last restored.
	OverridesKnown bool
}

// LimitOp sets or (Limit nil) removes a tenant's limit override, which
// holds for every period. Cur is the caller's current period, for a store
// that keeps copies of the override per period (Redis).
type LimitOp struct {
	Budget string
	Tenant string
	Limit  *int64
	Cur    Period
}

// ReconcileOp carries the upstream's figure for the current period.
type ReconcileOp struct {
	Budget    string
	Cur, Prev Period
	Now       time.Time
	Upstream  int64
	Adopt     bool
	Seed      Seed
}

// Seed is what a replica last read of the state a store may lose: the
// tenants' spend in one period and the tenant limit overrides. A rebuild
// restores from it what the store holds nothing newer of.
type Seed struct {
	Period     string           // the period TenantUsed is of
	TenantUsed map[string]int64 // raises a tenant's spend, never lowers it
	// Overrides are written where the store lost its overrides (their
	// mark is gone) and holds none for the tenant; nil: never read.
	Overrides map[string]int64
	// Lost: this replica found the period unknown since it last
	// reconciled, so what it read before is restored even where another
	// replica has rebuilt the period already: each replica knows best the
	// tenants it served.
	Lost bool
}

// ReconcileResult is the ledger's side of a reconciliation, read in the same
// atomic operation that adopted the difference.
type ReconcileResult struct {
	LedgerUsed int64 // before adoption
	Reserved   int64
	Adopted    int64
	Corrected  int64 // provisional units taken back
	Rebuilt    bool  // the period was not opened: Adopted rebuilt it
}

// Names of the pool counters kept per period. They are part of the stored
// format of every store.
const (
	poolUsed         = "used"
	poolReserved     = "reserved"
	poolSettled      = "settled"
	poolOverruns     = "overruns"
	poolOverrunUnits = "overrun_units"
	poolExpired      = "expired"
	poolExpiredUnits = "expired_units"
	poolExternal     = "external"
	poolDrift        = "drift"
	poolUpstream     = "upstream"
	poolProvisional  = "provisional" // charged on presumption, not yet confirmed by a reconciliation
	poolCorrected    = "corrected"   // provisional units a reconciliation took back
	poolOpened       = "opened"      // when the period's ledger was opened (at a rollover) or rebuilt, unix ms; 0: unknown
	poolRebuilt      = "rebuilt"     // units a rebuild adopted from the upstream's figure
	poolDirect       = "direct"      // settlements of reservations the store had no record of
)

// Reservation states as stored.
const (
	stateOpen     = "open"
	stateSettled  = "settled"
	stateReleased = "released"
	stateExpired  = "expired"
)
