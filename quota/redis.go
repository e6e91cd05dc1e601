package quota

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/clock"
)

// RedisStore keeps the ledger in Redis (7 or later), shared by every
// replica. Each operation is one Lua function (FCALL, redislib.go), so the
// check and the reservation are one atomic step on the server. All keys of
// a budget carry the hash tag {budget}, so they live in one slot and the
// functions work on Redis Cluster; a period's hash carries the period and
// expires a retention time after it ends.
type RedisStore struct {
	c      redis.UniversalClient
	prefix string
	retain time.Duration
	// step holds the keys of the period the last Reserve or Finish used,
	// which is the period of nearly every step.
	step atomic.Pointer[stepKeys]
	// server is what the server said of itself at the last Ping; refused
	// the error an evicting server gets (redisserver.go).
	server  atomic.Pointer[RedisServer]
	refused atomic.Pointer[error]
	watch   func(RedisServer)
	// clock replaces the server's TIME where set: in tests, which put the
	// whole deployment at a moment of their choosing.
	clock clock.Clock
}

type stepKeys struct {
	budget, period string
	keys           []string
}

// RedisOption configures NewRedisStore.
type RedisOption func(*RedisStore)

// WithRedisKeyPrefix sets the prefix of every key (default "linkgate:quota").
func WithRedisKeyPrefix(p string) RedisOption { return func(s *RedisStore) { s.prefix = p } }

// WithRedisRetention sets how long a period's keys outlive the period
// (default 40 days, so last period's report can still be read and late
// settlements still find their reservation).
func WithRedisRetention(d time.Duration) RedisOption { return func(s *RedisStore) { s.retain = d } }

// WithRedisWatch has fn told what the server says of itself (persistence,
// eviction policy, run id) at the first Ping and whenever it changes: a
// restart or a failover shows as another run id.
func WithRedisWatch(fn func(RedisServer)) RedisOption { return func(s *RedisStore) { s.watch = fn } }

// NewRedisStore returns a store over c. Closing the store does not close c.
func NewRedisStore(c redis.UniversalClient, opts ...RedisOption) *RedisStore {
	s := &RedisStore{c: c, prefix: "linkgate:quota", retain: 40 * 24 * time.Hour}
	for _, o := range opts {
		o(s)
	}
	return s
}

// timeScript reads the clock of the server holding a budget's keys: on
// a cluster, that of the node its slot lives on.
var timeScript = redis.NewScript("return redis.call('TIME')")

// Time is the store's clock, which the ledgers of every replica read
// (storeClock): the Redis server's TIME.
func (s *RedisStore) Time(ctx context.Context, budget string) (time.Time, error) {
	if s.clock != nil {
		return s.clock.Now(), nil
	}
	v, err := timeScript.Run(ctx, s.c, []string{s.base(budget) + ":limits"}).Int64Slice()
	if err == nil && len(v) != 2 {
		err = fmt.Errorf("unexpected TIME reply %v", v)
	}
	if err != nil {
		return time.Time{}, s.wrap(ctx, err)
	}
	return time.Unix(v[0], v[1]*1000).UTC(), nil
}

// Close implements Store; the client belongs to the caller.
func (s *RedisStore) Close() error { return nil }

// Ping implements Store. It reads what the server says of itself: an
// evicting server fails it with ErrEvicting, and every Reserve after it
// until a Ping finds the policy changed.
func (s *RedisStore) Ping(ctx context.Context) error {
	return s.checkServer(ctx)
}

// wrap marks as ErrUnavailable every failure but a Redis reply that says
// the request itself is wrong (a script bug, a wrong type).
func (s *RedisStore) wrap(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("quota: redis: %w", ctx.Err())
	}
	var re redis.Error
	if errors.As(err, &re) && !errors.Is(err, redis.ErrClosed) && !notNow(err, re) {
		return fmt.Errorf("quota: redis: %w", err)
	}
	return fmt.Errorf("%w: redis: %v", ErrUnavailable, err)
}

// notNow reports a reply of a server that cannot take the request for now,
// whatever the request: loading its data, a replica (a client still on a
// demoted master), cut from its master or short of the replicas
// min-replicas-to-write asks, a cluster without the slot or moving it, out
// of memory, failing to persist (stop-writes-on-bgsave-error), busy in a
// script. The operator's to fix, the caller's to retry.
func notNow(err error, re redis.Error) bool {
	if redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsMasterDownError(err) ||
		redis.IsNoReplicasError(err) || redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsOOMError(err) {
		return true
	}
	msg := re.Error()
	return strings.HasPrefix(msg, "MISCONF ") || strings.HasPrefix(msg, "BUSY ")
}

func (s *RedisStore) base(budget string) string { return s.prefix + ":{" + budget + "}" }

// period returns the key of a period's hash (lua/common.lua).
func (s *RedisStore) period(budget string, p Period) string {
	return s.base(budget) + ":p:" + p.Key + ":pool"
}

// keys returns the budget's limits, then the hash of each period, in the
// order the scripts expect.
func (s *RedisStore) keys(budget string, periods ...Period) []string {
	k := make([]string, 1, 3)
	k[0] = s.base(budget) + ":limits"
	for _, p := range periods {
		k = append(k, s.period(budget, p))
	}
	return k
}

