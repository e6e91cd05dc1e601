package quota

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// BoltStore keeps the ledger in one bbolt file. Every operation is one
// Update transaction, fsynced before it returns, so a settled unit survives a
// crash or kill -9; a reservation whose process died stays in the file and is
// charged in full once its lease runs out.
//
// bbolt locks the file: one process at a time. Replicas that share a budget
// need the Redis store.
type BoltStore struct {
	db *bolt.DB
}

// BoltOption configures OpenBoltStore.
type BoltOption func(*bolt.Options)

// WithBoltLockTimeout bounds the wait for another process's file lock
// (default 5s); after it OpenBoltStore fails instead of hanging.
func WithBoltLockTimeout(d time.Duration) BoltOption {
	return func(o *bolt.Options) { o.Timeout = d }
}

// OpenBoltStore opens (creating if needed) the ledger file at path.
func OpenBoltStore(path string, opts ...BoltOption) (*BoltStore, error) {
	o := &bolt.Options{Timeout: 5 * time.Second}
	for _, opt := range opts {
		opt(o)
	}
	db, err := bolt.Open(path, 0o600, o)
	if errors.Is(err, berrors.ErrTimeout) {
		// bbolt's own word, "timeout", would send an operator looking
		// for a network fault rather than for the process holding the file.
		return nil, lockedError(path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: opening %s: %v", ErrUnavailable, path, err)
	}
	return &BoltStore{db: db}, nil
}

// ErrLocked is a ledger file held by another process.
var ErrLocked = errors.New("quota: the ledger file is locked by another process")

// lockedError names the file and, where the system tells (Linux), the
// process that holds it.
func lockedError(path string) error {
	e := &errLocked{path: path}
	if pid, cmd := lockHolder(path); pid > 0 && cmd != "" {
		e.holder = fmt.Sprintf(" (pid %d: %s)", pid, cmd)
	} else if pid > 0 {
		e.holder = fmt.Sprintf(" (pid %d)", pid)
	}
	return e
}

type errLocked struct{ path, holder string }

func (e *errLocked) Error() string {
	return "quota: the ledger file " + e.path + " is locked by another process" + e.holder +
		"; a bolt ledger serves one process at a time: stop that process, or use another file"
}

func (e *errLocked) Is(target error) bool { return target == ErrLocked }

// Close implements Store.
func (s *BoltStore) Close() error { return s.db.Close() }

// Ping implements Store.
func (s *BoltStore) Ping(context.Context) error {
	return s.wrap(s.db.View(func(*bolt.Tx) error { return nil }))
}

func (s *BoltStore) wrap(err error) error {
	if err == nil || errors.Is(err, ErrUnknownReservation) {
		return err
	}
	return fmt.Errorf("%w: bolt %s: %v", ErrUnavailable, s.db.Path(), err)
}

// update runs fn over the budget's state in one read-write transaction.
// view runs fn in a read-only transaction.
func (s *BoltStore) view(ctx context.Context, budget string, fn func(*boltTxn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.wrap(s.db.View(func(tx *bolt.Tx) error {
		t := &boltTxn{b: tx.Bucket([]byte("budget/" + budget)), periods: map[string]*bolt.Bucket{}, readOnly: true}
		if err := fn(t); err != nil {
			return err
		}
		return t.err
	}))
}

func (s *BoltStore) update(ctx context.Context, budget string, fn func(*boltTxn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.wrap(s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("budget/" + budget))
		if err != nil {
			return err
		}
		t := &boltTxn{b: b, periods: map[string]*bolt.Bucket{}}
		if err := fn(t); err != nil {
			return err
		}
		return t.err // a sticky error rolls the whole operation back
	}))
}

// Reserve implements Store.
func (s *BoltStore) Reserve(ctx context.Context, op ReserveOp) (res ReserveResult, err error) {
	err = s.update(ctx, op.Budget, func(t *boltTxn) error { res = applyReserve(t, op); return nil })
	return res, err
}

// Finish implements Store.
func (s *BoltStore) Finish(ctx context.Context, op FinishOp) (res FinishResult, err error) {
	err = s.update(ctx, op.Budget, func(t *boltTxn) error { res, err = applyFinish(t, op); return err })
	return res, err
}

// Snapshot implements Store. It writes, because the lease sweep does.
func (s *BoltStore) Snapshot(ctx context.Context, op SnapshotOp) (snap Snapshot, err error) {
	// Most snapshots change nothing: read in a read-only transaction they
	// cost no fsync. Only when a lapsed reservation must first be charged
	// does the snapshot take a write transaction.
	now, done := op.Now.UnixMilli(), false
	err = s.view(ctx, op.Budget, func(t *boltTxn) error {
		if len(t.due(op.Prev.Key, now)) == 0 && len(t.due(op.Cur.Key, now)) == 0 {
			snap, done = applySnapshot(t, op), true
		}
		return nil
	})
	if err != nil || done {
		return snap, err
	}
	err = s.update(ctx, op.Budget, func(t *boltTxn) error { snap = applySnapshot(t, op); return nil })
	return snap, err
}

// SetTenantLimit implements Store.
func (s *BoltStore) SetTenantLimit(ctx context.Context, op LimitOp) error {
	return s.update(ctx, op.Budget, func(t *boltTxn) error { t.setOverride(op.Tenant, op.Limit); return nil })
}

