package scheduler

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/clock"
)

// Limiter is the key's rate: one slot per Interval, shared by everything
// that calls the key. It is a GCRA without burst: slots are evenly spaced,
// so no minute ever sees more than the rate, which is what an upstream
// counting a sliding minute needs.
type Limiter interface {
	// Take takes a slot if one is free now (0), or says how long until the
	// next one is expected; a wait takes nothing. urgent says that the slot
	// is for interactive work (or a retry of it): a limiter shared by
	// replicas lets such a taker claim the next slot, or the first after a
	// pause, ahead of other replicas' bulk work.
	Take(ctx context.Context, urgent bool) (wait time.Duration, err error)
	// Pause stops every Take for d (an upstream 429 with Retry-After).
	Pause(ctx context.Context, d time.Duration) error
	// Interval is the time between slots.
	Interval() time.Duration
}

// IntervalOf is the time between slots of a rate in requests per minute.
func IntervalOf(rpm float64) time.Duration { return time.Duration(float64(time.Minute) / rpm) }

// Unlimited is a Limiter that never waits: for tests and tools that talk to
// a simulator, never for a real key.
type Unlimited struct{}

// Take implements Limiter.
func (Unlimited) Take(context.Context, bool) (time.Duration, error) { return 0, nil }

// Pause implements Limiter; an unlimited key ignores the upstream's 429s.
func (Unlimited) Pause(context.Context, time.Duration) error { return nil }

// Interval implements Limiter.
func (Unlimited) Interval() time.Duration { return 0 }

// LocalLimiter is the key's rate in one process, for a single replica.
type LocalLimiter struct {
	mu       sync.Mutex
	interval time.Duration
	tat      time.Time // theoretical arrival time of the next slot
	paused   time.Time
	clock    clock.Clock
}

// NewLocalLimiter returns a limiter of rpm requests per minute; a nil
// clock means clock.System.
func NewLocalLimiter(rpm float64, c clock.Clock) *LocalLimiter {
	return &LocalLimiter{interval: IntervalOf(rpm), clock: clock.Or(c)}
}

// Take implements Limiter.
func (l *LocalLimiter) Take(context.Context, bool) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	if now.Before(l.paused) {
		return l.paused.Sub(now), nil
	}
	if now.Before(l.tat) {
		return l.tat.Sub(now), nil
	}
	l.tat = now.Add(l.interval)
	return 0, nil
}

// Pause implements Limiter.
func (l *LocalLimiter) Pause(_ context.Context, d time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until := l.clock.Now().Add(d); until.After(l.paused) {
		l.paused = until
	}
	return nil
}

// Interval implements Limiter.
func (l *LocalLimiter) Interval() time.Duration { return l.interval }

var (
	//go:embed lua/take.lua
	luaTake    string
	scriptTake = redis.NewScript(luaTake)
	//go:embed lua/pause.lua
	luaPause    string
	scriptPause = redis.NewScript(luaPause)
)

// RedisLimiter is the key's rate shared by every replica through Redis: one
// GCRA state and one pause for the key, updated by a Lua script on the
// server's clock, so that replicas with skewed clocks still space their
// requests on one timeline. A replica with interactive work waiting claims
// the next slot (after a pause, the first one after it); other replicas'
// bulk work leaves a claimed slot alone, so
// interactive work waits about one slot whichever replica it reached. A
// claim lapses half an interval after its slot, should its replica vanish.
type RedisLimiter struct {
	c        redis.UniversalClient
	keys     []string
	interval time.Duration
}

// NewRedisLimiter returns the limiter of rpm requests per minute for the
// key named name (a label, never the key itself), with its state under
// prefix in c.
func NewRedisLimiter(c redis.UniversalClient, prefix, name string, rpm float64) *RedisLimiter {
	base := prefix + ":{" + name + "}"
	return &RedisLimiter{c: c, keys: []string{base + ":tat", base + ":pause", base + ":claim"}, interval: IntervalOf(rpm)}
}

// Take implements Limiter.
func (l *RedisLimiter) Take(ctx context.Context, urgent bool) (time.Duration, error) {
	us, err := l.take(ctx, l.c, urgent).Int64()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrLimiterUnavailable, err)
	}
	return time.Duration(us) * time.Microsecond, nil
}

// take runs the take script through c: the client, or a transaction
// that also notes the order of slots.
func (l *RedisLimiter) take(ctx context.Context, c redis.Scripter, urgent bool) *redis.Cmd {
	u := "0"
	if urgent {
		u = "1"
	}
	return scriptTake.Run(ctx, c, l.keys, strconv.FormatInt(l.interval.Microseconds(), 10), u)
}

// Pause implements Limiter.
func (l *RedisLimiter) Pause(ctx context.Context, d time.Duration) error {
	if err := scriptPause.Run(ctx, l.c, l.keys, strconv.FormatInt(d.Microseconds(), 10)).Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrLimiterUnavailable, err)
	}
	return nil
}

// Interval implements Limiter.
func (l *RedisLimiter) Interval() time.Duration { return l.interval }
