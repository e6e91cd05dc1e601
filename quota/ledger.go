// Package quota is linkgate's ledger of upstream units: one budget per period,
// shared by every caller and every replica, never overspent. It knows nothing
// about the upstream; it moves integers.
//
// A caller reserves an estimate before spending, then settles the actual cost
// (or releases the reservation). A reservation whose holder never comes back
// is charged in full when its lease runs out, so spend is never under-counted.
package quota

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
)

// Config describes one budget.
type Config struct {
	// Budget names the budget; it is part of every store key, so it is
	// restricted to [A-Za-z0-9_.-] (no Redis hash-tag braces).
	Budget string
	// PoolLimit is the number of units per period for the whole pool (>0).
	PoolLimit int64
	// ResetDay is the day of month (1..28, UTC) on which a period starts.
	ResetDay int
	// Lease is how long a reservation may stay open before it is charged in
	// full. It must be shorter than a period (at most 27 days).
	Lease time.Duration
	// Tenants holds per-tenant limits from configuration. An absent tenant
	// has no limit of its own, only the pool's. A run-time override set with
	// SetTenantLimit wins over this.
	Tenants map[string]int64
	// Clock is the replica's clock; nil means clock.System. On a store
	// with a clock of its own (Redis) it only counts the time elapsed since
	// the ledger last read the store's clock, which decides periods and
	// leases; elsewhere it decides them itself.
	Clock clock.Clock
	// FinishTimeout bounds Finish, which ignores the caller's
	// cancellation; 0 means 5s.
	FinishTimeout time.Duration
}

// Scope says which limit denied a reservation.
type Scope int

const (
	// ScopePool is the budget's pool limit.
	ScopePool Scope = iota + 1
	// ScopeTenant is the tenant's own limit.
	ScopeTenant
)

