package quota

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// leaseStore is a store shared by replicas that grants a named lease to
// one holder at a time (Redis). A store of one process needs none: its
// one process holds every lease.
type leaseStore interface {
	HoldLease(ctx context.Context, budget, name, holder string, ttl time.Duration) (bool, error)
}

// HoldReconciler reports whether holder (a replica's own random id) is
// the one to reconcile the budget now: it takes the reconciler's lease,
// or renews it when it holds it already, for ttl. Replicas sharing a store
// thus reconcile one at a time, and when the holder stops renewing (it
// stopped or died) another takes over once ttl has passed. A holder
// renews at each of its runs, so ttl must exceed the time between them.
func (l *Ledger) HoldReconciler(ctx context.Context, holder string, ttl time.Duration) (bool, error) {
	if holder == "" || ttl < time.Millisecond {
		return false, errors.New("quota: a lease needs a holder and a ttl of at least 1ms")
	}
	ls, ok := l.store.(leaseStore)
	if !ok {
		return true, nil
	}
	return ls.HoldLease(ctx, l.cfg.Budget, "reconciler", holder, ttl)
}

// holdLease takes a lease free (SET NX PX) or renews it for its holder, on
// the server's clock. KEYS[1]: the lease; ARGV: holder, ttl (ms).
var holdLease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0`)

// HoldLease takes or renews the budget's lease name for holder (leaseStore).
func (s *RedisStore) HoldLease(ctx context.Context, budget, name, holder string, ttl time.Duration) (bool, error) {
	n, err := holdLease.Run(ctx, s.c, []string{s.base(budget) + ":lease:" + name}, holder, ttl.Milliseconds()).Int64()
	if err != nil {
		return false, s.wrap(ctx, err)
	}
	return n == 1, nil
}
