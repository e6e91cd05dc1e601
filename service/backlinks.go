package service

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
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

// Config configures the backlinks service.
type Config struct {
	Upstream Upstream
	// Ledger is read for what a tenant has left when a page came from a
	// cache. With Scheduler nil it must also be a scheduler.Ledger (a
	// *quota.Ledger), which the default scheduler spends through.
	Ledger Ledger
	// Scheduler runs every paid upstream call. Nil means one in process
	// over Ledger, with no rate limit of its own and a page cache of
	// PageCacheBytes fresh for PageCacheTTL: for tests and tools; the
	// server always passes the key's scheduler.
	Scheduler Scheduler
	Tokens    *Tokens
	// UpstreamPageRows is the number of rows a stream asks of the upstream
	// per request: large pages amortise the 50-unit floor of every request
	// and the upstream's rate limit. Default 1000.
	UpstreamPageRows int
	// SharePageCache lets tenants share cached and coalesced pages; by
	// default each tenant only ever sees its own.
	SharePageCache bool
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
	Now                  func() time.Time
	// Telemetry records spans and metrics; nil means one over the global
	// OpenTelemetry providers.
	Telemetry *Telemetry
}

// BacklinksServer implements linkgate.v1.BacklinksService.
type BacklinksServer struct {
	v1.UnimplementedBacklinksServiceServer
	cfg       Config
	pager     pager
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
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
			cache = scheduler.NewMemoryCache(cfg.PageCacheBytes, cfg.PageCacheTTL, cfg.Now)
		}
		sched, err := scheduler.New(scheduler.Config{Limiter: scheduler.Unlimited{}, Ledger: l, Cache: cache})
		if err != nil {
			return nil, err
		}
		cfg.Scheduler, s.closeFn = sched, sched.Close
		s.cfg.Scheduler = sched
	}
	s.pager = pager{up: cfg.Upstream, sched: cfg.Scheduler, ledger: cfg.Ledger, tel: cfg.Telemetry, log: cfg.Logger,
		sharedCache: cfg.SharePageCache, caps: cfg.RowCap}
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
func paramsOf(req listRequest) params {
	p := params{
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
	changeFilters = map[v1.ChangeFilter]Changes{
		v1.ChangeFilter_CHANGE_FILTER_NEW: ChangesNew, v1.ChangeFilter_CHANGE_FILTER_LOST: ChangesLost,
	}
)

// prepared is a checked request: its plan, where it starts, and its caller.
type prepared struct {
	plan     *plan
	start    cursor
	tenant   string
	pageSize int
}

// prepare authenticates, validates and compiles a list request; every
// failure here happens before a unit is reserved.
func (s *BacklinksServer) prepare(ctx context.Context, d *dataset, req listRequest, defaultSize int) (*prepared, error) {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no caller")
	}
	pl, err := compile(d, paramsOf(req), caller.Tenant)
	if err != nil {
		return nil, toStatus(err, "")
	}
	size, err := pageSize(req.GetPageSize(), defaultSize)
	if err != nil {
		return nil, toStatus(err, "")
	}
	pr := &prepared{plan: pl, tenant: caller.Tenant, pageSize: size}
	if tok := req.GetPageToken(); tok != "" {
		if pr.start, err = s.cfg.Tokens.Decode(tok, pl.fingerprint, pl.keys); err != nil {
			return nil, toStatus(err, "")
		}
	}
	return pr, nil
}

// pageSize applies the default and the maximum to a requested page size.
func pageSize(requested int32, def int) (int, error) {
	switch {
	case requested < 0:
		return 0, badField("page_size", "must not be negative")
	case requested == 0:
		return def, nil
	}
	return min(int(requested), MaxPageSize), nil
}

// resumeToken is the token a List error carries: where to resume when the
// error is the upstream's order, which an operator may fix; none otherwise.
func (s *BacklinksServer) resumeToken(pl *plan, pos cursor, err error) string {
	var oerr *orderError
	if !errors.As(err, &oerr) || pos.Key == nil {
		return ""
	}
	t, _ := s.cfg.Tokens.Encode(pl.fingerprint, pos)
	return t
}

// listed is one page of a List RPC.
type listed struct {
	rows  []upstream.Record
	token string
	cost  *v1.PageCost
}

