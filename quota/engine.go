package quota

import (
	"sort"
	"strings"
)

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

// resRecord is a reservation as stored (JSON in bolt; Redis keeps the same
// fields in a compact string, lua/common.lua).
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
	// marker is the key of the newest period opened in this store ("":
	// none, or the store lost it together with the overrides it is kept
	// with); setMarker sets it.
	marker() string
	setMarker(period string)
}

// open reports whether period p's ledger is known, and opens it at a
// rollover. A period is known once marked opened. One that is not is
// opened at zero only when the budget's marker names an earlier period:
// the store has known the budget all along and p is new. No marker (a
// first start, or a store that lost everything), or one naming p or a
// later period (p was opened and lost), leaves p unknown until a
// reconciliation rebuilds it.
func open(t txn, p string, now int64) bool {
	if t.get(p, nsPool, poolOpened) != 0 {
		return true
	}
	if m := t.marker(); m == "" || m >= p {
		return false
	}
	t.add(p, nsPool, poolOpened, now)
	t.setMarker(p)
	return true
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
// never be under-counted. The charge is presumed, not reported, so it is
// provisional until a reconciliation confirms or corrects it.
func expire(t txn, p, id string, r *resRecord) {
	u := r.Units
	addProvisional(t, p, r.Tenant, r.Label, u)
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

// addProvisional records units charged on presumption (a lapsed lease, a
// request that left and got no answer), per tenant and label, so that a
// reconciliation can take them back if the upstream never charged them.
func addProvisional(t txn, p, tenant, label string, u int64) {
	t.add(p, nsPool, poolProvisional, u)
	t.add(p, nsPool, provKey(tenant, label), u)
}

// tenantLimit is the tenant's limit: a stored override wins over the
// configured one; 0 means none.
func tenantLimit(t txn, tenant string, configured int64) int64 {
	if v, ok := t.override(tenant); ok {
		return v
	}
	return configured
}

// room is what tenant may still reserve in period p: the pool's room, and
// the tenant's own when it has a limit.
func room(t txn, p, tenant string, poolLimit, limit int64) int64 {
	left := max(0, poolLimit-t.get(p, nsPool, poolUsed)-t.get(p, nsPool, poolReserved))
	if limit > 0 {
		left = min(left, max(0, limit-t.get(p, nsTUsed, tenant)-t.get(p, nsTRes, tenant)))
	}
	return left
}

func applyReserve(t txn, op ReserveOp) ReserveResult {
	now := op.Now.UnixMilli()
	sweep(t, op.Prev.Key, now)
	sweep(t, op.Cur.Key, now)
	p := op.Cur.Key
	if !open(t, p, now) {
		return ReserveResult{Unknown: true}
	}
	limit := tenantLimit(t, op.Tenant, op.TenantLimit)
	if _, ok := t.res(p, op.ID); ok {
		// A retry of a reservation already recorded (its reply was lost):
		// grant it again without counting it twice.
		return ReserveResult{Granted: true, Remaining: room(t, p, op.Tenant, op.PoolLimit, limit)}
	}
	used, reserved, opened := t.get(p, nsPool, poolUsed), t.get(p, nsPool, poolReserved), t.get(p, nsPool, poolOpened)
	if used+reserved+op.Units > op.PoolLimit {
		return ReserveResult{Scope: ScopePool, Limit: op.PoolLimit, Remaining: max(0, op.PoolLimit-used-reserved),
			Reserved: reserved, Opened: opened}
	}
	if limit > 0 {
		tu, tr := t.get(p, nsTUsed, op.Tenant), t.get(p, nsTRes, op.Tenant)
		if tu+tr+op.Units > limit {
			return ReserveResult{Scope: ScopeTenant, Limit: limit, Remaining: max(0, limit-tu-tr), Reserved: tr, Opened: opened}
		}
	}
	t.add(p, nsPool, poolReserved, op.Units)
	t.add(p, nsTRes, op.Tenant, op.Units)
	exp := op.Expires.UnixMilli()
	t.putRes(p, op.ID, resRecord{Tenant: op.Tenant, Label: op.Label, Units: op.Units, Expires: exp, State: stateOpen})
	t.setLease(p, op.ID, exp)
	return ReserveResult{Granted: true, Remaining: room(t, p, op.Tenant, op.PoolLimit, limit)}
}

func applyFinish(t txn, op FinishOp) (FinishResult, error) {
	p, id := op.Period.Key, op.Res.ID
	r, ok := t.res(p, id)
	done := func() FinishResult {
		return FinishResult{Remaining: room(t, p, r.Tenant, op.PoolLimit, tenantLimit(t, r.Tenant, op.TenantLimit)),
			TenantUsed: t.get(p, nsTUsed, r.Tenant), Opened: t.get(p, nsPool, poolOpened)}
	}
	if !ok {
		// The store lost the reservation (or forgot it, long finished):
		// the units reported were spent upstream all the same.
		r = resRecord{Tenant: op.Res.Tenant, Label: op.Res.Label, Units: op.Res.Units, State: stateReleased}
		if !op.Release {
			direct(t, p, r, op.Actual)
			r.State, r.Actual = stateSettled, op.Actual
		}
		t.putRes(p, id, r)
		return done(), nil
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
		if op.Provisional {
			addProvisional(t, p, r.Tenant, r.Label, op.Actual)
		}
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
		return done(), nil // settled, released, or releasing an expired one
	}
	t.putRes(p, id, r)
	return done(), nil
}

// direct charges actual units spent under a reservation the store has no
// record of, pool and tenant. It is provisional: when the store lost its
// data, the upstream's figure a rebuild adopted may count these units
// already, and a reconciliation takes back what it does.
func direct(t txn, p string, r resRecord, actual int64) {
	charge(t, p, r, actual, 0)
	addProvisional(t, p, r.Tenant, r.Label, actual)
	t.add(p, nsPool, poolSettled, 1)
	t.add(p, nsPool, poolDirect, 1)
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
		OverridesKnown: t.marker() != "",
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
	// A new period the store knows to follow its last one opens as Reserve
	// opens it; only an unknown one is rebuilt.
	res.Rebuilt = !open(t, p, now)
	restoreOverrides(t, p, op.Seed)
	if res.Rebuilt || op.Seed.Lost {
		rebuild(t, p, op.Seed, op.Now.UnixMilli())
	}
	// In-flight reservations may already be spent upstream; adopting only
	// what exceeds used+reserved keeps them from being counted twice. A
	// rebuild adopts whatever the reset dates say: an unknown ledger
	// counts nothing, and the upstream's figure is the best there is.
	if !op.Adopt && !res.Rebuilt {
		return res
	}
	if d := op.Upstream - res.LedgerUsed - res.Reserved; d > 0 {
		t.add(p, nsPool, poolUsed, d)
		if res.Rebuilt {
			t.add(p, nsPool, poolRebuilt, d)
		} else {
			t.add(p, nsPool, poolExternal, d)
		}
		res.Adopted = d
	}
	if res.Rebuilt {
		// Charges made while the period was unknown stay provisional
		// until a reading taken after them confirms or corrects them.
		return res
	}
	// Provisional charges the upstream never made come back down, but never
	// below confirmed spend. The upstream's figure may already include
	// requests still reserved here, so ledger - upstream under-states the
	// excess: the correction errs on the side of spend. What is left of the
	// provisional charges is confirmed by this reading.
	prov := t.all(p, nsPool)
	down := min(t.get(p, nsPool, poolProvisional), max(0, res.LedgerUsed-op.Upstream))
	res.Corrected = down
	for _, k := range sortedProvKeys(prov) {
		tenant, label := splitLabelKey(strings.TrimPrefix(k, provPrefix))
		d := min(down, prov[k])
		if d > 0 {
			t.add(p, nsPool, poolUsed, -d)
			t.add(p, nsTUsed, tenant, -d)
			t.add(p, nsLabel, labelKey(tenant, label), -d)
			t.add(p, nsPool, poolCorrected, d)
			down -= d
		}
		t.add(p, nsPool, k, -prov[k])
	}
	t.add(p, nsPool, poolProvisional, -t.get(p, nsPool, poolProvisional))
	return res
}

// rebuild opens period p, if it is not, and raises the tenants' spend to
// what a replica last read where the store has less.
func rebuild(t txn, p string, seed Seed, now int64) {
	if seed.Period == p {
		for _, tenant := range sortedKeys(seed.TenantUsed) {
			if d := seed.TenantUsed[tenant] - t.get(p, nsTUsed, tenant); d > 0 {
				t.add(p, nsTUsed, tenant, d)
			}
		}
	}
	if t.get(p, nsPool, poolOpened) == 0 {
		t.add(p, nsPool, poolOpened, now)
	}
	if t.marker() < p {
		t.setMarker(p)
	}
}

// restoreOverrides writes back the overrides a replica last read where the
// store lost them (the marker, kept with them, is gone, or the replica
// found the period lost) and holds none newer, and marks them known again. What a replica that never read them
// rebuilds (it started after the loss) has none to restore: a store that
// lost its data and every replica that had read them loses them.
func restoreOverrides(t txn, p string, seed Seed) {
	if (t.marker() != "" && !seed.Lost) || seed.Overrides == nil {
		return
	}
	for _, tenant := range sortedKeys(seed.Overrides) {
		if _, ok := t.override(tenant); !ok {
			v := seed.Overrides[tenant]
			t.setOverride(tenant, &v)
		}
	}
	if t.marker() < p {
		t.setMarker(p)
	}
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// provPrefix starts the pool fields that hold a tenant's provisional
// charges on a label.
const provPrefix = "prov\x1e"

func provKey(tenant, label string) string { return provPrefix + labelKey(tenant, label) }

func sortedProvKeys(pool map[string]int64) []string {
	var keys []string
	for k, v := range pool {
		if strings.HasPrefix(k, provPrefix) && v != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
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
