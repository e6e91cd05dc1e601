package quota

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/redistest"
)

// dropProxy forwards TCP to a Redis server. Armed, it swallows the next
// reply the server sends and closes that client connection, as a network
// that loses a reply after the server executed the command: the client sees
// EOF and go-redis sends the command again on a new connection.
type dropProxy struct {
	ln      net.Listener
	target  string
	armed   atomic.Bool
	dropped atomic.Int32
	wg      sync.WaitGroup
}

func newDropProxy(t *testing.T, target string) *dropProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { _ = ln.Close(); p.wg.Wait() })
	return p
}

func (p *dropProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(s, c); _ = s.Close() }()
		go func() {
			defer p.wg.Done()
			defer c.Close()
			defer s.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				if err != nil {
					return
				}
				if p.armed.CompareAndSwap(true, false) {
					p.dropped.Add(1)
					return // the reply is lost with the connection
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
	}
}

// TestRedisReserveRetriedAfterLostReply reproduces a lost reply: Redis ran
// the reserve script, the reply never reached the client, go-redis retried
// it. The reservation must count once, and settling it must leave nothing
// reserved for the rest of the period.
func TestRedisReserveRetriedAfterLostReply(t *testing.T) {
	proxy := newDropProxy(t, redistest.Addr(t))
	c := redis.NewClient(&redis.Options{Addr: proxy.ln.Addr().String(), MaxRetries: 3,
		MinRetryBackoff: time.Millisecond, MaxRetryBackoff: 5 * time.Millisecond, PoolSize: 1})
	t.Cleanup(func() { _ = c.Close() })
	clk := clock.NewFake(t0)
	l := newLedger(t, NewRedisStore(c), clk, func(cfg *Config) { cfg.PoolLimit = 10_000 })
	ctx := context.Background()
	// Load the scripts and warm the one pooled connection, so that the next
	// reply on it is the reserve script's.
	mustSettle(t, l, mustReserve(t, l, "a", "x", 1), 1)

	proxy.armed.Store(true)
	r, err := l.Reserve(ctx, "a", "x", 1000)
	if err != nil {
		t.Fatalf("Reserve through a lost reply: %v", err)
	}
	if proxy.dropped.Load() != 1 {
		t.Fatalf("the proxy dropped %d replies, want 1: the test did not lose the reply", proxy.dropped.Load())
	}
	checkPool(t, l, 1, 1000)
	if r.Remaining != 10_000-1-1000 {
		t.Fatalf("Remaining = %d, want %d", r.Remaining, 10_000-1-1000)
	}
	mustSettle(t, l, r, 700)
	checkPool(t, l, 701, 0)
}