// Reconcile implements Store.
func (s *BoltStore) Reconcile(ctx context.Context, op ReconcileOp) (res ReconcileResult, err error) {
	err = s.update(ctx, op.Budget, func(t *boltTxn) error { res = applyReconcile(t, op); return nil })
	return res, err
}

// boltTxn lays a budget out as: limits/<tenant>, opened (the marker), and per period
// period/<key>/{pool,tused,tres,label}/<field> = int64 big-endian,
// period/<key>/res/<id> = JSON record, period/<key>/lease/<id> = expiry.
type boltTxn struct {
	b       *bolt.Bucket // nil in a read-only transaction of a new budget
	periods map[string]*bolt.Bucket
	err     error
	// readOnly: buckets are looked up, never created; a missing one reads
	// as empty.
	readOnly bool
}

func (t *boltTxn) fail(err error) {
	if t.err == nil && err != nil {
		t.err = err
	}
}

// bucket returns a sub-bucket of the period (or the limits bucket),
// creating it on the way.
func (t *boltTxn) bucket(p, ns string) *bolt.Bucket {
	if t.err != nil {
		return nil
	}
	if t.readOnly {
		return t.lookup(p, ns)
	}
	if ns == nsLimits {
		b, err := t.b.CreateBucketIfNotExists([]byte(nsLimits))
		t.fail(err)
		return b
	}
	pb := t.periods[p]
	if pb == nil {
		var err error
		pb, err = t.b.CreateBucketIfNotExists([]byte("period/" + p))
		if err != nil {
			t.fail(err)
			return nil
		}
		t.periods[p] = pb
	}
	b, err := pb.CreateBucketIfNotExists([]byte(ns))
	t.fail(err)
	return b
}

// lookup is bucket without creating anything.
func (t *boltTxn) lookup(p, ns string) *bolt.Bucket {
	if t.b == nil {
		return nil
	}
	if ns == nsLimits {
		return t.b.Bucket([]byte(nsLimits))
	}
	pb := t.periods[p]
	if pb == nil {
		if pb = t.b.Bucket([]byte("period/" + p)); pb == nil {
			return nil
		}
		t.periods[p] = pb
	}
	return pb.Bucket([]byte(ns))
}

func enc(v int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return b[:]
}

func dec(b []byte) int64 {
	if len(b) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

func (t *boltTxn) get(p, ns, field string) int64 {
	b := t.bucket(p, ns)
	if b == nil {
		return 0
	}
	return dec(b.Get([]byte(field)))
}

func (t *boltTxn) add(p, ns, field string, delta int64) {
	if b := t.bucket(p, ns); b != nil {
		t.fail(b.Put([]byte(field), enc(dec(b.Get([]byte(field)))+delta)))
	}
}

func (t *boltTxn) all(p, ns string) map[string]int64 {
	m := map[string]int64{}
	if b := t.bucket(p, ns); b != nil {
		t.fail(b.ForEach(func(k, v []byte) error { m[string(k)] = dec(v); return nil }))
	}
	return m
}

func (t *boltTxn) override(tenant string) (int64, bool) {
	b := t.bucket("", nsLimits)
	if b == nil {
		return 0, false
	}
	v := b.Get([]byte(tenant))
	return dec(v), v != nil
}

func (t *boltTxn) setOverride(tenant string, limit *int64) {
	b := t.bucket("", nsLimits)
	switch {
	case b == nil:
	case limit == nil:
		t.fail(b.Delete([]byte(tenant)))
	default:
		t.fail(b.Put([]byte(tenant), enc(*limit)))
	}
}

func (t *boltTxn) res(p, id string) (resRecord, bool) {
	var r resRecord
	b := t.bucket(p, "res")
	if b == nil {
		return r, false
	}
	v := b.Get([]byte(id))
	if v == nil {
		return r, false
	}
	t.fail(json.Unmarshal(v, &r))
	return r, t.err == nil
}

func (t *boltTxn) putRes(p, id string, r resRecord) {
	b := t.bucket(p, "res")
	if b == nil {
		return
	}
	v, err := json.Marshal(r)
	t.fail(err)
	t.fail(b.Put([]byte(id), v))
}

// due scans every open lease: open reservations are bounded by the callers'
// concurrency, so the scan stays short without an expiry index.
func (t *boltTxn) due(p string, now int64) []string {
	var ids []string
	if b := t.bucket(p, "lease"); b != nil {
		t.fail(b.ForEach(func(k, v []byte) error {
			if dec(v) <= now {
				ids = append(ids, string(k))
			}
			return nil
		}))
	}
	return ids
}

func (t *boltTxn) setLease(p, id string, exp int64) {
	if b := t.bucket(p, "lease"); b != nil {
		t.fail(b.Put([]byte(id), enc(exp)))
	}
}

func (t *boltTxn) delLease(p, id string) {
	if b := t.bucket(p, "lease"); b != nil {
		t.fail(b.Delete([]byte(id)))
	}
}

func (t *boltTxn) marker() string {
	if t.err != nil || t.b == nil {
		return ""
	}
	return string(t.b.Get([]byte("opened")))
}

func (t *boltTxn) setMarker(p string) {
	if t.err == nil && !t.readOnly {
		t.fail(t.b.Put([]byte("opened"), []byte(p)))
	}
}
