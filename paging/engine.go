// Package paging is linkgate's paging engine, without gRPC: the dataset
// catalogue, Compile, the cursor and its page token, the cost model, the
// page loop, the merge of the new/lost feeds, and the drivers that serve
// a List page or a stream from them. Every upstream page is a paid call
// through the scheduler. The handlers in package service turn requests
// into Params and the pages the drivers hand them into messages.
package paging

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"

	"github.com/linkgate/linkgate/scheduler"
	"github.com/linkgate/linkgate/upstream"
)

// Config configures an Engine.
type Config struct {
	Upstream  Upstream
	Scheduler Scheduler
	// Ledger is read for what a tenant has left when a page came from a
	// cache and made no ledger step.
	Ledger Ledger
	Tokens *Tokens
	// Observer hears of every page, for telemetry; nil hears nothing.
	Observer Observer
	// Logger gets the order violations and the panics of the page loop.
	Logger *slog.Logger
	// UpstreamPageRows is the number of rows a stream asks of the upstream
	// per request. Default 1000.
	UpstreamPageRows int
	// SharedCache lets tenants share cached and coalesced pages.
	SharedCache bool
	// RowCap is what the key taught of its plan's row cap, shared by every
	// run. Nil: one of the engine's own.
	RowCap *upstream.RowCap
	// TrustCollation turns off the boundary check of continued pages whose
	// where compares text (beforeCheck): for an upstream an operator has
	// shown to compare text in where as order_by sorts it
	// (docs/first-run.md). The check costs a request, and its 50 units, per
	// such page; without it a row that where and order_by place on
	// opposite sides of a page's boundary is lost unseen. Pages of orders
	// that start with a number or a time mostly start at runs of that key
	// and compare no text (Plan.aligned): they need no check.
	TrustCollation bool
}

// Engine runs the pages of compiled requests.
type Engine struct {
	cfg   Config
	pager pager
}

// New returns an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Upstream == nil || cfg.Scheduler == nil || cfg.Ledger == nil || cfg.Tokens == nil {
		return nil, errors.New("paging: upstream, scheduler, ledger and tokens are required")
	}
	if cfg.UpstreamPageRows <= 0 {
		cfg.UpstreamPageRows = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RowCap == nil {
		cfg.RowCap = &upstream.RowCap{}
	}
	if cfg.Observer == nil {
		cfg.Observer = nobody{}
	}
	return &Engine{cfg: cfg, pager: pager{trustCollation: cfg.TrustCollation, up: cfg.Upstream, sched: cfg.Scheduler, ledger: cfg.Ledger, obs: cfg.Observer,
		log: cfg.Logger, sharedCache: cfg.SharedCache, caps: cfg.RowCap}}, nil
}

// Observer hears what the engine does, for telemetry.
type Observer interface {
	// StartPage is called before page n (from 1) of a run is fetched; the
	// trace it returns hears how the page went.
	StartPage(ctx context.Context, tenant, dataset string, n int) (context.Context, PageTrace)
	// Charged is called with the units of every page a request fetched,
	// as the page arrives, whether its rows are sent or not.
	Charged(ctx context.Context, units int64)
	// OrderViolation is called for a page refused by the order checks.
	OrderViolation(ctx context.Context, dataset string)
}

// PageTrace follows one page.
type PageTrace interface {
	// Scheduled tells what the scheduler did for the page.
	Scheduled(ctx context.Context, res scheduler.Result, err error)
	// End tells the page's outcome: its rows, or its error.
	End(ctx context.Context, res scheduler.Result, rows int, err error)
}

type nobody struct{}

func (nobody) StartPage(ctx context.Context, _, _ string, _ int) (context.Context, PageTrace) {
	return ctx, nobody{}
}
func (nobody) Charged(context.Context, int64)                     {}
func (nobody) OrderViolation(context.Context, string)             {}
func (nobody) Scheduled(context.Context, scheduler.Result, error) {}
func (nobody) End(context.Context, scheduler.Result, int, error)  {}

// Position is where a run starts: the start of the data, or where a page
// token resumes.
type Position struct {
	cur   cursor
	feeds []feedCursor // a merged plan's (new/lost): one per feed
}

