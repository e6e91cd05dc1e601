package main

import (
	"container/list"
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/linkgate/linkgate/service"
)

// What a peer may hold before it shows a key: a connection on probation for
// the header timeout, and no stream but a health check. A peer with a key
// holds what its tenant's limits allow.

// connBytes is what one connection may cost the replica: the transport's
// read and write buffers, its goroutines and TLS state.
const connBytes = 64 << 10

// maxPublicStreams bounds the health checks (the only calls without a key)
// in flight on the gRPC listener: orchestrators and balancers send a few at
// a time, and each waits for its request message for as long as the peer
// pleases.
const maxPublicStreams = 256

// maxConnections is the bound on each listener's connections: together
// the two listeners' connections may hold a quarter of the memory limit.
func (c securityConfig) maxConnections() int {
	if c.MaxConnections > 0 {
		return c.MaxConnections
	}
	limit := c.memoryLimit()
	if limit <= 0 {
		limit = service.DefaultMemoryLimit
	}
	return int(max(64, limit/8/connBytes))
}

// connLimit bounds the connections of a listener. A new connection is on
// probation until it sends a request with valid credentials; one still on
// probation after the header timeout is closed, and when the listener is
// full the oldest on probation makes room for the new one, so that peers
// without a key can neither hold connections nor keep tenants from
// connecting. Only when every connection has shown a key does Accept wait
// for one to close.
type connLimit struct {
	net.Listener
	name      string
	max       int
	probation time.Duration
	log       *slog.Logger
	metrics   *connMetrics // nil: none

	mu       sync.Mutex
	room     *sync.Cond // signalled when a connection closes
	closed   bool
	conns    map[string]*limitedConn // by remote address
	unproven list.List               // of *limitedConn, oldest first
	// Connections closed on probation since the last log line: to make
	// room, and at the end of their probation.
	evicted, expired int
	lastLog          time.Time
}

func newConnLimit(lis net.Listener, name string, max int, probation time.Duration, log *slog.Logger, m *connMetrics) *connLimit {
	l := &connLimit{Listener: lis, name: name, max: max, probation: probation, log: log, metrics: m,
		conns: map[string]*limitedConn{}}
	l.room = sync.NewCond(&l.mu)
	m.watch(l)
	return l
}

// counts are the connections the listener holds and those on probation.
func (l *connLimit) counts() (open, onProbation int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns), l.unproven.Len()
}

// Accept returns the next connection once the listener has room for it or
// a connection on probation to close for it. While it waits, the one
// connection it holds is all the listener takes from the backlog.
func (l *connLimit) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	for waited := false; len(l.conns) >= l.max && l.unproven.Len() == 0 && !l.closed; waited = true {
		l.noteFull()
		if !waited {
			l.metrics.waited(l.name)
		}
		l.room.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		c.Close()
		return nil, net.ErrClosed
	}
	var evict *limitedConn
	if len(l.conns) >= l.max {
		evict = l.unproven.Front().Value.(*limitedConn)
		l.endProbation(evict)
		l.evicted++
		l.metrics.closedOnProbation(l.name, "room")
		l.noteFull()
	}
	lc := &limitedConn{Conn: c, l: l, addr: c.RemoteAddr().String()}
	lc.probation = l.unproven.PushBack(lc)
	lc.timer = time.AfterFunc(l.probation, lc.expire)
	l.conns[lc.addr] = lc
	l.mu.Unlock()
	if evict != nil {
		evict.Close()
	}
	return lc, nil
}

// noteFull logs, at most once a minute, that the listener is full and
// what it did about it. l.mu is held.
func (l *connLimit) noteFull() {
	if time.Since(l.lastLog) < time.Minute {
		return
	}
	l.lastLog = time.Now()
	l.log.Warn("connection limit reached: connections without a key make room, others wait",
		"listener", l.name, "max_connections", l.max, "open", len(l.conns), "on_probation", l.unproven.Len(),
		"closed_to_make_room", l.evicted, "closed_at_probation_end", l.expired)
	l.evicted, l.expired = 0, 0
}

// prove ends the probation of the connection from addr: it has sent a
// request with valid credentials.
func (l *connLimit) prove(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.conns[addr]; ok {
		l.endProbation(c)
	}
}

func (l *connLimit) endProbation(c *limitedConn) {
	if c.probation != nil {
		l.unproven.Remove(c.probation)
		c.probation = nil
		c.timer.Stop()
	}
}

func (l *connLimit) Close() error {
	l.mu.Lock()
	l.closed = true
	l.room.Broadcast()
	l.mu.Unlock()
	return l.Listener.Close()
}

// limitedConn is a connection counted by its listener's connLimit.
type limitedConn struct {
	net.Conn
	l         *connLimit
	addr      string
	probation *list.Element // nil once proven
	timer     *time.Timer
	once      sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		l := c.l
		l.mu.Lock()
		l.endProbation(c)
		if l.conns[c.addr] == c {
			delete(l.conns, c.addr)
		}
		l.room.Signal()
		l.mu.Unlock()
	})
	return c.Conn.Close()
}

// expire closes the connection if it is still on probation.
func (c *limitedConn) expire() {
	l := c.l
	l.mu.Lock()
	onProbation := c.probation != nil
	if onProbation {
		l.expired++
		l.metrics.closedOnProbation(l.name, "probation_ended")
	}
	l.mu.Unlock()
	if onProbation {
		c.Close()
	}
}

// publicOptions are the options of the gRPC server that faces peers:
// keys are checked when a call's headers arrive (a connection that shows
// one leaves its probation), health checks without a key are bounded, and
// so are a connection's streams and the time its handshakes may take.
func publicOptions(c securityConfig, auth *service.Authenticator, lim *connLimit) []grpc.ServerOption {
	public := make(chan struct{}, maxPublicStreams)
	errBusy := status.Error(codes.ResourceExhausted, "too many health checks in flight on this replica; retry shortly")
	admit := func(ctx context.Context, isPublic bool) error {
		if isPublic {
			select {
			case public <- struct{}{}:
				// The tap's context is the stream's: it ends with the stream.
				context.AfterFunc(ctx, func() { <-public })
				return nil
			default:
				return errBusy
			}
		}
		if p, ok := peer.FromContext(ctx); ok {
			lim.prove(p.Addr.String())
		}
		return nil
	}
	return []grpc.ServerOption{
		grpc.InTapHandle(service.TapCredentials(auth, admit)),
		grpc.MaxConcurrentStreams(uint32(c.MaxStreamsPerConnection)),
		grpc.ConnectionTimeout(c.HeaderTimeout),
	}
}
