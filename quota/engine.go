package quota

import "strings"

// The ledger rules for the stores that run Go inside their atomic section
// (memory, bolt). The Redis store runs the same rules in Lua (lua/*.lua);
// the conformance suite keeps the two in step.

// Namespaces of per-period counters.
const (
	nsPool   = "pool"
	nsTUsed  = "tused"
	nsTRes   = "tres"
	nsLabel  = "label"
	nsLimits = "limits" // not per period
)

// resRecord is a reservation as stored (JSON in bolt and Redis).
type resRecord struct {
	Tenant  string `json:"t"`
	Label   string `json:"l"`
	Units   int64  `json:"u"`
	Expires int64  `json:"e"` // unix ms
	State   string `json:"s"`
	Actual  int64  `json:"a"`
}

// txn is one budget's state seen from inside one atomic section. Errors are
// sticky inside the implementation and reported when the section ends, which
// keeps the rules below readable.
type txn interface {
	get(period, ns, field string) int64
	add(period, ns, field string, delta int64)
	all(period, ns string) map[string]int64
	override(tenant string) (int64, bool)
	setOverride(tenant string, limit *int64)
	res(period, id string) (resRecord, bool)
	putRes(period, id string, r resRecord)
	// due returns the IDs of open leases of period expiring at or before now.
	due(period string, now int64) []string
	setLease(period, id string, expires int64)
	delLease(period, id string)
}

func sweep(t txn, p string, now int64) {
	for _, id := range t.due(p, now) {
		r, ok := t.res(p, id)
		if ok && r.State == stateOpen {
			expire(t, p, id, &r)
			continue
		}
		t.delLease(p, id)
	}
}

// expire charges a reservation in full: its holder vanished, and spend must
// never be under-counted.
func expire(t txn, p, id string, r *resRecord) {
	u := r.Units
	t.add(p, nsPool, poolUsed, u)
	t.add(p, nsPool, poolReserved, -u)
	t.add(p, nsPool, poolExpired, 1)
	t.add(p, nsPool, poolExpiredUnits, u)
	t.add(p, nsTUsed, r.Tenant, u)
	t.add(p, nsTRes, r.Tenant, -u)
	t.add(p, nsLabel, labelKey(r.Tenant, r.Label), u)
	r.State, r.Actual = stateExpired, u
	t.putRes(p, id, *r)
	t.delLease(p, id)
}

func applyReserve(t txn, op ReserveOp) ReserveResult {
	now := op.Now.UnixMilli()
	sweep(t, op.Prev.Key, now)
	sweep(t, op.Cur.Key, now)
	p := op.Cur.Key
	used, reserved := t.get(p, nsPool, poolUsed), t.get(p, nsPool, poolReserved)
	if used+reserved+op.Units > op.PoolLimit {
		return ReserveResult{Scope: ScopePool, Limit: op.PoolLimit, Remaining: max(0, op.PoolLimit-used-reserved)}
	}
	limit := op.TenantLimit
	if v, ok := t.override(op.Tenant); ok {
		limit = v
	}
	if limit > 0 {
		tu, tr := t.get(p, nsTUsed, op.Tenant), t.get(p, nsTRes, op.Tenant)
		if tu+tr+op.Units > limit {
			return ReserveResult{Scope: ScopeTenant, Limit: limit, Remaining: max(0, limit-tu-tr)}
		}
	}
	t.add(p, nsPool, poolReserved, op.Units)
	t.add(p, nsTRes, op.Tenant, op.Units)
	exp := op.Expires.UnixMilli()
	t.putRes(p, op.ID, resRecord{Tenant: op.Tenant, Label: op.Label, Units: op.Units, Expires: exp, State: stateOpen})
	t.setLease(p, op.ID, exp)
	return ReserveResult{Granted: true}
}

func applyFinish(t txn, op FinishOp) error {
	p, id := op.Period.Key, op.Res.ID
	r, ok := t.res(p, id)
	if !ok {
		return ErrUnknownReservation
	}
	if r.State == stateOpen && r.Expires <= op.Now.UnixMilli() {
		expire(t, p, id, &r)
	}
	switch {
	case r.State == stateOpen:
		t.add(p, nsPool, poolReserved, -r.Units)
		t.add(p, nsTRes, r.Tenant, -r.Units)
		t.delLease(p, id)
		if op.Release {
			r.State = stateReleased
			break
		}
		charge(t, p, r, op.Actual, 0)
		t.add(p, nsPool, poolSettled, 1)
		r.State, r.Actual = stateSettled, op.Actual
	case r.State == stateExpired && !op.Release:
		// Already charged in full; only an actual above that adds spend.
		if op.Actual > r.Units {
			charge(t, p, r, op.Actual, r.Units)
			r.Actual = op.Actual
		}
		r.State = stateSettled
	default:
		return nil // settled, released, or releasing an expired one
	}
	t.putRes(p, id, r)
	return nil
}

// charge records actual-already as spend and counts an overrun when actual
// went above the reservation.
func charge(t txn, p string, r resRecord, actual, already int64) {
	d := actual - already
	t.add(p, nsPool, poolUsed, d)
	t.add(p, nsTUsed, r.Tenant, d)
	t.add(p, nsLabel, labelKey(r.Tenant, r.Label), d)
	if actual > r.Units {
		t.add(p, nsPool, poolOverruns, 1)
		t.add(p, nsPool, poolOverrunUnits, actual-r.Units)
	}
}

func applySnapshot(t txn, op SnapshotOp) Snapshot {
	now := op.Now.UnixMilli()
	sweep(t, op.Prev.Key, now)
	sweep(t, op.Cur.Key, now)
	p := op.Cur.Key
	ov := map[string]int64{}
	for k, v := range t.all("", nsLimits) {
		ov[k] = v
	}
	return Snapshot{
		Pool:           t.all(p, nsPool),
		TenantUsed:     t.all(p, nsTUsed),
		TenantReserved: t.all(p, nsTRes),
		LabelUsed:      t.all(p, nsLabel),
		Overrides:      ov,
	}
}

func applyReconcile(t txn, op ReconcileOp) ReconcileResult {
	now := op.Now.UnixMilli()
	sweep(t, op.Prev.Key, now)
	sweep(t, op.Cur.Key, now)
	p := op.Cur.Key
	res := ReconcileResult{LedgerUsed: t.get(p, nsPool, poolUsed), Reserved: t.get(p, nsPool, poolReserved)}
	t.add(p, nsPool, poolUpstream, op.Upstream-t.get(p, nsPool, poolUpstream))
	t.add(p, nsPool, poolDrift, op.Upstream-res.LedgerUsed-t.get(p, nsPool, poolDrift))
	// In-flight reservations may already be spent upstream; adopting only
	// what exceeds used+reserved keeps them from being counted twice.
	if op.Adopt {
		if d := op.Upstream - res.LedgerUsed - res.Reserved; d > 0 {
			t.add(p, nsPool, poolUsed, d)
			t.add(p, nsPool, poolExternal, d)
			res.Adopted = d
		}
	}
	return res
}

// labelKey is the field of a tenant's spend on a label. Spend is kept per
// tenant and label so that an operator sees who spent what on which
// dataset; the unit separator cannot occur in either name.
func labelKey(tenant, label string) string { return tenant + "\x1f" + label }

// splitLabelKey reverses labelKey.
func splitLabelKey(k string) (tenant, label string) {
	tenant, label, _ = strings.Cut(k, "\x1f")
	return tenant, label
}
