package service

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"

	"github.com/linkgate/linkgate/service/filter"
)

// Bounds of what a caller may send. Each is checked before a request is
// parsed further, so an oversized input costs a comparison, not a parse.
const (
	// MaxSelectFields bounds the names in select (after splitting on
	// commas). No dataset has this many fields, so a longer list is a
	// mistake or an attack, never a real request.
	MaxSelectFields = 100
	// MaxTargetBytes bounds the target: a URL or domain.
	MaxTargetBytes = 2048
	// MaxOrderByBytes bounds order_by, a short list of field names.
	MaxOrderByBytes = 1024
	// DefaultMaxRecvMsgBytes bounds a gRPC request message. Requests are a
	// few parameters; 64 KiB leaves room for the longest filter and token.
	DefaultMaxRecvMsgBytes = 64 << 10
	// DefaultMaxStreamsPerTenant bounds a tenant's concurrent streams.
	DefaultMaxStreamsPerTenant = 8
)

// LimitsConfig bounds what callers may hold open and send.
type LimitsConfig struct {
	// MaxStreamsPerTenant bounds the Stream RPCs a tenant runs at once:
	// each holds up to ~3 upstream pages in memory and a share of the
	// upstream's rate limit. 0 means DefaultMaxStreamsPerTenant.
	MaxStreamsPerTenant int
	// MaxRecvMsgBytes bounds a request message; 0 means
	// DefaultMaxRecvMsgBytes.
	MaxRecvMsgBytes int
	// Keepalive overrides DefaultKeepalive when set.
	Keepalive *keepalive.ServerParameters
}

// DefaultKeepalive closes idle connections, recycles old ones so that load
// spreads over new replicas (a stream cut by the age limit resumes with its
// token), and detects dead peers.
var DefaultKeepalive = keepalive.ServerParameters{
	MaxConnectionIdle:     15 * time.Minute,
	MaxConnectionAge:      time.Hour,
	MaxConnectionAgeGrace: 5 * time.Minute,
	Time:                  time.Minute,
	Timeout:               20 * time.Second,
}

// keepaliveEnforcement refuses clients pinging more often than every 20 s:
// a ping flood costs the server without serving anyone.
var keepaliveEnforcement = keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}

// limitOptions are the server options that bound connections and messages.
func limitOptions(cfg LimitsConfig) []grpc.ServerOption {
	size := cfg.MaxRecvMsgBytes
	if size <= 0 {
		size = DefaultMaxRecvMsgBytes
	}
	ka := DefaultKeepalive
	if cfg.Keepalive != nil {
		ka = *cfg.Keepalive
	}
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(size),
		grpc.KeepaliveParams(ka),
		grpc.KeepaliveEnforcementPolicy(keepaliveEnforcement),
	}
}

// boundedRequest is what list and stream requests have; checkBounds reads
// only what a message has.
type boundedRequest interface {
	GetTarget() string
	GetSelect() []string
	GetFilter() string
	GetOrderBy() string
	GetPageToken() string
}

// checkBounds rejects a request whose inputs exceed the bounds, naming the
// field. Filter depth is checked by the filter parser, which alone knows
// it; the filter's length is checked here too so the message is the same
// over every path.
func checkBounds(req any) error {
	r, ok := req.(boundedRequest)
	if !ok {
		return nil
	}
	if n := len(r.GetTarget()); n > MaxTargetBytes {
		return toStatus(badField("target", "is %d bytes long; the limit is %d", n, MaxTargetBytes), "")
	}
	if n := selectCount(r.GetSelect()); n > MaxSelectFields {
		return toStatus(badField("select", "names %d fields; the limit is %d", n, MaxSelectFields), "")
	}
	if n := len(r.GetFilter()); n > filter.MaxLength {
		return toStatus(badField("filter", "is %d bytes long; the limit is %d", n, filter.MaxLength), "")
	}
	if n := len(r.GetOrderBy()); n > MaxOrderByBytes {
		return toStatus(badField("order_by", "is %d bytes long; the limit is %d", n, MaxOrderByBytes), "")
	}
	if n := len(r.GetPageToken()); n > MaxTokenBytes {
		return toStatus(badField("page_token", "is %d bytes long; the limit is %d", n, MaxTokenBytes), "")
	}
	return nil
}

// selectCount counts the names in select as the service will split them.
func selectCount(sel []string) int {
	n := 0
	for _, item := range sel {
		n += strings.Count(item, ",") + 1
	}
	return n
}

func boundsUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := checkBounds(req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// streamLimiter counts each tenant's open streams.
type streamLimiter struct {
	max  int
	mu   sync.Mutex
	open map[string]int
}

func newStreamLimiter(max int) *streamLimiter {
	if max <= 0 {
		max = DefaultMaxStreamsPerTenant
	}
	return &streamLimiter{max: max, open: map[string]int{}}
}

// acquire takes one of the tenant's streams; release gives it back.
func (l *streamLimiter) acquire(tenant string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[tenant] >= l.max {
		return nil, withDetails(codes.ResourceExhausted,
			fmt.Sprintf("too many streams: tenant %q already has %d streams open, the limit; wait for one to finish", tenant, l.max),
			errorInfo(ReasonTooManyStreams, map[string]string{"limit": fmt.Sprint(l.max)}))
	}
	l.open[tenant]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.open[tenant]--; l.open[tenant] <= 0 {
				delete(l.open, tenant)
			}
		})
	}, nil
}

// limitStream runs after authentication: it bounds the tenant's open
// streams, then checks the request's inputs when the first message comes.
func limitStream(l *streamLimiter) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !info.IsServerStream || info.IsClientStream || public(info.FullMethod) {
			return handler(srv, ss)
		}
		c, _ := CallerFrom(ss.Context())
		release, err := l.acquire(c.Tenant)
		if err != nil {
			return err
		}
		defer release()
		return handler(srv, &boundedStream{ServerStream: ss})
	}
}

// boundedStream checks the bounds of every message received.
type boundedStream struct{ grpc.ServerStream }

func (s *boundedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return checkBounds(m)
}
