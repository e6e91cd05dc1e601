package service

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/scheduler"
	"github.com/linkgate/linkgate/upstream"
)

// Page sizes of List and Stream RPCs: the rows of one List response or of
// one Stream message. Larger sizes are lowered to the maximum (AIP-158).
const (
	DefaultListPageSize   = 100
	DefaultStreamPageSize = 1000
	MaxPageSize           = 1000
)

// Upstream is the part of the upstream client the service calls: the
// engine's pages and the stats.
type Upstream interface {
	paging.Upstream
	BacklinksStats(ctx context.Context, q upstream.StatsQuery) (upstream.Stats, upstream.Result, error)
}

// Config configures the backlinks service.
type Config struct {
	Upstream Upstream
	// Ledger is read for what a tenant has left when a page came from a
	// cache. With Scheduler nil it must also be a scheduler.Ledger (a
	// *quota.Ledger), which the default scheduler spends through.
	Ledger paging.Ledger
	// Scheduler runs every paid upstream call. Nil means one in process
	// over Ledger, with no rate limit of its own and a page cache of
	// PageCacheBytes fresh for PageCacheTTL: for tests and tools; the
	// server always passes the key's scheduler.
	Scheduler paging.Scheduler
	Tokens    *paging.Tokens
	// UpstreamPageRows is the number of rows a stream asks of the upstream
	// per request: large pages amortise the 50-unit floor of every request
	// and the upstream's rate limit. Default 1000.
	UpstreamPageRows int
	// SharePageCache lets tenants share cached and coalesced pages; by
	// default each tenant only ever sees its own.
	SharePageCache bool
	// TrustCollation: paging.Config.TrustCollation.
	TrustCollation bool
	// RowCap is what the key taught of its plan's row cap, shared by every
	// reading. Nil means one of the server's own; the caller passes one to
	// make it Forget when the key's plan changes.
	RowCap *upstream.RowCap
	// PageCacheBytes and PageCacheTTL size the default scheduler's cache:
	// zero values mean 32 MiB and one minute; a negative size turns it off.
	PageCacheBytes int
	PageCacheTTL   time.Duration
	// StreamDeadlineMargin is how long before the caller's deadline a
	// stream stops, so that its last message and its token still arrive.
	// Default 1s, and never more than a quarter of the stream's time.
	StreamDeadlineMargin time.Duration
	Logger               *slog.Logger
	// Clock tells the time: the default page cache's freshness and the
	// stats' default date. Nil means clock.System.
	Clock clock.Clock
	// Telemetry records spans and metrics; nil means one over the global
	// OpenTelemetry providers.
	Telemetry *Telemetry
}

// BacklinksServer implements linkgate.v1.BacklinksService.
type BacklinksServer struct {
	v1.UnimplementedBacklinksServiceServer
	cfg       Config
	engine    *paging.Engine
	draining  chan struct{}
	drainOnce sync.Once
	active    atomic.Int64 // streams in progress
	closeFn   func() error
}

