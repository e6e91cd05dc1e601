package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultTenant is the tenant of every caller while authentication is off.
const DefaultTenant = "default"

// ServerConfig configures the gRPC server's interceptor chain.
type ServerConfig struct {
	Logger *slog.Logger
	// Auth identifies callers; nil means authentication is off (every
	// caller is DefaultTenant with RoleAdmin).
	Auth   *Authenticator
	Limits LimitsConfig
}

// ServerOptions returns the gRPC server options of linkgate. The
// interceptors run in this order, outermost first:
//
//  1. recovery: a panic becomes INTERNAL and is logged with its stack,
//     so that no later interceptor can escape it;
//  2. logging: one line per request with its outcome, after everything
//     inside has decided it;
//  3. auth: who is calling (auth.go), before any handler runs;
//  4. limits: bounded inputs and streams per tenant (limits.go), after
//     auth because the stream bound is per tenant.
func ServerOptions(cfg ServerConfig) []grpc.ServerOption {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	auth := cfg.Auth
	if auth == nil {
		auth = &Authenticator{cfg: AuthConfig{Disabled: true}}
	}
	return append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(recoverUnary(log), logUnary(log), authUnary(auth), boundsUnary()),
		grpc.ChainStreamInterceptor(recoverStream(log), logStream(log), authStream(auth), limitStream(newStreamLimiter(cfg.Limits.MaxStreamsPerTenant, cfg.Limits.MaxStreams))),
		grpc.ForceServerCodecV2(newNamingCodec(recvLimit(cfg.Limits))),
	}, limitOptions(cfg.Limits)...)
}

func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				err = toStatus(recovered(log, info.FullMethod, p), "")
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = toStatus(recovered(log, info.FullMethod, p), "")
			}
		}()
		return handler(srv, ss)
	}
}

// errPanic is linkgate's own fault: a recovered panic. Callers see
// INTERNAL; the log has the panic and its stack.
var errPanic = errors.New("internal error")

// recovered logs a recovered panic with its stack, where it happened, and
// returns the error that ends the request it served. Every goroutine that
// serves a request defers it, so a panic costs one request, not the process.
func recovered(log *slog.Logger, where string, p any) error {
	if log == nil {
		log = slog.Default()
	}
	log.Error("panic", "in", where, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return errPanic
}

// requestLog collects what a handler did, for the request's log line.
type requestLog struct {
	tenant      string
	rows, units int64
}

type requestLogKey struct{}

// noteRequest adds rows and units to the request's log line.
func noteRequest(ctx context.Context, rows, units int64) {
	if rl, ok := ctx.Value(requestLogKey{}).(*requestLog); ok {
		rl.rows += rows
		rl.units += units
	}
}

func logUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		rl := &requestLog{}
		start := time.Now()
		resp, err := handler(context.WithValue(ctx, requestLogKey{}, rl), req)
		logRequest(ctx, log, info.FullMethod, start, rl, err)
		return resp, err
	}
}

func logStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		rl := &requestLog{}
		start := time.Now()
		ctx := context.WithValue(ss.Context(), requestLogKey{}, rl)
		err := handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
		logRequest(ss.Context(), log, info.FullMethod, start, rl, err)
		return err
	}
}

func logRequest(ctx context.Context, log *slog.Logger, method string, start time.Time, rl *requestLog, err error) {
	code := status.Code(err)
	level := slog.LevelInfo
	if code == codes.Internal || code == codes.Unknown {
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("method", method), slog.String("code", code.String()), slog.String("tenant", rl.tenant),
		slog.Int64("rows", rl.rows), slog.Int64("units", rl.units),
		slog.Float64("elapsed_ms", float64(time.Since(start).Microseconds())/1000), traceID(ctx),
	}
	if cause := internalCause(err); cause != "" {
		attrs = append(attrs, slog.String("cause", cause))
	}
	log.LogAttrs(ctx, level, "request", attrs...)
}

// wrappedStream is a server stream with a context of its own.
type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// withCaller puts the caller in the context and on the request's log line.
func withCaller(ctx context.Context, c Caller) context.Context {
	if rl, ok := ctx.Value(requestLogKey{}).(*requestLog); ok {
		rl.tenant = c.Tenant
	}
	return WithCaller(ctx, c)
}
