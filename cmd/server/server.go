package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/rest"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/scheduler"
	"github.com/linkgate/linkgate/service"
	"github.com/linkgate/linkgate/upstream"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// simKey is the key the embedded simulator accepts; it guards nothing.
const simKey = "sim-key"

// run starts linkgate and serves until ctx is done, then shuts down.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(args, getenv)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stdout)
	redis.SetLogger(redisLog{log}) // for the process: tests leave go-redis' default
	if cfg.MemoryLimit > 0 && debug.SetMemoryLimit(-1) == math.MaxInt64 {
		// The garbage collector keeps the heap under 90% of the replica's
		// memory, leaving room for what the Go heap does not count.
		debug.SetMemoryLimit(int64(cfg.MemoryLimit) / 10 * 9)
	}
	s, err := start(ctx, cfg, log)
	if err != nil {
		return err
	}
	if cfg.simulated() {
		fmt.Fprint(stdout, s.welcome())
	}
	select {
	case <-ctx.Done():
	case err = <-s.failed:
		log.Error("a listener failed", "err", err)
	}
	return errors.Join(err, s.shutdown())
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// server is a running linkgate.
type server struct {
	cfg      config
	sec      *security // security.go
	log      *slog.Logger
	grpc     *grpc.Server
	http     *http.Server
	health   *health.Server
	grpcAddr string
	httpAddr string
	// metricsAddr is the /metrics listener's address; empty when /metrics
	// is on the REST listener or off.
	metricsAddr string
	failed      chan error
	gatewayGRPC *grpc.Server // serves the gateway's own connection (see start)
	// checkReadiness sets the health status from the checks now.
	checkReadiness func()
	// upstreamHealth follows the outcomes of real upstream calls.
	upstreamHealth *outcomes
	backlinks      *service.BacklinksServer
	rdb            redis.UniversalClient // nil without Redis (redis.go)
	ledgerUp       atomic.Bool
	// stopRunner hands this replica's exports over (exports.go).
	stopRunner func()
	// cleanups run in reverse order at shutdown, after the listeners stop.
	cleanups []func() error
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

// start opens the ledger, connects the upstream (starting the simulator on
// the embedded default), and starts both listeners. On error everything
// started so far is stopped again.
func start(ctx context.Context, cfg config, log *slog.Logger) (_ *server, err error) {
	sec, err := loadSecurity(cfg)
	if err != nil {
		return nil, err
	}
	log.Info("starting linkgate", "config", cfg)
	s := &server{cfg: cfg, sec: sec, log: log, failed: make(chan error, 4)}
	defer func() {
		if err != nil {
			s.runCleanups()
		}
	}()
	obs, err := setupTelemetry(ctx, cfg.otel)
	if err != nil {
		return nil, err
	}
	s.cleanups = append(s.cleanups, obs.close) // first in, so it flushes last

	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	s.cleanups = append(s.cleanups, func() error { stop(); s.wg.Wait(); return nil })

	upstreamURL, key := cfg.UpstreamURL, string(cfg.UpstreamKey)
	if cfg.simulated() {
		if upstreamURL, err = s.startSimulator(); err != nil {
			return nil, err
		}
		key = simKey
	}
	if cfg.RedisAddr != "" {
		if err := s.connectRedis(ctx); err != nil {
			return nil, err
		}
	}
	ledger, err := s.openLedger(ctx)
	if err != nil {
		return nil, err
	}
	if err := obs.tel.ObserveBudget(ledger); err != nil {
		return nil, err
	}
	s.cleanups = append(s.cleanups, obs.tel.Close) // before the ledger closes
	s.health = health.NewServer()
	s.upstreamHealth = newOutcomes(cfg.HealthFailures)
	sched, err := s.newScheduler(ledger)
	if err != nil {
		return nil, err
	}
	s.cleanups = append(s.cleanups, sched.Close)
	client, err := upstream.New(upstream.Config{BaseURL: upstreamURL, Key: key, Gate: sched.Gate(),
		KeepBody: cfg.PageCacheBytes, WrapTransport: obs.wrapTransport, Observer: obs.observer()})
	if err != nil {
		return nil, fmt.Errorf("upstream client: %w", err)
	}
	tokens, err := s.tokens()
	if err != nil {
		return nil, err
	}
	caps := &upstream.RowCap{}
	backlinks, err := service.NewBacklinksServer(service.Config{Upstream: client, Ledger: ledger, Scheduler: sched,
		Tokens: tokens, UpstreamPageRows: cfg.UpstreamPageRows, TrustCollation: !cfg.CheckBoundaries, SharePageCache: cfg.PageCacheShared,
		RowCap: caps, Logger: log, Telemetry: obs.tel})
	if err != nil {
		return nil, err
	}
	s.backlinks = backlinks

	opts := service.ServerOptions(service.ServerConfig{Logger: log, Auth: sec.auth, Limits: sec.limits})
	opts = append(opts, obs.serverOption())
	opts = append(opts, sec.tls.grpcOptions()...)
	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("grpc listener: %w", err)
	}
	s.grpcAddr = grpcLis.Addr().String()
	grpcLimit := newConnLimit(grpcLis, "grpc", cfg.maxConnections(), cfg.HeaderTimeout, log, obs.conns)
	// Peers reach one server; the gateway reaches another with the same
	// services and interceptors, on a loopback listener of its own: the
	// bounds put on a peer's connection would put them on every REST
	// caller at once, as they share the gateway's one connection.
	s.grpc = grpc.NewServer(append(slices.Clone(opts), publicOptions(cfg.securityConfig, sec.auth, grpcLimit)...)...)
	s.gatewayGRPC = grpc.NewServer(opts...)
	quotaServer := service.NewQuotaServer(ledger)
	for _, srv := range []*grpc.Server{s.grpc, s.gatewayGRPC} {
		// GuardDecoding: a request that cannot be decoded is the caller's
		// INVALID_ARGUMENT, not an INTERNAL (service/decode.go).
		srv.RegisterService(service.GuardDecoding(&v1.BacklinksService_ServiceDesc, log), backlinks)
		srv.RegisterService(service.GuardDecoding(&v1.QuotaService_ServiceDesc, log), quotaServer)
		srv.RegisterService(service.GuardDecoding(&healthpb.Health_ServiceDesc, log), s.health)
	}
	if err := s.startExports(ctx, []*grpc.Server{s.grpc, s.gatewayGRPC}); err != nil {
		return nil, err
	}
	reflection.Register(s.grpc)
	s.serve("grpc", func() error { return s.grpc.Serve(grpcLimit) })
	gwLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("gateway's grpc listener: %w", err)
	}
	s.serve("gateway's grpc", func() error { return s.gatewayGRPC.Serve(gwLis) })

	// The gateway reaches its listener over a connection of its own; dial
	// adds TLS (tls.go) and tracing to it.
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, sec.tls.gatewayDial()...)
	gwConn, err := grpc.NewClient(gwLis.Addr().String(), append(dial, obs.dialOption())...)
	if err != nil {
		return nil, fmt.Errorf("gateway connection: %w", err)
	}
	s.cleanups = append(s.cleanups, gwConn.Close)
	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	s.httpAddr = httpLis.Addr().String()
	httpLimit := newConnLimit(httpLis, "http", cfg.maxConnections(), cfg.HeaderTimeout, log, obs.conns)
	authOff := cfg.TenantsFile == ""
	restAPI, err := rest.New(rest.Config{Conn: gwConn, Health: s.health, Auth: sec.auth,
		CORSOrigins: cfg.corsOrigins(), BodyTimeout: cfg.BodyTimeout, MaxRequestBytes: int64(cfg.MaxRequestBytes),
		Proved: httpLimit.prove})
	if err != nil {
		return nil, err
	}
	s.http = &http.Server{Handler: obs.httpHandler(restAPI, authOff),
		ReadHeaderTimeout: cfg.HeaderTimeout, IdleTimeout: cfg.IdleTimeout, MaxHeaderBytes: cfg.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: cfg.MaxStreamsPerConnection}}
	httpLis = sec.tls.listenHTTP(httpLimit)
	s.serve("http", func() error { return s.http.Serve(httpLis) })
	if !authOff && cfg.MetricsAddr != "off" && cfg.MetricsAddr != "" {
		if err := s.serveMetrics(obs.metricsHandler()); err != nil {
			return nil, err
		}
	}

	s.watchReadiness(bg, ledger)
	s.reconcile(bg, ledger, &planWatch{src: client, caps: caps, log: log})
	if s.rdb != nil {
		// Another Redis server holds the budget than before (a failover, a
		// restart): the new one may lack writes the old one acknowledged,
		// so the ledger is reconciled now, not at the next tick.
		s.watchRedis(bg, ledger.RequestReconcile)
	}
	log.Info("linkgate is serving", "grpc", s.grpcAddr, "http", s.httpAddr)
	return s, nil
}