// String returns "pool" or "tenant".
func (s Scope) String() string {
	switch s {
	case ScopePool:
		return "pool"
	case ScopeTenant:
		return "tenant"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// DeniedError is returned by Reserve when a limit has no room for the units
// asked. A denial costs nothing: no counter moves.
type DeniedError struct {
	Scope     Scope
	Tenant    string
	Limit     int64
	Remaining int64
	Asked     int64
	// Reserved is what open reservations (requests in flight) hold of the
	// limit that refused.
	Reserved int64
	ResetAt  time.Time // end of the current period, when room comes back
}

// HeldInFlight reports whether the room is only held, not spent: the units
// asked would fit if the requests in flight settled for nothing, so room
// may come back within seconds rather than at the period's reset.
func (e *DeniedError) HeldInFlight() bool { return e.Reserved > 0 && e.Remaining+e.Reserved >= e.Asked }

// Error implements error.
func (e *DeniedError) Error() string {
	return fmt.Sprintf("quota: %s limit reached for tenant %q: asked %d, %d of %d left until %s",
		e.Scope, e.Tenant, e.Asked, e.Remaining, e.Limit, e.ResetAt.Format(time.RFC3339))
}

// Reservation is a grant of units. It carries everything a store needs, so
// any replica can settle or release it; it can be serialised as JSON.
type Reservation struct {
	ID      string    `json:"id"`
	Budget  string    `json:"budget"`
	Tenant  string    `json:"tenant"`
	Label   string    `json:"label"`
	Units   int64     `json:"units"`
	Period  string    `json:"period"` // key of the period it is charged to
	Expires time.Time `json:"expires"`
	// Remaining is what the tenant could still reserve once this
	// reservation was made, read in the same store operation.
	Remaining int64 `json:"remaining"`
}

// Account is the state of the pool or of one tenant in the current period.
type Account struct {
	Name      string
	Limit     int64 // 0 = unlimited (tenants only)
	Used      int64
	Reserved  int64
	Remaining int64 // for an unlimited tenant: what the pool has left
	// PeriodStart and PeriodEnd bound the period, [start, end) in UTC.
	PeriodStart, PeriodEnd time.Time
}

// Usage is the pool and one tenant.
type Usage struct {
	Pool   Account
	Tenant Account
}

// Remaining is what the tenant may still spend: its own room, which the
// ledger already caps at what the pool has left.
func (u Usage) Remaining() int64 { return min(u.Pool.Remaining, u.Tenant.Remaining) }

// Report is the whole budget in the current period, for operators.
type Report struct {
	Pool          Account
	Tenants       []Account // every configured, overridden or spending tenant, by name
	SpendByTenant map[string]int64
	SpendByLabel  map[string]int64
	// SpendByTenantLabel is each tenant's spend per label (dataset).
	SpendByTenantLabel map[string]map[string]int64
	Settled            int64 // reservations settled
	Overruns           int64 // settlements whose actual exceeded the reservation
	OverrunUnits       int64 // units spent above reservations
	Expired            int64 // reservations charged in full after their lease
	ExpiredUnits       int64
	External           int64 // units adopted from the upstream (spent outside linkgate)
	Upstream           int64 // last figure the upstream reported (0 = never reconciled)
	Drift              int64 // upstream minus ledger at the last reconciliation
	// Provisional is spend presumed but not reported (lapsed leases,
	// requests that got no answer) since the last reconciliation, which
	// will confirm or correct it.
	Provisional int64
	Corrected   int64 // provisional units reconciliations took back
	Rebuilt     int64 // units a rebuild of the period adopted from the upstream's figure
	// Direct counts settlements of reservations the store had no record
	// of (it lost them): charged directly, provisionally.
	Direct int64
}

// Ledger enforces one budget over a Store. It is safe for concurrent use;
// all coordination happens in the store, so any number of Ledgers (one per
// replica) may share a store.
type Ledger struct {
	store Store
	cfg   Config
	// reconcile holds a request for a reconciliation now (RequestReconcile).
	reconcile chan struct{}
	seen      seen
	// lost: the store may have lost writes since the last reconciliation
	// (RequestReconcile), so the next one writes back what was seen.
	lost atomic.Bool
	// failed is why the last reconciliation failed; nil after one that
	// did not (RebuildError).
	failed atomic.Pointer[error]
	clock  *ledgerClock
}

// seen is what this replica last read of the state a store may lose, so
// that a rebuild can restore it: every replica keeps it, and each writes
// back what the store holds nothing newer of (Seed).
type seen struct {
	mu        sync.Mutex
	period    string
	opened    int64            // the period's opening as last seen (FinishResult.Opened)
	spend     map[string]int64 // tenant -> used in period
	overrides map[string]int64 // nil until read whole
}

// spent remembers tenant's spend in period as a store step reported it,
// and reports whether the period was rebuilt since this replica last
// looked: what it read before may then be missing from the store.
func (s *seen) spent(period, tenant string, r FinishResult) (rebuilt bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if period < s.period {
		return false
	}
	if period > s.period {
		s.period, s.opened, s.spend = period, 0, map[string]int64{}
	}
	// Spend only grows but for a reconciliation's corrections, which the
	// next whole read brings in; a figure lower than one already seen is
	// of a store that lost what this replica read.
	s.spend[tenant] = max(s.spend[tenant], r.TenantUsed)
	return s.stamp(r.Opened)
}

// opens reports, from a step's view of period's opening, whether it was
// rebuilt since this replica last looked.
func (s *seen) opens(period string, opened int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return period == s.period && s.stamp(opened)
}

// stamp takes a step's view of the period's opening (0: unknown) and
// reports whether it differs from the one seen before. s.mu is held.
func (s *seen) stamp(opened int64) (rebuilt bool) {
	if opened == 0 {
		return false
	}
	rebuilt = s.opened != 0 && s.opened != opened
	s.opened = opened
	return rebuilt
}

// read remembers a whole snapshot of period, and reports whether the
// period was rebuilt since this replica last looked. A snapshot of a
// store that lost its data teaches nothing: the overrides are taken only
// while their marker is there, the spend only of a known period, and
// merged with what was seen before a rebuild.
func (s *seen) read(period string, snap Snapshot) (rebuilt bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if snap.OverridesKnown {
		s.overrides = maps.Clone(snap.Overrides)
		if s.overrides == nil {
			s.overrides = map[string]int64{}
		}
	}
	opened := snap.Pool[poolOpened]
	switch {
	case period < s.period || opened == 0:
		return false
	case period > s.period || s.opened == opened || s.opened == 0:
		s.period, s.opened, s.spend = period, opened, maps.Clone(snap.TenantUsed)
		return false
	}
	for t, u := range snap.TenantUsed {
		s.spend[t] = max(s.spend[t], u)
	}
	s.opened = opened
	return true
}

// override remembers a change of one override, once all are known.
func (s *seen) override(tenant string, limit *int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.overrides == nil:
	case limit == nil:
		delete(s.overrides, tenant)
	default:
		s.overrides[tenant] = *limit
	}
}

func (s *seen) seed(lost bool) Seed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Seed{Period: s.period, TenantUsed: maps.Clone(s.spend), Overrides: maps.Clone(s.overrides), Lost: lost}
}

