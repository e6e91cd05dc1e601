package quota

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/redistest"
)

func TestRedisUnreachableFailsClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there any more
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	led := newLedger(t, NewRedisStore(c), newClock(t0), nil)
	ctx := context.Background()
	_, err = led.Reserve(ctx, "a", "x", 1)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "cannot be reached") {
		t.Fatalf("Reserve = %v, want ErrUnavailable", err)
	}
	if err := led.Ping(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping = %v", err)
	}
}

// TestRedisKeys checks the key layout: one hash slot per budget, the period
// in the key, and a TTL that ends a retention time after the period.
func TestRedisKeys(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	clk := newClock(t0)
	l := newLedger(t, NewRedisStore(c, WithRedisRetention(24*time.Hour)), clk, nil)
	mustSettle(t, l, mustReserve(t, l, "a", "x", 10), 10)
	keys, err := c.Keys(ctx, "linkgate:quota:{"+l.cfg.Budget+"}:*").Result()
	if err != nil || len(keys) < 4 {
		t.Fatalf("keys %v %v", keys, err)
	}
	p := PeriodAt(clk.Now(), 15)
	wantTTL := p.End.Add(24 * time.Hour).Sub(clk.Now())
	for _, k := range keys {
		// Redis Cluster hashes only the text between the first '{' and the
		// next '}': the budget, for every key of it.
		_, rest, _ := strings.Cut(k, "{")
		if tag, _, _ := strings.Cut(rest, "}"); tag != l.cfg.Budget {
			t.Fatalf("key %s hashes on %q, not the budget", k, tag)
		}
		if strings.HasSuffix(k, ":limits") {
			continue
		}
		if !strings.Contains(k, ":p:"+p.Key+":") {
			t.Fatalf("key %s lacks the period %s", k, p.Key)
		}
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 || ttl > wantTTL || ttl < wantTTL-time.Minute {
			t.Fatalf("key %s TTL %v, want about %v", k, ttl, wantTTL)
		}
	}
}