// Resume returns where a page token resumes a plan; "" is the start. A
// token of another request, tampered with or expired is an error that
// wraps ErrBadToken.
func (t *Tokens) Resume(pl *Plan, token string) (Position, error) {
	if token == "" {
		return Position{}, nil
	}
	if pl.merged() {
		keys := make([][]sortKey, len(pl.feeds))
		for i, f := range pl.feeds {
			keys[i] = f.plan.keys
		}
		fs, err := t.decodeFeeds(token, pl.fingerprint, keys)
		return Position{feeds: fs}, err
	}
	c, err := t.decode(token, pl.fingerprint, pl.keys)
	return Position{cur: c}, err
}

// Request is a compiled request with where it starts.
type Request struct {
	Plan   *Plan
	Tenant string
	From   Position
	// PageSize is the rows of a List page or of one stream message.
	PageSize int
	// MaxRows and MaxUnits bound a stream; 0: no bound.
	MaxRows, MaxUnits int64
	// Background marks a stream no one waits on (an export): its first
	// page is bulk work too, so that interactive callers go first.
	Background bool
}

// firstBulk numbers a stream's first page that is bulk work for the
// scheduler: the second, as someone waits for the first rows, unless no
// one does.
func (r Request) firstBulk() int {
	if r.Background {
		return 1
	}
	return 2
}

// Chunk is a List page or one stream message: rows (events for new/lost),
// the token that resumes after them ("" at the end of the data) and what
// the pages behind them cost.
type Chunk struct {
	Rows   []upstream.Record // laid out as the plan fetches them (Plan.Fetched)
	Events []Event
	Token  string
	Cost   Cost
}

