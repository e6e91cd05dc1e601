package quota

import (
	"context"
	"maps"
	"sync"
)

// MemoryStore keeps the ledger in process memory. It is for tests and
// benchmarks: nothing survives the process and replicas do not share it.
type MemoryStore struct {
	mu      sync.Mutex
	budgets map[string]*memBudget
}

type memBudget struct {
	limits  map[string]int64
	periods map[string]*memPeriod
	opened  string // the marker (engine.go)
}

type memPeriod struct {
	counters map[string]map[string]int64 // namespace -> field -> value
	res      map[string]resRecord
	leases   map[string]int64 // open reservation ID -> expiry (unix ms)
}

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{budgets: map[string]*memBudget{}}
}

// memTxn is only ever used while MemoryStore.mu is held.
type memTxn struct{ b *memBudget }

func (s *MemoryStore) txn(budget string) memTxn {
	b := s.budgets[budget]
	if b == nil {
		b = &memBudget{limits: map[string]int64{}, periods: map[string]*memPeriod{}}
		s.budgets[budget] = b
	}
	return memTxn{b}
}

func (t memTxn) period(p string) *memPeriod {
	mp := t.b.periods[p]
	if mp == nil {
		mp = &memPeriod{counters: map[string]map[string]int64{}, res: map[string]resRecord{}, leases: map[string]int64{}}
		t.b.periods[p] = mp
	}
	return mp
}

func (t memTxn) get(p, ns, field string) int64 { return t.period(p).counters[ns][field] }

func (t memTxn) add(p, ns, field string, delta int64) {
	c := t.period(p).counters
	if c[ns] == nil {
		c[ns] = map[string]int64{}
	}
	c[ns][field] += delta
}

func (t memTxn) all(p, ns string) map[string]int64 {
	if ns == nsLimits {
		return maps.Clone(t.b.limits)
	}
	m := maps.Clone(t.period(p).counters[ns])
	if m == nil {
		m = map[string]int64{}
	}
	return m
}

func (t memTxn) override(tenant string) (int64, bool) {
	v, ok := t.b.limits[tenant]
	return v, ok
}

func (t memTxn) setOverride(tenant string, limit *int64) {
	if limit == nil {
		delete(t.b.limits, tenant)
		return
	}
	t.b.limits[tenant] = *limit
}

func (t memTxn) res(p, id string) (resRecord, bool) {
	r, ok := t.period(p).res[id]
	return r, ok
}

func (t memTxn) putRes(p, id string, r resRecord) { t.period(p).res[id] = r }

func (t memTxn) due(p string, now int64) []string {
	var ids []string
	for id, exp := range t.period(p).leases {
		if exp <= now {
			ids = append(ids, id)
		}
	}
	return ids
}

func (t memTxn) setLease(p, id string, exp int64) { t.period(p).leases[id] = exp }
func (t memTxn) delLease(p, id string)            { delete(t.period(p).leases, id) }
func (t memTxn) marker() string                   { return t.b.opened }
func (t memTxn) setMarker(p string)               { t.b.opened = p }

// Reserve implements Store.
func (s *MemoryStore) Reserve(_ context.Context, op ReserveOp) (ReserveResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return applyReserve(s.txn(op.Budget), op), nil
}

// Finish implements Store.
func (s *MemoryStore) Finish(_ context.Context, op FinishOp) (FinishResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return applyFinish(s.txn(op.Budget), op)
}

// Snapshot implements Store.
func (s *MemoryStore) Snapshot(_ context.Context, op SnapshotOp) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return applySnapshot(s.txn(op.Budget), op), nil
}

// SetTenantLimit implements Store.
func (s *MemoryStore) SetTenantLimit(_ context.Context, op LimitOp) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txn(op.Budget).setOverride(op.Tenant, op.Limit)
	return nil
}

// Reconcile implements Store.
func (s *MemoryStore) Reconcile(_ context.Context, op ReconcileOp) (ReconcileResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return applyReconcile(s.txn(op.Budget), op), nil
}

// Ping implements Store; memory is always reachable.
func (s *MemoryStore) Ping(context.Context) error { return nil }

// Close implements Store.
func (s *MemoryStore) Close() error { return nil }