// NewBacklinksServer returns the service over an upstream and a ledger.
func NewBacklinksServer(cfg Config) (*BacklinksServer, error) {
	if cfg.Upstream == nil || cfg.Ledger == nil || cfg.Tokens == nil {
		return nil, errors.New("service: upstream, ledger and tokens are required")
	}
	if cfg.UpstreamPageRows <= 0 {
		cfg.UpstreamPageRows = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.PageCacheBytes == 0 {
		cfg.PageCacheBytes = 32 << 20
	}
	if cfg.PageCacheTTL == 0 {
		cfg.PageCacheTTL = time.Minute
	}
	if cfg.RowCap == nil {
		cfg.RowCap = &upstream.RowCap{}
	}
	if cfg.StreamDeadlineMargin <= 0 {
		cfg.StreamDeadlineMargin = time.Second
	}
	if cfg.Telemetry == nil {
		tel, err := NewTelemetry(TelemetryConfig{})
		if err != nil {
			return nil, err
		}
		cfg.Telemetry = tel
	}
	s := &BacklinksServer{cfg: cfg, draining: make(chan struct{}), closeFn: func() error { return nil }}
	if cfg.Scheduler == nil {
		l, ok := cfg.Ledger.(scheduler.Ledger)
		if !ok {
			return nil, errors.New("service: without a scheduler the ledger must reserve and finish")
		}
		var cache scheduler.Cache
		if cfg.PageCacheBytes > 0 {
			cache = scheduler.NewMemoryCache(cfg.PageCacheBytes, cfg.PageCacheTTL, cfg.Clock)
		}
		sched, err := scheduler.New(scheduler.Config{Limiter: scheduler.Unlimited{}, Ledger: l, Cache: cache})
		if err != nil {
			return nil, err
		}
		cfg.Scheduler, s.closeFn = sched, sched.Close
		s.cfg.Scheduler = sched
	}
	var err error
	s.engine, err = paging.New(paging.Config{Upstream: cfg.Upstream, Scheduler: s.cfg.Scheduler, Ledger: cfg.Ledger,
		Tokens: cfg.Tokens, Observer: cfg.Telemetry, Logger: cfg.Logger, UpstreamPageRows: cfg.UpstreamPageRows,
		SharedCache: cfg.SharePageCache, RowCap: cfg.RowCap, TrustCollation: cfg.TrustCollation})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops the default scheduler, if the server made one.
func (s *BacklinksServer) Close() error { return s.closeFn() }

// Drain ends every stream in progress, and every stream started after it,
// with UNAVAILABLE and the token to resume elsewhere: at shutdown, after
// the drain delay, so that the listeners can stop gracefully at once.
func (s *BacklinksServer) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }

// listRequest is what every List and Stream request message has.
type listRequest interface {
	GetTarget() string
	GetMode() v1.Mode
	GetProtocol() v1.Protocol
	GetSelect() []string
	GetFilter() string
	GetOrderBy() string
	GetPageSize() int32
	GetPageToken() string
}

// paramsOf reads the parameters of a list request; the ones a dataset does
// not have are simply absent from its message.
func paramsOf(req listRequest) paging.Params {
	p := paging.Params{
		Target:   req.GetTarget(),
		Mode:     modes[req.GetMode()],
		Protocol: protocols[req.GetProtocol()],
		Select:   req.GetSelect(),
		Filter:   req.GetFilter(),
		OrderBy:  req.GetOrderBy(),
	}
	if r, ok := req.(interface{ GetAggregation() v1.Aggregation }); ok {
		p.Aggregation = aggregations[r.GetAggregation()]
	}
	if r, ok := req.(interface{ GetHistory() string }); ok {
		p.History = r.GetHistory()
	}
	if r, ok := req.(interface{ GetSince() string }); ok {
		p.Since = r.GetSince()
	}
	if r, ok := req.(interface{ GetUntil() string }); ok {
		p.Until = r.GetUntil()
	}
	if r, ok := req.(interface{ GetChanges() v1.ChangeFilter }); ok {
		p.Changes = changeFilters[r.GetChanges()]
	}
	return p
}

var (
	modes = map[v1.Mode]upstream.Mode{
		v1.Mode_MODE_EXACT: upstream.ModeExact, v1.Mode_MODE_PREFIX: upstream.ModePrefix,
		v1.Mode_MODE_DOMAIN: upstream.ModeDomain, v1.Mode_MODE_SUBDOMAINS: upstream.ModeSubdomains,
	}
	protocols = map[v1.Protocol]upstream.Protocol{
		v1.Protocol_PROTOCOL_BOTH: upstream.ProtocolBoth, v1.Protocol_PROTOCOL_HTTP: upstream.ProtocolHTTP,
		v1.Protocol_PROTOCOL_HTTPS: upstream.ProtocolHTTPS,
	}
	aggregations = map[v1.Aggregation]upstream.Aggregation{
		v1.Aggregation_AGGREGATION_SIMILAR_LINKS:  upstream.AggregationSimilarLinks,
		v1.Aggregation_AGGREGATION_ONE_PER_DOMAIN: upstream.AggregationOnePerDomain,
		v1.Aggregation_AGGREGATION_ALL:            upstream.AggregationAll,
	}
	changeFilters = map[v1.ChangeFilter]paging.Changes{
		v1.ChangeFilter_CHANGE_FILTER_NEW: paging.ChangesNew, v1.ChangeFilter_CHANGE_FILTER_LOST: paging.ChangesLost,
	}
)

// prepare authenticates, validates and compiles a list request, and reads
// where its page token resumes; every failure here happens before a unit is
// reserved.
func (s *BacklinksServer) prepare(ctx context.Context, d *paging.Dataset, req listRequest, defaultSize int) (paging.Request, error) {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return paging.Request{}, status.Error(codes.Unauthenticated, "no caller")
	}
	if _, err := checkOnce(ctx, req); err != nil {
		return paging.Request{}, err
	}
	pl, err := paging.Compile(d, paramsOf(req), caller.Tenant)
	if err != nil {
		return paging.Request{}, toStatus(err, "")
	}
	size, err := pageSize(req.GetPageSize(), defaultSize)
	if err != nil {
		return paging.Request{}, toStatus(err, "")
	}
	from, err := s.cfg.Tokens.Resume(pl, req.GetPageToken())
	if err != nil {
		return paging.Request{}, toStatus(err, "")
	}
	return paging.Request{Plan: pl, Tenant: caller.Tenant, From: from, PageSize: size}, nil
}