// stepKeys returns the keys of a Reserve or Finish in period p: the budget's
// limits and the period's hash.
func (s *RedisStore) stepKeys(budget string, p Period) []string {
	if k := s.step.Load(); k != nil && k.budget == budget && k.period == p.Key {
		return k.keys
	}
	k := &stepKeys{budget: budget, period: p.Key, keys: s.keys(budget, p)}
	s.step.Store(k)
	return k.keys
}

// keepFinished is how long a finished reservation's record stays (or until
// its lease would have run out, if that is later): long enough for a
// retried or late Finish to find it and change nothing, short enough that
// records do not pile up for the whole period.
const keepFinished = time.Hour

const keepFinishedMS = int64(keepFinished / time.Millisecond)

// ttl is computed from the ledger's clock, which is the store's (Time)
// read through the replica's, so that a test's clock decides expiry too.
func (s *RedisStore) ttl(p Period, now time.Time) int64 {
	return max(p.End.Add(s.retain).Sub(now), time.Hour).Milliseconds()
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// record encodes a reservation's record as the functions store it
// (lua/common.lua): state, units, time (unix ms), actual, label, tenant.
// The functions store and compare what they are given, with no work in Lua.
func record(state string, units, at, actual int64, label, tenant string) string {
	return state + "\x1f" + strconv.FormatInt(units, 10) + "\x1f" + strconv.FormatInt(at, 10) + "\x1f" +
		strconv.FormatInt(actual, 10) + "\x1f" + label + "\x1f" + tenant
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Reserve implements Store.
func (s *RedisStore) Reserve(ctx context.Context, op ReserveOp) (ReserveResult, error) {
	if err := s.refusal(); err != nil {
		return ReserveResult{}, err
	}
	v, err := s.needsSweep(ctx, op.Budget, op.Cur, op.Now, func() (any, error) {
		return ledgerLibrary.call(ctx, s.c, "reserve", s.stepKeys(op.Budget, op.Cur), ms(op.Now), op.ID, op.Tenant,
			op.Label, op.Units, ms(op.Expires), op.PoolLimit, op.TenantLimit,
			record(stateOpen, op.Units, ms(op.Expires), 0, op.Label, op.Tenant)).Result()
	})
	if err != nil {
		return ReserveResult{}, s.wrap(ctx, err)
	}
	if left, ok := v.(int64); ok {
		return ReserveResult{Granted: true, Remaining: left}, nil
	}
	if v == "unknown" {
		return ReserveResult{Unknown: true}, nil
	}
	d, _ := v.([]any)
	if len(d) != 5 {
		return ReserveResult{}, fmt.Errorf("quota: redis: unexpected reserve reply %v", v)
	}
	r := ReserveResult{Scope: ScopePool, Limit: asInt(d[1]), Remaining: asInt(d[2]), Reserved: asInt(d[3]), Opened: asInt(d[4])}
	if d[0] == "tenant" {
		r.Scope = ScopeTenant
	}
	return r, nil
}

// needsSweep runs op, and when it replies that period p needs a sweep
// first (a lease may have run out, a finished record may be due to go, or
// the period's hash was never written), sweeps and runs it once more. The
// sweep takes the same now as op, which then finds nothing left to sweep.
func (s *RedisStore) needsSweep(ctx context.Context, budget string, p Period, now time.Time, op func() (any, error)) (any, error) {
	v, err := op()
	if err != nil || v != "sweep" {
		return v, err
	}
	prev := p.Previous()
	err = ledgerLibrary.call(ctx, s.c, "sweep", []string{s.period(budget, p), s.period(budget, prev)},
		ms(now), s.ttl(p, now), s.ttl(prev, now), keepFinishedMS).Err()
	if err != nil {
		return nil, err
	}
	if v, err = op(); v == "sweep" {
		return nil, fmt.Errorf("quota: redis: period %s still needs a sweep after one", p.Key)
	}
	return v, err
}

func asInt(v any) int64 {
	i, _ := v.(int64)
	return i
}

// Finish implements Store.
func (s *RedisStore) Finish(ctx context.Context, op FinishOp) (FinishResult, error) {
	how := "settle"
	switch {
	case op.Release:
		how = "release"
	case op.Provisional:
		how = "provisional"
	}
	r, drop, state := op.Res, ms(later(op.Now.Add(keepFinished), op.Res.Expires)), stateSettled
	if op.Release {
		state = stateReleased
	}
	v, err := s.needsSweep(ctx, op.Budget, op.Period, op.Now, func() (any, error) {
		return ledgerLibrary.call(ctx, s.c, "finish", s.stepKeys(op.Budget, op.Period), ms(op.Now), r.ID, op.Actual,
			how, op.PoolLimit, op.TenantLimit, r.Tenant, r.Label, r.Units, ms(r.Expires), drop,
			record(stateOpen, r.Units, ms(r.Expires), 0, r.Label, r.Tenant),
			record(state, r.Units, drop, op.Actual, r.Label, r.Tenant)).Result()
	})
	if err != nil {
		return FinishResult{}, s.wrap(ctx, err)
	}
	d, _ := v.([]any)
	if len(d) != 3 {
		return FinishResult{}, fmt.Errorf("quota: redis: unexpected finish reply %v", v)
	}
	return FinishResult{Remaining: asInt(d[0]), TenantUsed: asInt(d[1]), Opened: asInt(d[2])}, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Snapshot implements Store.
func (s *RedisStore) Snapshot(ctx context.Context, op SnapshotOp) (Snapshot, error) {
	v, err := ledgerLibrary.call(ctx, s.c, "snapshot", s.keys(op.Budget, op.Cur, op.Prev),
		ms(op.Now), s.ttl(op.Cur, op.Now), s.ttl(op.Prev, op.Now), keepFinishedMS).Slice()
	if err != nil {
		return Snapshot{}, s.wrap(ctx, err)
	}
	if len(v) != 2 {
		return Snapshot{}, fmt.Errorf("quota: redis: unexpected snapshot reply %v", v)
	}
	period, err := flatMap(v[0])
	if err != nil {
		return Snapshot{}, err
	}
	snap := Snapshot{Pool: map[string]int64{}, TenantUsed: map[string]int64{},
		TenantReserved: map[string]int64{}, LabelUsed: map[string]int64{}}
	if snap.Overrides, err = flatMap(v[1]); err != nil {
		return Snapshot{}, err
	}
	if limits, _ := v[1].([]any); len(limits) > 0 {
		for i := 0; i < len(limits); i += 2 {
			snap.OverridesKnown = snap.OverridesKnown || limits[i] == ""
		}
	}
	// The period's hash holds the pool's counters by name and the others
	// after a tag (lua/common.lua); provisional charges stay with the pool.
	for f, n := range period {
		tag, name, tagged := strings.Cut(f, "\x1e")
		switch {
		case tagged && tag == "u":
			snap.TenantUsed[name] = n
		case tagged && tag == "r":
			snap.TenantReserved[name] = n
		case tagged && tag == "l":
			snap.LabelUsed[name] = n
		case tagged && tag == "lim":
			// A copy of the limits, which are reported from their own hash.
		default:
			snap.Pool[f] = n
		}
	}
	return snap, nil
}

// flatMap decodes an HGETALL reply returned from a script (a flat array),
// without the empty field (the budget's marker in its limits, lua/common.lua).
func flatMap(v any) (map[string]int64, error) {
	a, _ := v.([]any)
	m := make(map[string]int64, len(a)/2)
	for i := 0; i+1 < len(a); i += 2 {
		k, _ := a[i].(string)
		if k == "" {
			continue
		}
		sv, _ := a[i+1].(string)
		n, err := strconv.ParseInt(sv, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("quota: redis: field %q: %w", k, err)
		}
		m[k] = n
	}
	return m, nil
}

// SetTenantLimit implements Store. Period hashes keep a copy of the tenant's
// limit for Reserve and Finish to read with the rest; the copies in the
// periods around op.Cur (whose hashes a skewed clock may already or still
// use) are dropped with the change, in one step, and filled again on use.
func (s *RedisStore) SetTenantLimit(ctx context.Context, op LimitOp) error {
	limit := ""
	if op.Limit != nil {
		limit = strconv.FormatInt(*op.Limit, 10)
	}
	keys := s.keys(op.Budget, op.Cur.Previous(), op.Cur, op.Cur.Next())
	return s.wrap(ctx, ledgerLibrary.call(ctx, s.c, "limit", keys, op.Tenant, limit).Err())
}

// Reconcile implements Store.
func (s *RedisStore) Reconcile(ctx context.Context, op ReconcileOp) (ReconcileResult, error) {
	args := []any{ms(op.Now), s.ttl(op.Cur, op.Now), s.ttl(op.Prev, op.Now), keepFinishedMS, op.Upstream,
		flag(op.Adopt), op.Cur.Key, flag(op.Seed.Lost), -1}
	if op.Seed.Overrides != nil {
		args[len(args)-1] = len(op.Seed.Overrides)
		for _, t := range sortedKeys(op.Seed.Overrides) {
			args = append(args, t, op.Seed.Overrides[t])
		}
	}
	if op.Seed.Period == op.Cur.Key {
		for _, t := range sortedKeys(op.Seed.TenantUsed) {
			args = append(args, t, op.Seed.TenantUsed[t])
		}
	}
	v, err := ledgerLibrary.call(ctx, s.c, "reconcile", s.keys(op.Budget, op.Cur, op.Prev), args...).Slice()
	if err != nil {
		return ReconcileResult{}, s.wrap(ctx, err)
	}
	if len(v) != 5 {
		return ReconcileResult{}, fmt.Errorf("quota: redis: unexpected reconcile reply %v", v)
	}
	return ReconcileResult{LedgerUsed: asInt(v[0]), Reserved: asInt(v[1]), Adopted: asInt(v[2]),
		Corrected: asInt(v[3]), Rebuilt: asInt(v[4]) == 1}, nil
}