// serve runs a listener's loop and reports a failure other than a stop.
func (s *server) serve(name string, loop func() error) {
	go func() {
		if err := loop(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			s.failed <- fmt.Errorf("%s: %w", name, err)
		}
	}()
}

// serveMetrics serves /metrics on its own listener, so that it can stay on
// loopback (or a network only the scraper reaches) while the API listens
// on every interface.
func (s *server) serveMetrics(h http.Handler) error {
	lis, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener (LINKGATE_METRICS_ADDR): %w", err)
	}
	s.metricsAddr = lis.Addr().String()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 8 << 10}
	s.serve("metrics", func() error { return srv.Serve(lis) })
	s.cleanups = append(s.cleanups, srv.Close)
	s.log.Info("serving /metrics", "addr", s.metricsAddr)
	return nil
}

// startSimulator serves the upstream simulator on a loopback port, so the
// embedded default exercises the real HTTP client.
func (s *server) startSimulator() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("simulator listener: %w", err)
	}
	srv := &http.Server{Handler: ahrefssim.New(ahrefssim.Config{Keys: []string{simKey}}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(lis)
	s.cleanups = append(s.cleanups, func() error { return srv.Close() })
	s.log.Info("serving the upstream simulator", "addr", lis.Addr().String())
	return "http://" + lis.Addr().String(), nil
}

// openLedger opens the ledger's store. On Redis it first reads what the
// server says of itself: an evicting server fails the start, and what its
// persistence keeps is logged, now and whenever it changes.
func (s *server) openLedger(ctx context.Context) (*quota.Ledger, error) {
	var store quota.Store
	if s.cfg.RedisAddr != "" {
		rs := quota.NewRedisStore(s.rdb, quota.WithRedisWatch(func(r quota.RedisServer) {
			s.log.Info("redis ledger", "addr", r.Addr, "version", r.Version, "role", r.Role, "run_id", r.RunID,
				"maxmemory_policy", r.MaxmemoryPolicy, "persistence", r.Durability())
			if r.Evicting() {
				s.log.Error("redis ledger refused: its maxmemory-policy may evict the ledger's keys; set noeviction",
					"maxmemory_policy", r.MaxmemoryPolicy)
			}
		}))
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := rs.Ping(pctx); errors.Is(err, quota.ErrEvicting) {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		store = rs
	} else {
		if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		bolt, err := quota.OpenBoltStore(filepath.Join(s.cfg.DataDir, "ledger.db"))
		if err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		s.cleanups = append(s.cleanups, bolt.Close)
		store = bolt
	}
	return quota.New(store, quota.Config{
		Budget: s.cfg.BudgetName, PoolLimit: s.cfg.BudgetUnits, ResetDay: s.cfg.ResetDay, Lease: s.cfg.Lease,
		Tenants: s.sec.tenants.limits,
	})
}

// newScheduler is the one door to the upstream key: its rate and page
// cache in Redis, shared by every replica, when Redis is configured, in
// process otherwise.
func (s *server) newScheduler(ledger *quota.Ledger) (*scheduler.Scheduler, error) {
	var limiter scheduler.Limiter = scheduler.NewLocalLimiter(s.cfg.UpstreamRPM, nil)
	var cache scheduler.Cache
	if s.cfg.RedisAddr != "" {
		limiter = scheduler.NewRedisLimiter(s.rdb, "linkgate:rate", s.cfg.BudgetName, s.cfg.UpstreamRPM)
		if s.cfg.PageCacheBytes > 0 {
			cache = scheduler.NewRedisCache(s.rdb, "linkgate:cache:"+s.cfg.BudgetName, s.cfg.PageCacheBytes, s.cfg.PageCacheTTL)
		}
	} else if s.cfg.PageCacheBytes > 0 {
		cache = scheduler.NewMemoryCache(s.cfg.PageCacheBytes, s.cfg.PageCacheTTL, nil)
	}
	return scheduler.New(scheduler.Config{Limiter: limiter, Ledger: ledger, Cache: cache,
		Weights: s.sec.tenants.weights, Outcome: func(err error) {
			if s.upstreamHealth.record(err) {
				s.publishHealth()
			}
		}})
}

// tokens returns the page token codec. Without a configured key, a bolt
// deployment keeps a random one in its data directory so that tokens
// survive a restart; replicas sharing Redis must share configured keys.
func (s *server) tokens() (*paging.Tokens, error) {
	keys := s.cfg.tokenKeys()
	if len(keys) == 0 {
		if s.cfg.RedisAddr != "" {
			return nil, errors.New("replicas sharing a Redis ledger must share a page token key: set LINKGATE_TOKEN_KEY_FILE")
		}
		path := filepath.Join(s.cfg.DataDir, "token.key")
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			raw := make([]byte, 32)
			rand.Read(raw)
			b = []byte(hex.EncodeToString(raw))
			err = os.WriteFile(path, b, 0o600)
		}
		if err != nil {
			return nil, fmt.Errorf("page token key: %w", err)
		}
		keys = []string{strings.TrimSpace(string(b))}
	}
	// The first key signs; the others, older, still verify.
	var older [][]byte
	for _, k := range keys[1:] {
		older = append(older, []byte(k))
	}
	return paging.NewTokens([]byte(keys[0]), s.cfg.TokenTTL, nil, older...)
}

// readiness is what health reports on: the ledger.
type readiness interface {
	Ping(ctx context.Context) error
}

// watchReadiness keeps the health status on the ledger's ping, now and
// every 15 seconds. The upstream's part comes from the outcomes of real
// calls (upstreamHealth), never from a probe: a probe would wait in the
// same queue as traffic and spend the key's rate.
func (s *server) watchReadiness(ctx context.Context, ledger readiness) {
	s.checkReadiness = func() { s.setReadiness(ctx, ledger) }
	s.checkReadiness()
	s.every(ctx, 15*time.Second, s.checkReadiness)
}

// setReadiness pings the ledger and publishes the health status.
func (s *server) setReadiness(ctx context.Context, ledger readiness) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := ledger.Ping(ctx)
	if err != nil {
		s.log.Warn("not ready: ledger", "err", err)
	}
	s.ledgerUp.Store(err == nil)
	s.publishHealth()
}