// pageSize applies the default and the maximum to a requested page size.
func pageSize(requested int32, def int) (int, error) {
	switch {
	case requested < 0:
		return 0, paging.BadField("page_size", "must not be negative")
	case requested == 0:
		return def, nil
	}
	return min(int(requested), MaxPageSize), nil
}

// list serves one List page (paging.Engine.List).
func (s *BacklinksServer) list(ctx context.Context, d *paging.Dataset, req listRequest) (paging.Request, paging.Chunk, error) {
	r, err := s.prepare(ctx, d, req, DefaultListPageSize)
	if err != nil {
		return r, paging.Chunk{}, err
	}
	page, err := s.engine.List(ctx, r)
	if err != nil {
		return r, page, toStatus(err, page.Token)
	}
	s.cfg.Telemetry.sent(ctx, r.Tenant, d.Label(), len(page.Rows)+len(page.Events), 0)
	return r, page, nil
}

// pageCost is a page's cost as callers see it.
func pageCost(c paging.Cost) *v1.PageCost {
	return &v1.PageCost{UnitsCharged: c.Units, Cached: c.Cached, UpstreamRequests: int32(c.Requests), RemainingUnits: c.Remaining}
}

// streamRequest is what every Stream request message has beyond a List's:
// its bounds, 0 meaning none (never negative: CheckBounds).
type streamRequest interface {
	listRequest
	GetMaxRows() int64
	GetMaxUnits() int64
}

// stream runs a Stream RPC (paging.Engine.Stream), each chunk sent by
// send. When the run fails after some chunks, the error carries the token
// of the last row sent.
func (s *BacklinksServer) stream(ctx context.Context, d *paging.Dataset, req streamRequest, send func(*paging.Plan, paging.Chunk) error) error {
	r, err := s.prepare(ctx, d, req, DefaultStreamPageSize)
	if err != nil {
		return err
	}
	r.MaxRows, r.MaxUnits = req.GetMaxRows(), req.GetMaxUnits()
	r.Background = background(ctx)
	defer s.cfg.Telemetry.streamStarted(ctx, d.Label())()
	runCtx, ended, stop := s.streamRun(ctx)
	defer stop()
	sent := false
	var sendErr error
	resume, err := s.engine.Stream(runCtx, r, func(c paging.Chunk) error {
		if sendErr = send(r.Plan, c); sendErr != nil {
			return sendErr
		}
		s.cfg.Telemetry.sent(ctx, r.Tenant, d.Label(), len(c.Rows)+len(c.Events), 0)
		sent = true
		return nil
	})
	if sendErr != nil {
		return sendErr
	}
	if err := ended(err, sent); err != nil {
		return toStatus(err, resume)
	}
	return nil
}

// streamRun is the context a stream's pages are fetched under: it ends a
// margin before the caller's deadline, so that the stream ends with its
// token while the caller still listens, and at shutdown (Drain). ended
// says why the run stopped early, if it did (errDraining,
// errStreamDeadline), or returns err while the caller's own context
// decides; sent says whether a message went out. stop releases the run.
func (s *BacklinksServer) streamRun(ctx context.Context) (runCtx context.Context, ended func(err error, sent bool) error, stop func()) {
	s.active.Add(1)
	runCtx, cancel := context.WithCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		margin := min(s.cfg.StreamDeadlineMargin, time.Until(dl)/4)
		runCtx, cancel = context.WithDeadline(ctx, dl.Add(-margin))
	}
	drained := make(chan struct{})
	go func() {
		select {
		case <-s.draining:
			close(drained)
			cancel()
		case <-runCtx.Done():
		}
	}()
	ended = func(err error, sent bool) error {
		select {
		case <-drained:
			return errDraining
		default:
		}
		var qe *scheduler.QueueError
		if ctx.Err() == nil && (errors.Is(runCtx.Err(), context.DeadlineExceeded) || sent && errors.As(err, &qe)) {
			return errStreamDeadline
		}
		return err
	}
	return runCtx, ended, func() {
		cancel()
		s.active.Add(-1)
	}
}

// sendEncoded sends a stream message encoded first, so that neither the
// row messages nor gRPC's pooled encoding buffer (1 MiB for a message of
// 1,000 rows) stay alive while the send waits for the caller's flow-control
// window: a slow reader holds only the encoded bytes of the messages in
// flight.
// encoded is called once the message is encoded, to give back its memory.
func sendEncoded(srv grpc.ServerStream, m proto.Message, encoded func()) error {
	var enc grpc.PreparedMsg
	if err := enc.Encode(srv, m); err != nil {
		// Only a stream grpc did not make (a test's) has no codec to encode
		// with ahead; sending the message itself ends the same way.
		err = srv.SendMsg(m)
		encoded()
		return err
	}
	encoded()
	return srv.SendMsg(&enc)
}

