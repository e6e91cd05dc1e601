package quota

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// uniqueBudget keeps tests that share one Redis server apart.
func uniqueBudget() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

// storeKind opens fresh stores of one kind; shared opens a second handle on
// the same state where the kind allows it (a replica, or a restart).
type storeKind struct {
	name string
	open func(t testing.TB) Store
}

func storeKinds() []storeKind {
	return []storeKind{
		{"memory", func(testing.TB) Store { return NewMemoryStore() }},
		{"bolt", func(t testing.TB) Store {
			s, err := OpenBoltStore(filepath.Join(t.TempDir(), "ledger.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{"redis", func(t testing.TB) Store { return NewRedisStore(redistest.Client(t)) }},
	}
}

var t0 = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)

// redisStoreAt is a Redis store whose clock is now, in place of the
// server's TIME: a deployment at a moment of the test's choosing.
func redisStoreAt(c redis.UniversalClient, now clock.Clock) *RedisStore {
	s := NewRedisStore(c)
	s.clock = now
	return s
}

// newLedger returns a ledger of a new budget whose current period is
// opened, as the first reconciliation of a first start opens it.
func newLedger(t testing.TB, s Store, clk *clock.Fake, mod func(*Config)) *Ledger {
	t.Helper()
	l := newUnopened(t, s, clk, mod)
	openPeriod(t, l)
	return l
}

// newUnopened is newLedger before the first reconciliation: its period is
// unknown.
func newUnopened(t testing.TB, s Store, clk *clock.Fake, mod func(*Config)) *Ledger {
	t.Helper()
	if rs, ok := s.(*RedisStore); ok && rs.clock == nil {
		// The test's moment is the whole deployment's.
		rs.clock = clk
	}
	cfg := Config{Budget: uniqueBudget(), PoolLimit: 1000, ResetDay: 15, Lease: time.Minute, Clock: clk}
	if mod != nil {
		mod(&cfg)
	}
	l, err := New(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// openPeriod rebuilds l's current period from an upstream that used
// nothing.
func openPeriod(t testing.TB, l *Ledger) {
	t.Helper()
	if _, err := l.Reconcile(context.Background(), fixedUpstream{}); err != nil {
		t.Fatal(err)
	}
}

func mustReserve(t testing.TB, l *Ledger, tenant, label string, units int64) Reservation {
	t.Helper()
	r, err := l.Reserve(context.Background(), tenant, label, units)
	if err != nil {
		t.Fatalf("Reserve(%s, %d): %v", tenant, units, err)
	}
	return r
}

func mustSettle(t testing.TB, l *Ledger, r Reservation, actual int64) {
	t.Helper()
	if err := settle(l, context.Background(), r, actual); err != nil {
		t.Fatalf("Settle(%d): %v", actual, err)
	}
}

func mustReport(t testing.TB, l *Ledger) Report {
	t.Helper()
	rep, err := l.AllUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func checkPool(t testing.TB, l *Ledger, used, reserved int64) {
	t.Helper()
	rep := mustReport(t, l)
	if rep.Pool.Used != used || rep.Pool.Reserved != reserved {
		t.Fatalf("pool used/reserved = %d/%d, want %d/%d", rep.Pool.Used, rep.Pool.Reserved, used, reserved)
	}
}

// emptyLike returns an empty store of the same kind as s: s as it comes
// back after losing its data.
func emptyLike(t testing.TB, s Store) Store {
	t.Helper()
	switch s := s.(type) {
	case *MemoryStore:
		return NewMemoryStore()
	case *BoltStore:
		b, err := OpenBoltStore(filepath.Join(t.TempDir(), "ledger.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	case *RedisStore:
		if err := s.c.FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Fatalf("no empty store like %T", s)
	return nil
}

// settle finishes r with actual units spent.
func settle(l *Ledger, ctx context.Context, r Reservation, actual int64) error {
	_, err := l.Finish(ctx, r, Outcome{Actual: actual})
	return err
}

// release finishes r unspent.
func release(l *Ledger, ctx context.Context, r Reservation) error {
	_, err := l.Finish(ctx, r, Outcome{Release: true})
	return err
}