// list serves one page: a single upstream request for page_size rows plus
// one that tells whether more follow, so that the last page has no token.
// Under the key's row cap the page is what the request was served, with a
// token for the rest (AIP-158: only the token says that rows follow).
func (s *BacklinksServer) list(ctx context.Context, d *dataset, req listRequest) (*prepared, *listed, error) {
	pr, err := s.prepare(ctx, d, req, DefaultListPageSize)
	if err != nil {
		return nil, nil, err
	}
	pages, wait := s.pager.run(ctx, fetch{plan: pr.plan, tenant: pr.tenant, start: pr.start,
		pageRows: pr.pageSize, maxRows: int64(pr.pageSize), single: true})
	defer wait()
	out := &listed{cost: &v1.PageCost{}}
	pos := pr.start
	for pg := range pages {
		addCost(out.cost, pg)
		s.cfg.Telemetry.sent(ctx, pr.tenant, d.label, len(pg.rows), pg.charged)
		out.rows = append(out.rows, pg.rows...)
		if pg.err != nil {
			pos = pos.afterAll(pr.plan.keys, pg.rows)
			return nil, nil, toStatus(pg.err, s.resumeToken(pr.plan, pos, pg.err))
		}
		pos = pg.next // at the probe row when the page showed it: the next page is checked to start there
		if pg.more {
			if out.token, err = s.cfg.Tokens.Encode(pr.plan.fingerprint, pos); err != nil {
				return nil, nil, toStatus(err, "")
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, toStatus(err, "")
	}
	return pr, out, nil
}

func addCost(c *v1.PageCost, pg page) {
	c.UnitsCharged += pg.charged
	c.Cached = c.Cached || pg.cached
	c.UpstreamRequests += int32(pg.requests)
	c.RemainingUnits = pg.remaining
}

// streamPage is one message of a Stream RPC before conversion.
type streamPage struct {
	rows  []upstream.Record
	token string
	cost  *v1.PageCost
}

// streamRequest is what every Stream request message has beyond a List's.
type streamRequest interface {
	listRequest
	streamBounds
}

// streamBounds are the caller's bounds on a stream, 0 meaning none.
type streamBounds interface {
	GetMaxRows() int64
	GetMaxUnits() int64
}

// checkStreamBounds refuses negative bounds.
func checkStreamBounds(req streamBounds) error {
	if n := req.GetMaxRows(); n < 0 {
		return toStatus(badField("max_rows", "must not be negative, got %d", n), "")
	}
	if n := req.GetMaxUnits(); n < 0 {
		return toStatus(badField("max_units", "must not be negative, got %d", n), "")
	}
	return nil
}

// stream runs a Stream RPC: upstream pages of UpstreamPageRows rows, sent
// as messages of page_size rows, each with the token to resume after it.
// When the run fails after some pages, the error carries the token of the
// last row sent.
func (s *BacklinksServer) stream(ctx context.Context, d *dataset, req streamRequest, send func(*plan, streamPage) error) error {
	pr, err := s.prepare(ctx, d, req, DefaultStreamPageSize)
	if err != nil {
		return err
	}
	if err := checkStreamBounds(req); err != nil {
		return err
	}
	defer s.cfg.Telemetry.streamStarted(ctx, d.label)()
	runCtx, ended, stop := s.streamRun(ctx)
	pages, wait := s.pager.run(runCtx, fetch{plan: pr.plan, tenant: pr.tenant, start: pr.start,
		pageRows: s.cfg.UpstreamPageRows, maxRows: req.GetMaxRows(), maxUnits: req.GetMaxUnits(), bulkFrom: 2})
	defer wait()
	defer stop() // before wait: the pager stops when its context does
	sent := false

	pos := pr.start
	token := func() string {
		if pos.Key == nil {
			return ""
		}
		t, _ := s.cfg.Tokens.Encode(pr.plan.fingerprint, pos)
		return t
	}
	for pg := range pages {
		// Units count when the page arrives, sent or not: they were spent.
		// Rows count when they are sent.
		s.cfg.Telemetry.sent(ctx, pr.tenant, d.label, 0, pg.charged)
		if pg.err != nil && len(pg.rows) == 0 {
			return toStatus(ended(pg.err, sent), token())
		}
		cost := &v1.PageCost{}
		addCost(cost, pg)
		// An upstream page goes out as messages of page_size rows, the
		// first carrying its cost. A page without rows still makes one
		// message when it has something to say: a cost, that the run
		// stopped with rows left (its token), or that the result is empty.
		chunks := slices.Collect(slices.Chunk(pg.rows, pr.pageSize))
		if len(chunks) == 0 && (cost.UnitsCharged > 0 || pg.more || !sent) {
			chunks = [][]upstream.Record{nil}
		}
		for i, chunk := range chunks {
			// A token resumes at the row after the message when it is known,
			// so that the next page is checked to start with it.
			switch {
			case i < len(chunks)-1:
				pos = pos.afterAll(pr.plan.keys, chunk).at(pr.plan.keys, chunks[i+1][0])
			case pg.err == nil:
				pos = pg.next
			default:
				pos = pos.afterAll(pr.plan.keys, chunk)
			}
			msg := streamPage{rows: chunk, cost: cost}
			if !(pg.end && i == len(chunks)-1) {
				msg.token = token()
			}
			if err := send(pr.plan, msg); err != nil {
				return err
			}
			s.cfg.Telemetry.sent(ctx, pr.tenant, d.label, len(chunk), 0)
			sent = true
			cost = &v1.PageCost{RemainingUnits: pg.remaining}
		}
		if pg.err != nil {
			return toStatus(ended(pg.err, sent), token())
		}
	}
	if err := ended(ctx.Err(), sent); err != nil {
		return toStatus(err, token())
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
	pr, out, err := s.list(ctx, backlinksData, req)
	if err != nil {
		return nil, err
	}
	rows, err := rowsOf[v1.Backlink](pr.plan, out.rows)
	return &v1.ListBacklinksResponse{Backlinks: rows, NextPageToken: out.token, Cost: out.cost}, err
}

// StreamBacklinks streams backlinks page by page.
func (s *BacklinksServer) StreamBacklinks(req *v1.StreamBacklinksRequest, srv grpc.ServerStreamingServer[v1.StreamBacklinksResponse]) error {
	return s.stream(srv.Context(), backlinksData, req, func(pl *plan, p streamPage) error {
		msgs := backlinkSlabs.get(len(p.rows))
		rows, err := rowsIn[v1.Backlink](pl, p.rows, msgs)
		if err != nil {
			return err
		}
		return sendEncoded(srv, &v1.StreamBacklinksResponse{Backlinks: rows, NextPageToken: p.token, Cost: p.cost},
			func() { backlinkSlabs.put(msgs) })
	})
}

// ListRefDomains returns one page of referring domains.
func (s *BacklinksServer) ListRefDomains(ctx context.Context, req *v1.ListRefDomainsRequest) (*v1.ListRefDomainsResponse, error) {
	pr, out, err := s.list(ctx, refDomainsData, req)
	if err != nil {
		return nil, err
	}
	rows, err := rowsOf[v1.RefDomain](pr.plan, out.rows)
	return &v1.ListRefDomainsResponse{RefDomains: rows, NextPageToken: out.token, Cost: out.cost}, err
}

// StreamRefDomains streams referring domains page by page.
func (s *BacklinksServer) StreamRefDomains(req *v1.StreamRefDomainsRequest, srv grpc.ServerStreamingServer[v1.StreamRefDomainsResponse]) error {
	return s.stream(srv.Context(), refDomainsData, req, func(pl *plan, p streamPage) error {
		msgs := refDomainSlabs.get(len(p.rows))
		rows, err := rowsIn[v1.RefDomain](pl, p.rows, msgs)
		if err != nil {
			return err
		}
		return sendEncoded(srv, &v1.StreamRefDomainsResponse{RefDomains: rows, NextPageToken: p.token, Cost: p.cost},
			func() { refDomainSlabs.put(msgs) })
	})
}

// ListBrokenBacklinks returns one page of broken backlinks.
func (s *BacklinksServer) ListBrokenBacklinks(ctx context.Context, req *v1.ListBrokenBacklinksRequest) (*v1.ListBrokenBacklinksResponse, error) {
	pr, out, err := s.list(ctx, brokenBacklinksData, req)
	if err != nil {
		return nil, err
	}
	rows, err := rowsOf[v1.BrokenBacklink](pr.plan, out.rows)
	return &v1.ListBrokenBacklinksResponse{BrokenBacklinks: rows, NextPageToken: out.token, Cost: out.cost}, err
}

// StreamBrokenBacklinks streams broken backlinks page by page.
func (s *BacklinksServer) StreamBrokenBacklinks(req *v1.StreamBrokenBacklinksRequest, srv grpc.ServerStreamingServer[v1.StreamBrokenBacklinksResponse]) error {
	return s.stream(srv.Context(), brokenBacklinksData, req, func(pl *plan, p streamPage) error {
		msgs := brokenBacklinkSlabs.get(len(p.rows))
		rows, err := rowsIn[v1.BrokenBacklink](pl, p.rows, msgs)
		if err != nil {
			return err
		}
		return sendEncoded(srv, &v1.StreamBrokenBacklinksResponse{BrokenBacklinks: rows, NextPageToken: p.token, Cost: p.cost},
			func() { brokenBacklinkSlabs.put(msgs) })
	})
}
