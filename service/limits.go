package service

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/paging/filter"
	"github.com/linkgate/linkgate/quota"
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

// StreamBytes is what one stream holds in memory at most: three upstream
// pages of 1000 rows in flight (one being fetched, one in the channel, one
// being sent) as compact records and encoded messages, no copy of their
// bodies. 1,000 concurrent unread streams peaked at 458 MiB of resident
// memory under GOMEMLIMIT=460MiB (BenchmarkManyStreamsPeakRSS with the
// bound lifted); twice that per stream leaves the runtime its headroom.
const StreamBytes = 512 << 10

// DefaultMemoryLimit is the memory a replica assumes it has when neither
// GOMEMLIMIT nor LINKGATE_MEMORY_LIMIT says.
const DefaultMemoryLimit = 1 << 30

// MaxStreamsFor is the bound on concurrent streams across all tenants of a
// replica with memoryLimit bytes: streams may hold half of it, the rest is
// for the runtime, the caches, the unary calls and the garbage collector's
// headroom.
func MaxStreamsFor(memoryLimit int64) int {
	if memoryLimit <= 0 {
		memoryLimit = DefaultMemoryLimit
	}
	return int(max(1, memoryLimit/2/StreamBytes))
}

// LimitsConfig bounds what callers may hold open and send.
type LimitsConfig struct {
	// MaxStreamsPerTenant bounds the Stream RPCs a tenant runs at once:
	// each holds up to ~3 upstream pages in memory and a share of the
	// upstream's rate limit. 0 means DefaultMaxStreamsPerTenant.
	MaxStreamsPerTenant int
	// MaxStreams bounds the Stream RPCs of all tenants together, so that
	// the replica stays inside its memory limit (MaxStreamsFor). 0 means
	// MaxStreamsFor(DefaultMemoryLimit).
	MaxStreams int
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

// recvLimit is the bound on a request message.
func recvLimit(cfg LimitsConfig) int {
	if cfg.MaxRecvMsgBytes <= 0 {
		return DefaultMaxRecvMsgBytes
	}
	return cfg.MaxRecvMsgBytes
}

// limitOptions are the server options that bound connections and messages.
func limitOptions(cfg LimitsConfig) []grpc.ServerOption {
	// The codec enforces recvLimit with an error naming the request
	// (decode.go); grpc-go's own bound, which answers RESOURCE_EXHAUSTED
	// before any linkgate code runs, stays as a backstop above it.
	size := max(4*recvLimit(cfg), 1<<20)
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

// More bounds, on the meaning of a value rather than its size.
const (
	// MaxTenantBytes bounds a tenant's name: a label in logs, metrics and
	// ledger keys, never a document.
	MaxTenantBytes = 128
	// MaxParamBytes bounds every other string parameter (dates, history,
	// select names, ...): none needs more than a few dozen bytes.
	MaxParamBytes = 256
	// MaxRows bounds rows (EstimateCost) and max_rows: a trillion rows is
	// far beyond any target's backlinks and any budget.
	MaxRows = 1_000_000_000_000
	// MaxUnits bounds max_units and tenant limits: the ledger's largest
	// figure.
	MaxUnits = quota.MaxUnits
)

// stringBounds are the fields with a bound of their own; every other
// string is bounded by MaxParamBytes.
var stringBounds = map[protoreflect.Name]int{
	"target": MaxTargetBytes, "filter": filter.MaxLength, "order_by": MaxOrderByBytes,
	"page_token": paging.MaxTokenBytes, "tenant": MaxTenantBytes,
	// Each select value may list many names, separated by commas; their
	// number is bounded by MaxSelectFields.
	"select": MaxSelectFields * 64,
}

// intBounds are the integer fields whose range the service knows; the
// rest (page_size) are bounded where they are used.
var intBounds = map[protoreflect.Name]int64{
	"rows": MaxRows, "max_rows": MaxRows, "max_units": MaxUnits, "limit": MaxUnits,
}

// CheckBounds rejects a request whose inputs exceed their bounds, naming
// the field (as a path for nested messages: backlinks.target). It reads
// the message by reflection, so every request of every service, and every
// field added later, is bounded: strings by length, repeated fields by
// count, integers by range, enums by their defined values. Filter depth is
// checked by the filter parser, which alone knows it.
func CheckBounds(req any) error {
	m, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	if err := checkMessage(m.ProtoReflect(), ""); err != nil {
		return toStatus(err, "")
	}
	return nil
}

func checkMessage(m protoreflect.Message, prefix string) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		err = checkField(fd, v, prefix+string(fd.Name()))
		return err == nil
	})
	return err
}