// publishHealth sets the health status: the server (service "") and
// QuotaService are ready while the ledger answers; BacklinksService also
// needs the upstream, judged by real outcomes. An upstream outage leaves
// replicas ready, so callers still reach the quota, cached pages, and an
// UNAVAILABLE with a retry hint rather than no endpoint at all.
func (s *server) publishHealth() {
	ledgerUp := healthpb.HealthCheckResponse_NOT_SERVING
	if s.ledgerUp.Load() {
		ledgerUp = healthpb.HealthCheckResponse_SERVING
	}
	data := ledgerUp
	if !s.upstreamHealth.up() {
		data = healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.health.SetServingStatus("", ledgerUp)
	s.health.SetServingStatus(v1.QuotaService_ServiceDesc.ServiceName, ledgerUp)
	s.health.SetServingStatus(v1.BacklinksService_ServiceDesc.ServiceName, data)
}

// reconcile compares the ledger with the upstream's own usage: once at
// start, which opens the period on a first start; every ReconcileEvery (0:
// never), adopting the upstream's figure when someone else spent units of
// the key; and at once whenever the ledger asks (ReconcileRequests: it
// found its period unknown, as after a store that lost its data, or a
// replica saw it rebuilt), which rebuilds the period from the upstream's
// usage before any unit is granted. Requests are served at most one per
// reconcileSpacing, so that a failing upstream is not asked in a loop.
//
// The periodic runs are one replica's at a time: each first takes or renews
// the ledger's reconciler lease, for one and a half runs, so when its
// holder stops another replica takes over within that. Runs at start and
// on request need no lease: each replica writes back what it saw of a
// store that lost its data, and a rebuild must not wait for the holder.
// A replica without the lease still reads the key's plan each period, as
// its row cap is its own (planWatch).
func (s *server) reconcile(ctx context.Context, ledger *quota.Ledger, usage *planWatch) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	holder := hex.EncodeToString(id[:])
	run := func(periodic bool) {
		if periodic {
			held, err := ledger.HoldReconciler(ctx, holder, s.cfg.ReconcileEvery*3/2)
			if err != nil {
				s.log.Warn("reconciliation skipped: the reconciler's lease cannot be read", "err", err)
			}
			if !held {
				rctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
				defer cancel()
				usage.check(rctx)
				return
			}
		}
		rctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
		defer cancel()
		d, err := ledger.Reconcile(rctx, usage)
		switch {
		case err != nil:
			s.log.Warn("reconciliation failed", "err", err)
		case d.Rebuilt:
			s.log.Warn("rebuilt the ledger's period from the upstream's usage: it was unknown (a first start, or a store that lost its data)",
				"drift", d)
		default:
			s.log.Info("reconciled the ledger with the upstream", "drift", d)
		}
	}
	run(false)
	s.wg.Go(func() {
		var tick <-chan time.Time
		if s.cfg.ReconcileEvery > 0 {
			t := time.NewTicker(s.cfg.ReconcileEvery)
			defer t.Stop()
			tick = t.C
		}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic in background work", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}()
		for {
			periodic := false
			select {
			case <-ctx.Done():
				return
			case <-tick:
				periodic = true
			case <-ledger.ReconcileRequests():
			}
			run(periodic)
			select {
			case <-ctx.Done():
				return
			case <-time.After(reconcileSpacing):
			}
		}
	})
}

