package quota

import (
	"context"
	"errors"
	"time"
)

// ErrUnavailable is wrapped by every error that means the ledger store could
// not be reached. Reserve fails closed on it: no unit is ever granted without
// the store having recorded the reservation.
var ErrUnavailable = errors.New("quota: the ledger store cannot be reached")

// ErrUnknownReservation is returned by Settle and Release for a reservation
// the store has no record of (never made, from another budget, so old that
// its period has been dropped by the store's retention, or, on Redis,
// finished more than an hour ago).
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
	// it, or calling it after the other, changes nothing.
	Finish(ctx context.Context, op FinishOp) (FinishResult, error)
	// Snapshot returns the counters of op.Cur after the lease sweep.
	Snapshot(ctx context.Context, op SnapshotOp) (Snapshot, error)
	// SetTenantLimit persists (or with a nil Limit removes) a tenant limit
	// override.
	SetTenantLimit(ctx context.Context, op LimitOp) error
	// Reconcile records the upstream figure for op.Cur and, if op.Adopt,
	// raises the pool's used figure to it (as external spend).
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
// after this reservation.
type ReserveResult struct {
	Granted   bool
	Scope     Scope
	Limit     int64
	Remaining int64
	Reserved  int64
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
}

// ReconcileResult is the ledger's side of a reconciliation, read in the same
// atomic operation that adopted the difference.
type ReconcileResult struct {
	LedgerUsed int64 // before adoption
	Reserved   int64
	Adopted    int64
	Corrected  int64 // provisional units taken back
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
)

// Reservation states as stored.
const (
	stateOpen     = "open"
	stateSettled  = "settled"
	stateReleased = "released"
	stateExpired  = "expired"
)