var (
	backlinkSlabs       = newSlabs[v1.Backlink]()
	refDomainSlabs      = newSlabs[v1.RefDomain]()
	brokenBacklinkSlabs = newSlabs[v1.BrokenBacklink]()
)

// ListBacklinks returns one page of backlinks.
func (s *BacklinksServer) ListBacklinks(ctx context.Context, req *v1.ListBacklinksRequest) (*v1.ListBacklinksResponse, error) {
	r, page, err := s.list(ctx, paging.Backlinks, req)
	if err != nil {
		return nil, err
	}
	rows, err := rowsOf[v1.Backlink](r.Plan, page.Rows)
	return &v1.ListBacklinksResponse{Backlinks: rows, NextPageToken: page.Token, Cost: pageCost(page.Cost)}, err
}

// StreamBacklinks streams backlinks page by page.
func (s *BacklinksServer) StreamBacklinks(req *v1.StreamBacklinksRequest, srv grpc.ServerStreamingServer[v1.StreamBacklinksResponse]) error {
	return s.stream(srv.Context(), paging.Backlinks, req, func(pl *paging.Plan, p paging.Chunk) error {
		msgs := backlinkSlabs.get(len(p.Rows))
		rows, err := rowsIn[v1.Backlink](pl, p.Rows, msgs)
		if err != nil {
			return err
		}
		return sendEncoded(srv, &v1.StreamBacklinksResponse{Backlinks: rows, NextPageToken: p.Token, Cost: pageCost(p.Cost)},
			func() { backlinkSlabs.put(msgs) })
	})
}

// ListRefDomains returns one page of referring domains.
func (s *BacklinksServer) ListRefDomains(ctx context.Context, req *v1.ListRefDomainsRequest) (*v1.ListRefDomainsResponse, error) {
	r, page, err := s.list(ctx, paging.RefDomains, req)
	if err != nil {
		return nil, err
	}
	rows, err := rowsOf[v1.RefDomain](r.Plan, page.Rows)
	return &v1.ListRefDomainsResponse{RefDomains: rows, NextPageToken: page.Token, Cost: pageCost(page.Cost)}, err
}

// StreamRefDomains streams referring domains page by page.
func (s *BacklinksServer) StreamRefDomains(req *v1.StreamRefDomainsRequest, srv grpc.ServerStreamingServer[v1.StreamRefDomainsResponse]) error {
	return s.stream(srv.Context(), paging.RefDomains, req, func(pl *paging.Plan, p paging.Chunk) error {
		msgs := refDomainSlabs.get(len(p.Rows))
		rows, err := rowsIn[v1.RefDomain](pl, p.Rows, msgs)
		if err != nil {
			return err
		}
		return sendEncoded(srv, &v1.StreamRefDomainsResponse{RefDomains: rows, NextPageToken: p.Token, Cost: pageCost(p.Cost)},
			func() { refDomainSlabs.put(msgs) })
	})
}

// ListBrokenBacklinks returns one page of broken backlinks.
func (s *BacklinksServer) ListBrokenBacklinks(ctx context.Context, req *v1.ListBrokenBacklinksRequest) (*v1.ListBrokenBacklinksResponse, error) {
	r, page, err := s.list(ctx, paging.BrokenBacklinks, req)
	if err != nil {
		return nil, err
	}
	rows, err := rowsOf[v1.BrokenBacklink](r.Plan, page.Rows)
	return &v1.ListBrokenBacklinksResponse{BrokenBacklinks: rows, NextPageToken: page.Token, Cost: pageCost(page.Cost)}, err
}

// StreamBrokenBacklinks streams broken backlinks page by page.
func (s *BacklinksServer) StreamBrokenBacklinks(req *v1.StreamBrokenBacklinksRequest, srv grpc.ServerStreamingServer[v1.StreamBrokenBacklinksResponse]) error {
	return s.stream(srv.Context(), paging.BrokenBacklinks, req, func(pl *paging.Plan, p paging.Chunk) error {
		msgs := brokenBacklinkSlabs.get(len(p.Rows))
		rows, err := rowsIn[v1.BrokenBacklink](pl, p.Rows, msgs)
		if err != nil {
			return err
		}
		return sendEncoded(srv, &v1.StreamBrokenBacklinksResponse{BrokenBacklinks: rows, NextPageToken: p.Token, Cost: pageCost(p.Cost)},
			func() { brokenBacklinkSlabs.put(msgs) })
	})
}
