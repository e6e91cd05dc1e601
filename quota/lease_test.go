package quota

import (
	"context"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/redistest"
)

// TestReconcilerLease: of the replicas sharing a Redis ledger, one at a
// time holds the reconciler's lease; it renews it, and another takes it
// over once the holder stops renewing. A ledger of one process always
// holds it.
func TestReconcilerLease(t *testing.T) {
	ctx := context.Background()
	cfg := Config{Budget: uniqueBudget(), PoolLimit: 1000, ResetDay: 1, Lease: time.Minute}
	replica := func() *Ledger {
		l, err := New(NewRedisStore(redistest.Client(t)), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b, c := replica(), replica(), replica()
	hold := func(l *Ledger, holder string, ttl time.Duration) bool {
		t.Helper()
		ok, err := l.HoldReconciler(ctx, holder, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	const ttl = 300 * time.Millisecond
	if !hold(a, "a", ttl) || hold(b, "b", ttl) || hold(c, "c", ttl) {
		t.Fatal("want the first replica only to hold the lease")
	}
	for range 3 { // renewed past its first ttl: still a's alone
		time.Sleep(ttl / 2)
		if !hold(a, "a", ttl) || hold(b, "b", ttl) {
			t.Fatal("the holder lost its renewed lease")
		}
	}
	time.Sleep(ttl + 50*time.Millisecond) // a stops renewing
	if !hold(b, "b", ttl) || hold(a, "a", ttl) || hold(c, "c", ttl) {
		t.Fatal("after the holder stopped, want the next replica alone to hold the lease")
	}
	if _, err := a.HoldReconciler(ctx, "", ttl); err == nil {
		t.Fatal("a lease without a holder was accepted")
	}
	m, err := New(NewMemoryStore(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !hold(m, "x", ttl) || !hold(m, "y", ttl) {
		t.Fatal("a ledger of one process must always hold its reconciler's lease")
	}
}