// reconcileTimeout bounds one reading of the upstream's usage;
// reconcileSpacing separates two reconciliations.
const (
	reconcileTimeout = 10 * time.Second
	reconcileSpacing = time.Second
)

func (s *server) every(ctx context.Context, d time.Duration, fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			// Background work must not take the process down either.
			if p := recover(); p != nil {
				s.log.Error("panic in background work", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn()
			}
		}
	}()
}

// shutdown turns health to NOT_SERVING so balancers stop sending, waits a
// short drain, then stops both listeners gracefully within the shutdown
// timeout (forcing them after it), and closes the rest.
func (s *server) shutdown() error {
	s.log.Info("shutting down")
	s.health.Shutdown()
	// Exports are handed over at once, not after the drain: another
	// replica continues them from the checkpoint each commits now.
	handedOver := make(chan struct{})
	go func() { s.stopExports(s.cfg.ShutdownTimeout); close(handedOver) }()
	time.Sleep(s.cfg.DrainDelay)
	<-handedOver
	// Streams still running end now with UNAVAILABLE and their token, so
	// their callers resume on another replica and the listeners can stop.
	if s.backlinks != nil {
		s.backlinks.Drain()
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	// Both listeners drain together under the one deadline: a REST stream
	// is also a gRPC stream through the gateway.
	httpDone := make(chan error, 1)
	go func() { httpDone <- s.http.Shutdown(ctx) }()
	stopped := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		wg.Go(s.grpc.GracefulStop)
		wg.Go(s.gatewayGRPC.GracefulStop)
		wg.Wait()
		close(stopped)
	}()
	cut := false
	select {
	case <-stopped:
	case <-ctx.Done():
		cut = true
		s.grpc.Stop()
		s.gatewayGRPC.Stop()
		<-stopped
	}
	if err := <-httpDone; errors.Is(err, context.DeadlineExceeded) {
		cut = true
		s.http.Close()
	} else if err != nil {
		s.log.Warn("REST listener shutdown", "err", err)
	}
	if cut {
		// Streams that outlived the timeout were cut; their callers resume
		// with their last token. That is the shutdown working, not failing.
		s.log.Warn("requests still running after the shutdown timeout were cut", "timeout", s.cfg.ShutdownTimeout.String())
	}
	err := s.runCleanups()
	s.log.Info("stopped")
	return err
}

func (s *server) runCleanups() error {
	var errs []error
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		errs = append(errs, s.cleanups[i]())
	}
	s.cleanups = nil
	return errors.Join(errs...)
}