var budgetName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// maxUnits keeps every figure exactly representable in Redis' Lua numbers
// (doubles printed with 14 significant digits).
const maxUnits = 1e13

// MaxUnits is the largest figure the ledger accepts: a limit, a
// reservation or a cost.
const MaxUnits = int64(maxUnits)

// New validates cfg and returns a Ledger over store.
func New(store Store, cfg Config) (*Ledger, error) {
	switch {
	case store == nil:
		return nil, errors.New("quota: nil store")
	case !budgetName.MatchString(cfg.Budget):
		return nil, fmt.Errorf("quota: budget name %q must match %s", cfg.Budget, budgetName)
	case cfg.PoolLimit <= 0 || cfg.PoolLimit > maxUnits:
		return nil, fmt.Errorf("quota: pool limit %d must be in 1..%d", cfg.PoolLimit, int64(maxUnits))
	case cfg.ResetDay < 1 || cfg.ResetDay > 28:
		return nil, fmt.Errorf("quota: reset day %d must be in 1..28", cfg.ResetDay)
	case cfg.Lease <= 0 || cfg.Lease > 27*24*time.Hour:
		return nil, fmt.Errorf("quota: lease %s must be in (0, 27 days]", cfg.Lease)
	}
	for t, v := range cfg.Tenants {
		if t == "" || v < 0 || v > maxUnits {
			return nil, fmt.Errorf("quota: bad tenant limit %q=%d", t, v)
		}
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.FinishTimeout <= 0 {
		cfg.FinishTimeout = 5 * time.Second
	}
	return &Ledger{store: store, cfg: cfg, reconcile: make(chan struct{}, 1),
		clock: newLedgerClock(store, cfg.Budget, cfg.Clock)}, nil
}

// RequestReconcile asks the reconciler to run now rather than at its next
// tick, because the store may have lost writes: Reserve found the
// period's ledger unknown (ErrRebuilding), a step showed it rebuilt by
// another replica, or a caller saw the store restart or fail over. That
// reconciliation also writes back what this replica read of the tenants'
// spend and the overrides, where the store holds less (Seed.Lost).
// Requests made while one is pending count once; it never blocks.
func (l *Ledger) RequestReconcile() {
	l.lost.Store(true)
	select {
	case l.reconcile <- struct{}{}:
	default:
	}
}

// ReconcileRequests delivers the requests of RequestReconcile: the
// reconciler's loop selects on it.
func (l *Ledger) ReconcileRequests() <-chan struct{} { return l.reconcile }

// Period returns the current period, by the store's clock as last read.
func (l *Ledger) Period() Period { return PeriodAt(l.clock.lastNow(), l.cfg.ResetDay) }

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// Reserve grants units to tenant for spend under label (the dataset), or
// returns a *DeniedError naming the limit that had no room. It fails closed:
// if the store cannot be reached the error wraps ErrUnavailable.
func (l *Ledger) Reserve(ctx context.Context, tenant, label string, units int64) (Reservation, error) {
	if tenant == "" {
		return Reservation{}, errors.New("quota: empty tenant")
	}
	if units <= 0 || units > maxUnits {
		return Reservation{}, fmt.Errorf("quota: units %d must be in 1..%d", units, int64(maxUnits))
	}
	now, err := l.clock.now(ctx)
	if err != nil {
		return Reservation{}, err
	}
	cur := PeriodAt(now, l.cfg.ResetDay)
	op := ReserveOp{
		Budget: l.cfg.Budget, Cur: cur, Prev: cur.Previous(), Now: now,
		ID: newID(), Tenant: tenant, Label: label, Units: units,
		Expires: now.Add(l.cfg.Lease), PoolLimit: l.cfg.PoolLimit, TenantLimit: l.cfg.Tenants[tenant],
	}
	res, err := l.store.Reserve(ctx, op)
	if err != nil {
		return Reservation{}, err
	}
	if res.Unknown {
		l.RequestReconcile()
		e := &RebuildError{}
		if f := l.failed.Load(); f != nil {
			e.Cause = *f
		}
		return Reservation{}, e
	}
	if !res.Granted {
		if l.seen.opens(cur.Key, res.Opened) {
			l.RequestReconcile()
		}
		return Reservation{}, &DeniedError{Scope: res.Scope, Tenant: tenant, Limit: res.Limit,
			Remaining: res.Remaining, Reserved: res.Reserved, Asked: units, ResetAt: cur.End}
	}
	return Reservation{ID: op.ID, Budget: l.cfg.Budget, Tenant: tenant, Label: label,
		Units: units, Period: cur.Key, Expires: op.Expires, Remaining: res.Remaining}, nil
}

// Outcome is how a reservation ends.
type Outcome struct {
	// Actual is the units spent; ignored by a release.
	Actual int64
	// Release returns the reservation unspent.
	Release bool
	// Provisional marks Actual as presumed, not reported: the request left
	// and no answer came back. A reconciliation against the upstream's
	// usage confirms it or takes it back.
	Provisional bool
}

// Finish settles or releases r as o says, in one store operation, and
// returns what r's tenant may still reserve.
//
// Settling turns r into spend of o.Actual units, charged to r's own period
// even after a rollover. Below the estimate the difference returns to the
// pool; above it the actual is recorded anyway and counted as an overrun,
// since the units are already spent. Releasing returns r's units unspent.
// Finishing again, or a reservation the lease already charged in full,
// changes nothing but the part of a settled actual above its units.
//
// Finish ignores cancellation of ctx (a cancelled caller must not leave
// units reserved) and is bounded by Config.FinishTimeout instead.
func (l *Ledger) Finish(ctx context.Context, r Reservation, o Outcome) (remaining int64, err error) {
	if o.Actual < 0 || o.Actual > maxUnits {
		return 0, fmt.Errorf("quota: actual %d must be in 0..%d", o.Actual, int64(maxUnits))
	}
	if r.Budget != l.cfg.Budget || r.ID == "" {
		return 0, ErrUnknownReservation
	}
	p, err := ParsePeriodKey(r.Period)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.FinishTimeout)
	defer cancel()
	if o.Release {
		o.Actual, o.Provisional = 0, false
	}
	now, err := l.clock.now(ctx)
	if err != nil {
		return 0, err
	}
	res, err := l.store.Finish(ctx, FinishOp{Budget: l.cfg.Budget, Res: r, Period: p,
		Now: now, Actual: o.Actual, Release: o.Release, Provisional: o.Provisional,
		PoolLimit: l.cfg.PoolLimit, TenantLimit: l.cfg.Tenants[r.Tenant]})
	if err == nil && l.seen.spent(r.Period, r.Tenant, res) {
		// Another replica rebuilt the period: what this one read may be
		// missing from it.
		l.RequestReconcile()
	}
	return res.Remaining, err
}