// List serves one List page: a single upstream request for page_size rows
// plus one that tells whether more follow, so that the last page has no
// token. Under the key's row cap the page is what the request was served,
// with a token for the rest (AIP-158: only the token says that rows
// follow). On an error the chunk's Token, if any, resumes before the page
// that failed: only an upstream order an operator may fix has one.
func (e *Engine) List(ctx context.Context, r Request) (Chunk, error) {
	if r.Plan.merged() {
		return e.listEvents(ctx, r)
	}
	ctx, cancel := context.WithCancel(ctx)
	pages, wait := e.pager.run(ctx, fetch{plan: r.Plan, tenant: r.Tenant, start: r.From.cur,
		pageRows: r.PageSize, maxRows: int64(r.PageSize), single: true})
	defer wait()
	defer cancel()
	var out Chunk
	pos := r.From.cur
	for pg := range pages {
		out.Cost.add(pg)
		e.cfg.Observer.Charged(ctx, pg.charged)
		out.Rows = append(out.Rows, pg.rows...)
		if pg.err == nil || len(pg.rows) > 0 {
			pos = pg.next // at the probe row when the page showed it: the next page is checked to start there
		}
		if pg.err != nil {
			var oerr *OrderError
			if errors.As(pg.err, &oerr) && pos.Key != nil {
				out.Token, _ = e.cfg.Tokens.encode(r.Plan.fingerprint, pos)
			}
			return Chunk{Token: out.Token}, pg.err
		}
		if pg.more {
			var err error
			if out.Token, err = e.cfg.Tokens.encode(r.Plan.fingerprint, pos); err != nil {
				return Chunk{}, err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return Chunk{}, err
	}
	return out, nil
}

// Stream runs a stream: upstream pages of UpstreamPageRows rows (for
// new/lost, the merge of its feeds' pages), handed to send as chunks of
// PageSize rows, each with the token to resume after it. While send works
// on a chunk the next page is fetched, and memory stays bounded by about
// three pages. Stream returns when the data ends or a bound stops it
// (nil), when send fails (with that error), when ctx ends (with its
// error) or when a page fails; resume is the token after the last chunk
// sent.
func (e *Engine) Stream(ctx context.Context, r Request, send func(Chunk) error) (resume string, err error) {
	ctx, cancel := context.WithCancel(ctx)
	var batches iter.Seq[batch]
	if r.Plan.merged() {
		ch, wait := e.merge(ctx, r)
		defer wait()
		batches = func(yield func(batch) bool) {
			for b := range ch {
				if !yield(b) {
					return
				}
			}
		}
	} else {
		pages, wait := e.pager.run(ctx, fetch{plan: r.Plan, tenant: r.Tenant, start: r.From.cur,
			pageRows: e.cfg.UpstreamPageRows, maxRows: r.MaxRows, maxUnits: r.MaxUnits, bulkFrom: r.firstBulk(), chunk: r.PageSize})
		defer wait()
		batches = func(yield func(batch) bool) {
			for pg := range pages {
				if !yield(pageBatch(pg, r.PageSize)) {
					return
				}
			}
		}
	}
	defer cancel() // before wait: the run stops when its context does
	sent := false
	resume = e.token(r.Plan, r.From)
	for b := range batches {
		// Units count when the page arrives, sent or not: they were spent.
		e.cfg.Observer.Charged(ctx, b.cost.Units)
		if b.err != nil && len(b.chunks) == 0 {
			if b.resumed {
				resume = e.token(r.Plan, b.resume)
			}
			return resume, b.err
		}
		cost := b.cost
		// A batch goes out as its chunks, the first carrying its cost. A
		// batch without rows still makes one chunk when it has something
		// to say: a cost, that the run stopped with rows left (its token),
		// or that the result is empty.
		chunks := b.chunks
		if len(chunks) == 0 && (cost.Units > 0 || b.more || !sent) {
			chunks = []chunkAt{{pos: b.next}}
		}
		for i, c := range chunks {
			resume = e.token(r.Plan, c.pos)
			out := Chunk{Rows: c.rows, Events: c.events, Cost: cost}
			if !(b.end && i == len(chunks)-1) {
				out.Token = resume
			}
			if err := send(out); err != nil {
				return resume, err
			}
			sent = true
			cost = Cost{Remaining: b.cost.Remaining}
		}
		if b.err != nil {
			return resume, b.err
		}
	}
	return resume, ctx.Err()
}

// batch is what the stream driver sends of one upstream page, or of one
// message of a merge: chunks of rows, each with the position after it.
type batch struct {
	chunks []chunkAt
	cost   Cost
	// next is where the run goes on when the batch has no chunk.
	next Position
	// end: no row follows; more: the run stopped with rows left.
	end, more bool
	err       error
	// resume, when resumed, is where a merge that failed stands.
	resume  Position
	resumed bool
}

// chunkAt is one chunk of a batch and the position after it.
type chunkAt struct {
	rows   []upstream.Record
	events []Event
	pos    Position
}

// pageBatch cuts a page of the pager into chunks of size rows, at the
// cursors the page carries.
func pageBatch(pg page, size int) batch {
	b := batch{next: Position{cur: pg.next}, end: pg.end, more: pg.more, err: pg.err}
	b.cost.add(pg)
	for i, rows := range chunked(pg.rows, size) {
		pos := pg.next
		if i < len(pg.marks) {
			pos = pg.marks[i]
		}
		b.chunks = append(b.chunks, chunkAt{rows: rows, pos: Position{cur: pos}})
	}
	return b
}

// token is the page token that resumes a plan at pos; none at the start.
func (e *Engine) token(pl *Plan, pos Position) string {
	if pl.merged() {
		if pos.feeds == nil {
			return ""
		}
		t, _ := e.cfg.Tokens.encodeFeeds(pl.fingerprint, pos.feeds)
		return t
	}
	if pos.cur.Key == nil {
		return ""
	}
	t, _ := e.cfg.Tokens.encode(pl.fingerprint, pos.cur)
	return t
}

// chunked cuts rows into slices of size rows.
func chunked(rows []upstream.Record, size int) [][]upstream.Record {
	var out [][]upstream.Record
	for len(rows) > 0 {
		n := min(size, len(rows))
		out = append(out, rows[:n])
		rows = rows[n:]
	}
	return out
}

// errPanic ends a request whose page loop panicked; the log has the panic
// and its stack.
var errPanic = errors.New("internal error")

// recovered logs a panic recovered in a goroutine of the engine, which no
// handler's recovery covers, and returns the error that ends its request.
func recovered(log *slog.Logger, p any, stack []byte) error {
	log.Error("panic", "in", "pager", "panic", fmt.Sprint(p), "stack", string(stack))
	return errPanic
}

// panicked logs err if it is a panic the scheduler recovered, and returns
// errPanic for it; any other error is returned as it is.
func panicked(log *slog.Logger, err error) error {
	var pe *scheduler.PanicError
	if errors.As(err, &pe) {
		return recovered(log, pe.Value, pe.Stack)
	}
	return err
}