func checkField(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	if fd.IsMap() {
		return nil // no request has maps
	}
	if fd.IsList() {
		l := v.List()
		if fd.Name() == "select" {
			names := 0
			for i := range l.Len() {
				names += strings.Count(l.Get(i).String(), ",") + 1
			}
			if names > MaxSelectFields {
				return paging.BadField(path, "names %d fields; the limit is %d", names, MaxSelectFields)
			}
		} else if l.Len() > MaxSelectFields {
			return paging.BadField(path, "has %d values; the limit is %d", l.Len(), MaxSelectFields)
		}
		for i := range l.Len() {
			if err := checkValue(fd, l.Get(i), path); err != nil {
				return err
			}
		}
		return nil
	}
	return checkValue(fd, v, path)
}

func checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		limit, ok := stringBounds[fd.Name()]
		if !ok {
			limit = MaxParamBytes
		}
		if n := len(v.String()); n > limit {
			return paging.BadField(path, "is %d bytes long; the limit is %d", n, limit)
		}
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		if limit, ok := intBounds[fd.Name()]; ok {
			if n := v.Int(); n < 0 || n > limit {
				return paging.BadField(path, "must be between 0 and %d, got %d", limit, n)
			}
		}
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByNumber(v.Enum()) == nil {
			return paging.BadField(path, "unknown value %d of %s: use one of %s", v.Enum(), fd.Enum().Name(), enumNames(fd.Enum()))
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return checkMessage(v.Message(), path+".")
	}
	return nil
}

// enumNames lists an enum's values for an error message.
func enumNames(e protoreflect.EnumDescriptor) string {
	vals := e.Values()
	names := make([]string, 0, vals.Len())
	for i := range vals.Len() {
		names = append(names, string(vals.Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

type checkedKey struct{}

// boundsChecked returns ctx marked as the context of a request whose
// bounds have been checked (CheckBounds), as openfga's validator marks it.
func boundsChecked(ctx context.Context) context.Context {
	return context.WithValue(ctx, checkedKey{}, true)
}

// checkOnce checks the bounds of req unless the interceptor already has
// (a handler called in process, without the interceptors, has not), and
// returns ctx marked as checked.
func checkOnce(ctx context.Context, req any) (context.Context, error) {
	if checked, _ := ctx.Value(checkedKey{}).(bool); checked {
		return ctx, nil
	}
	if err := CheckBounds(req); err != nil {
		return ctx, err
	}
	return boundsChecked(ctx), nil
}

func boundsUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := CheckBounds(req); err != nil {
			return nil, err
		}
		return handler(boundsChecked(ctx), req)
	}
}

// streamLimiter counts the open streams, each tenant's and all together.
type streamLimiter struct {
	max, maxTotal int
	mu            sync.Mutex
	open          map[string]int
	total         int
}

func newStreamLimiter(max, maxTotal int) *streamLimiter {
	if max <= 0 {
		max = DefaultMaxStreamsPerTenant
	}
	if maxTotal <= 0 {
		maxTotal = MaxStreamsFor(DefaultMemoryLimit)
	}
	return &streamLimiter{max: max, maxTotal: maxTotal, open: map[string]int{}}
}

// streamRetry is the hint given with a refused stream: streams last
// seconds to minutes, and another replica may have room at once.
const streamRetry = 5 * time.Second

// acquire takes one of the tenant's streams; release gives it back.
func (l *streamLimiter) acquire(tenant string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[tenant] >= l.max {
		return nil, withDetails(codes.ResourceExhausted,
			fmt.Sprintf("too many streams: tenant %q already has %d streams open, the limit; wait for one to finish", tenant, l.max),
			&errdetails.RetryInfo{RetryDelay: durationpb.New(streamRetry)},
			errorInfo(ReasonTooManyStreams, map[string]string{"limit": fmt.Sprint(l.max)}))
	}
	if l.total >= l.maxTotal {
		return nil, withDetails(codes.ResourceExhausted,
			fmt.Sprintf("the server is busy: it holds %d streams, its bound across all tenants (set by its memory limit); retry shortly", l.maxTotal),
			&errdetails.RetryInfo{RetryDelay: durationpb.New(streamRetry)},
			errorInfo(ReasonServerBusy, map[string]string{"limit": fmt.Sprint(l.maxTotal)}))
	}
	l.open[tenant]++
	l.total++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
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
		return handler(srv, &boundedStream{ServerStream: ss, ctx: boundsChecked(ss.Context())})
	}
}

// boundedStream checks the bounds of every message received. Its context
// says so: a server stream's handler runs once its request is received.
type boundedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *boundedStream) Context() context.Context { return s.ctx }

func (s *boundedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return CheckBounds(m)
}