func (l *Ledger) snapshot(ctx context.Context) (Snapshot, Period, error) {
	now, err := l.clock.now(ctx)
	if err != nil {
		return Snapshot{}, Period{}, err
	}
	cur := PeriodAt(now, l.cfg.ResetDay)
	s, err := l.store.Snapshot(ctx, SnapshotOp{Budget: l.cfg.Budget, Cur: cur, Prev: cur.Previous(), Now: now})
	if err == nil && l.seen.read(cur.Key, s) {
		l.RequestReconcile()
	}
	return s, cur, err
}

func (l *Ledger) pool(s Snapshot, p Period) Account {
	used, res := s.Pool[poolUsed], s.Pool[poolReserved]
	return Account{Name: l.cfg.Budget, Limit: l.cfg.PoolLimit, Used: used, Reserved: res,
		Remaining: max(0, l.cfg.PoolLimit-used-res), PeriodStart: p.Start, PeriodEnd: p.End}
}

func (l *Ledger) tenant(s Snapshot, p Period, pool Account, name string) Account {
	limit := l.cfg.Tenants[name]
	if v, ok := s.Overrides[name]; ok {
		limit = v
	}
	a := Account{Name: name, Limit: limit, Used: s.TenantUsed[name], Reserved: s.TenantReserved[name],
		Remaining: pool.Remaining, PeriodStart: p.Start, PeriodEnd: p.End}
	if limit > 0 {
		a.Remaining = min(pool.Remaining, max(0, limit-a.Used-a.Reserved))
	}
	return a
}

// Usage reports the pool and tenant in the current period. A tenant's
// Remaining is what it could reserve now: the smaller of its own room and
// the pool's.
func (l *Ledger) Usage(ctx context.Context, tenant string) (Usage, error) {
	s, p, err := l.snapshot(ctx)
	if err != nil {
		return Usage{}, err
	}
	pool := l.pool(s, p)
	return Usage{Pool: pool, Tenant: l.tenant(s, p, pool, tenant)}, nil
}

// AllUsage reports the whole budget in the current period.
func (l *Ledger) AllUsage(ctx context.Context) (Report, error) {
	s, p, err := l.snapshot(ctx)
	if err != nil {
		return Report{}, err
	}
	pool := l.pool(s, p)
	names := map[string]bool{}
	for _, m := range []map[string]int64{l.cfg.Tenants, s.Overrides, s.TenantUsed, s.TenantReserved} {
		for n := range m {
			names[n] = true
		}
	}
	rep := Report{Pool: pool, SpendByTenant: nonZero(s.TenantUsed), SpendByLabel: map[string]int64{},
		SpendByTenantLabel: map[string]map[string]int64{},
		Settled:            s.Pool[poolSettled], Overruns: s.Pool[poolOverruns], OverrunUnits: s.Pool[poolOverrunUnits],
		Expired: s.Pool[poolExpired], ExpiredUnits: s.Pool[poolExpiredUnits], External: s.Pool[poolExternal],
		Upstream: s.Pool[poolUpstream], Drift: s.Pool[poolDrift],
		Provisional: s.Pool[poolProvisional], Corrected: s.Pool[poolCorrected],
		Rebuilt: s.Pool[poolRebuilt], Direct: s.Pool[poolDirect]}
	for k, v := range s.LabelUsed {
		if v == 0 {
			continue
		}
		tenant, label := splitLabelKey(k)
		rep.SpendByLabel[label] += v
		if rep.SpendByTenantLabel[tenant] == nil {
			rep.SpendByTenantLabel[tenant] = map[string]int64{}
		}
		rep.SpendByTenantLabel[tenant][label] += v
	}
	for n := range names {
		rep.Tenants = append(rep.Tenants, l.tenant(s, p, pool, n))
	}
	sort.Slice(rep.Tenants, func(i, j int) bool { return rep.Tenants[i].Name < rep.Tenants[j].Name })
	return rep, nil
}

func nonZero(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// SetTenantLimit overrides tenant's configured limit at run time; the
// override is kept in the store, so it survives restarts and is seen by
// every replica, and every replica that has read it keeps a copy that a
// rebuild restores if the store loses it. nil removes it; 0 means no
// tenant limit (only the pool).
func (l *Ledger) SetTenantLimit(ctx context.Context, tenant string, limit *int64) error {
	if tenant == "" {
		return errors.New("quota: empty tenant")
	}
	if limit != nil && (*limit < 0 || *limit > maxUnits) {
		return fmt.Errorf("quota: tenant limit %d must be in 0..%d", *limit, int64(maxUnits))
	}
	now, err := l.clock.now(ctx)
	if err != nil {
		return err
	}
	err = l.store.SetTenantLimit(ctx, LimitOp{Budget: l.cfg.Budget, Tenant: tenant, Limit: limit,
		Cur: PeriodAt(now, l.cfg.ResetDay)})
	if err == nil {
		l.seen.override(tenant, limit)
	}
	return err
}

// Ping reports whether the store can be reached; for readiness checks.
func (l *Ledger) Ping(ctx context.Context) error { return l.store.Ping(ctx) }
