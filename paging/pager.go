package paging

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/scheduler"
	"github.com/linkgate/linkgate/upstream"
)

// Ledger is the part of the quota ledger the engine reads: what a tenant
// has left, for answers that made no ledger step (served from a cache).
type Ledger interface {
	Usage(ctx context.Context, tenant string) (quota.Usage, error)
}

// Scheduler runs every paid upstream call: the key's rate, fair queueing,
// coalescing, the page cache and the ledger steps.
type Scheduler interface {
	Do(ctx context.Context, c scheduler.Call) (scheduler.Result, error)
}

// Upstream is the part of the upstream client the engine calls.
type Upstream interface {
	ListPage(ctx context.Context, r *upstream.PageRequest, fn func(upstream.Record) error) (upstream.Result, error)
}

// fetch is one run of the pager: where it starts and when it stops.
type fetch struct {
	plan   *Plan
	tenant string
	start  cursor
	// pageRows is the number of new rows asked of the upstream per request.
	pageRows int
	// maxRows and maxUnits stop the run; 0 means no limit. When maxRows
	// stops it, one extra row is asked for to tell whether more remain.
	maxRows, maxUnits int64
	// bulkFrom numbers the first page that is bulk work for the scheduler
	// (2 for a stream: someone waits for its first rows); 0: none is, as
	// in a List.
	bulkFrom int
	// short lets a page end before maxRows, to start the next one at a run
	// of the order's first key (advance): the new/lost merge reads on.
	short bool
	// single makes one upstream request at most, as a List page does: a
	// page the key's row cap may have cut short ends the run with more,
	// so that the caller gets the rows served and a token for the rest.
	single bool
	// suspect carries a page.suspect from the run before, which ended
	// where this one starts.
	suspect int
	// chunk is the number of rows the driver sends at once: each page
	// carries the cursor after each of its chunks (page.marks). 0: the
	// page is sent whole.
	chunk int
}

// page is one upstream response, without the rows an earlier page returned.
type page struct {
	rows     []upstream.Record
	charged  int64 // units settled for this page
	reserved int64 // units reserved for it (0: none, served from a cache)
	cached   bool
	requests int // HTTP requests sent upstream, retries included
	// remaining is what is left of the caller's budget after this page.
	remaining int64
	// end: no row follows these. more: rows follow but the run stopped at
	// max_rows or max_units, or, in a single run, may follow. Neither: the
	// run goes on.
	end, more bool
	// suspect is the size of this page when the key's row cap may have
	// cut it short: only the next request can tell (upstream.RowCap).
	suspect int
	// next is where the run goes on after this page (valid with err nil
	// or rows): at the row after it when the page showed that row, after
	// its last row otherwise. marks are where it goes on after each of
	// its chunks but the last, which ends at next.
	next  cursor
	marks []cursor
	err   error
}

// pager fetches the pages of a run.
type pager struct {
	up     Upstream
	sched  Scheduler
	ledger Ledger
	obs    Observer
	log    *slog.Logger
	// sharedCache: tenants share cached and coalesced pages.
	sharedCache bool
	// caps is what the key taught of its plan's row cap, shared by every
	// run: learned once, it sizes every later page.
	caps *upstream.RowCap
	// trustCollation: Config.TrustCollation.
	trustCollation bool
}

// run fetches pages in a goroutine and delivers them on the returned
// channel, which holds one page: while the caller sends a page downstream
// the next one is fetched, and memory stays bounded by about three pages
// whatever the size of the result. The channel is closed after the last
// page; cancelling ctx stops the run at once. wait returns when the
// goroutine has finished, with every reservation settled or released.
func (p *pager) run(ctx context.Context, f fetch) (pages <-chan page, wait func()) {
	return ahead(ctx, p.log, func(out chan<- page) { p.loop(ctx, f, out) },
		func(err error) page { return page{err: err} })
}

// ahead runs produce in a goroutine that delivers on a channel of one
// value: while the consumer works on one value the next is being made, and
// memory stays bounded. The channel is closed when produce returns; wait
// returns once it has. The goroutine is outside the handler's recovery, so
// a panic, which would end the process, ends the run with failed's value.
func ahead[T any](ctx context.Context, log *slog.Logger, produce func(out chan<- T), failed func(error) T) (values <-chan T, wait func()) {
	ch := make(chan T, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(ch)
		defer func() {
			if v := recover(); v != nil {
				send(ctx, ch, failed(recovered(log, v, debug.Stack())))
			}
		}()
		produce(ch)
	})
	return ch, wg.Wait
}

func (p *pager) loop(ctx context.Context, f fetch, out chan<- page) {
	caps := p.capsOf(f.plan)
	cur := f.start
	var got, spent int64
	suspect := f.suspect
	for n := 1; ; n++ {
		want := int64(f.pageRows)
		// One row more than wanted tells whether rows follow, so that the
		// end of the data never costs a request of its own.
		probe, last := 1, false
		if f.maxRows > 0 {
			left := f.maxRows - got
			if left <= want {
				want, last = left, true
			}
		}
		// A request is served at most the key's cap, or the size of a page
		// the cap may have cut short: ask no more, the probe row included.
		if c := ceiling(caps, suspect); want > 0 && c > 0 && cur.Skip+int(want)+probe > c {
			switch {
			case c > cur.Skip+probe:
				want, last = int64(c-cur.Skip-probe), false
			case c > cur.Skip:
				want, probe, last = int64(c-cur.Skip), 0, false
			case c == caps.Cap():
				send(ctx, out, page{err: fmt.Errorf("the upstream serves %d rows per request, and %d rows share one sort key: paging cannot pass them", c, cur.Skip)})
				return
			}
			// Otherwise the short page held only rows that share its last
			// key: a cap of its size could not be paged past anyway, so
			// the request is asked as if there were none.
		}
		// A continuation whose where compares text pays a one-row request
		// to check its boundary (beforeCheck), unless the operator trusts
		// the upstream's collation.
		checked := !p.trustCollation && f.plan.back != nil && cur.Key != nil && !cur.Settled && !f.plan.aligned(cur)
		var checkUnits int64
		if checked {
			checkUnits = f.plan.price(1)
		}
		if f.maxUnits > 0 {
			// The page costs max(50, perRow × rows); shrink it to what is
			// left of max_units, and stop when even the floor is too much.
			left := f.maxUnits - spent - checkUnits
			affordable := f.plan.affordable(left) - int64(cur.Skip) - int64(probe)
			if affordable < want {
				want, probe = affordable, 0
			}
			if f.plan.price(cur.Skip+int(want)+probe) > left {
				want = 0
			}
		}
		if want <= 0 {
			send(ctx, out, page{more: true, suspect: suspect, next: cur})
			return
		}
		limit := cur.Skip + int(want) + probe
		var pg page
		if q, err := f.plan.pageRequest(cur, limit); err != nil {
			pg = page{err: err}
		} else {
			pg = p.fetchPage(ctx, f, q, limit, n)
		}
		spent += pg.charged
		served := len(pg.rows)
		var check func() page
		if checked && pg.err == nil && served > 0 {
			// After the page, not beside it: a page the budget denies
			// must cost nothing.
			check = p.startCheck(ctx, f, cur, n)
		}
		if pg.err == nil || served > 0 {
			rows, next, oerr := advance(f.plan.keys, cur, pg.rows, int(want), f.plan.alignable() && (!last || f.short))
			if check != nil {
				chk := check()
				check = nil
				spent += chk.charged
				pg.charged, pg.reserved, pg.requests = pg.charged+chk.charged, pg.reserved+chk.reserved, pg.requests+chk.requests
				pg.cached = pg.cached || chk.cached
				if chk.charged > 0 {
					pg.remaining = min(pg.remaining, chk.remaining)
				}
				switch want, known := expectedBefore(f.plan.keys, cur, pg.rows); {
				case oerr != nil || pg.err != nil:
				case chk.err != nil:
					pg.rows, pg.err, served = nil, chk.err, 0
					rows, next = nil, cur
				case known:
					oerr = beforeCheck(f.plan.keys, cur, want, chk.rows)
				}
			}
			if oerr != nil {
				oerr.Page = n
				p.orderViolation(ctx, f, oerr)
				send(ctx, out, page{err: oerr, charged: pg.charged, reserved: pg.reserved, cached: pg.cached,
					requests: pg.requests, remaining: pg.remaining})
				return
			}
			pg.marks, pg.next = marks(f.plan.keys, cur, rows, f.chunk)
			if pg.err == nil {
				pg.next = next // at the probe row when the page showed it
			}
			pg.rows, cur = rows, next
			got += int64(len(pg.rows))
		}
		if pg.err == nil {
			// A short page is the end only when the upstream says so: it
			// holds fewer rows than a request of the key was ever served
			// (upstream.RowCap), or nothing after the rows returned before.
			// One as long as the most ever served may be the cap: the next
			// request tells, and rows after it teach the key's cap.
			if suspect > 0 && len(pg.rows) > 0 {
				caps.Continued(suspect)
			}
			suspect = 0
			capped := caps.Served(limit, served)
			switch {
			case served == limit:
				pg.more = probe == 1 && last // the probe row came back: rows remain after max_rows
			case len(pg.rows) == 0 || !capped:
				pg.end = true
			default:
				suspect = served
			}
			pg.more = pg.more || f.single && !pg.end
			pg.suspect = suspect
		}
		if !send(ctx, out, pg) || pg.err != nil || pg.end || pg.more {
			return
		}
	}
}

// startCheck sends the request for the row the upstream holds just before
// cur, the start of a page (beforeCheck), and returns what waits for its
// answer, while the page's rows are checked. A key before which no row can
// sort answers no row without a request.
func (p *pager) startCheck(ctx context.Context, f fetch, cur cursor, n int) func() page {
	q, any, err := f.plan.beforeRequest(cur)
	if err != nil || !any {
		return func() page { return page{err: err} }
	}
	done := make(chan page, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				done <- page{err: recovered(p.log, v, debug.Stack())}
			}
		}()
		done <- p.fetchPage(ctx, f, q, 1, n)
	}()
	return func() page { return <-done }
}

// orderViolation records a page refused by the order checks: a metric and
// a log line for the operator, who alone can tell the upstream changed.
func (p *pager) orderViolation(ctx context.Context, f fetch, err *OrderError) {
	p.obs.OrderViolation(ctx, f.plan.data.label)
	p.log.ErrorContext(ctx, "upstream order inconsistent: paging stopped before the page",
		"dataset", f.plan.data.label, "endpoint", string(f.plan.query.Endpoint),
		"order_by", upstream.FormatOrder(f.plan.query.OrderBy), "page", err.Page, "key", err.Key, "problem", err.Problem)
}

// freeCaps is the row cap of a free target's requests (upstream.IsFree):
// known, and never taught to the key's, which it would shrink for every
// other target.
var freeCaps = upstream.KnownRowCap(upstream.FreeRows)

// capsOf is the row cap a plan's requests are served under.
func (p *pager) capsOf(pl *Plan) *upstream.RowCap {
	if upstream.IsFree(pl.query.Target) {
		return freeCaps
	}
	return p.caps
}

// pageRows is what a page of pl asked for n rows keeps under its learned
// row cap, when it also reads again the reread rows of its continuation:
// n, or what the cap leaves of it beside those and the probe row.
func (p *pager) pageRows(pl *Plan, n, reread int) int {
	if c := p.capsOf(pl).Cap(); c > 0 && reread+n+1 > c {
		return max(1, c-1-reread)
	}
	return n
}

// ceiling is the most rows a request can be served: the learned cap, or
// the size of the run's last page when the cap may have cut it short (if
// the data goes on, that was the cap); 0: no known bound.
func ceiling(caps *upstream.RowCap, suspect int) int {
	c := caps.Cap()
	if suspect > 0 && (c == 0 || suspect < c) {
		c = suspect
	}
	return c
}

func send[T any](ctx context.Context, out chan<- T, v T) bool {
	select {
	case out <- v:
		return true
	case <-ctx.Done():
		return false
	}
}

// fetchPage runs one upstream page through the scheduler: the cache,
// coalescing, the fair queue, the reservation of the most it can cost, the
// request, and the settlement of what the upstream says it cost. n numbers
// the page within its run for its span and its class: the first page of a
// stream is interactive (someone waits for the first rows), the others bulk.
func (p *pager) fetchPage(ctx context.Context, f fetch, q *upstream.PageRequest, limit, n int) (pg page) {
	// The page's span parents the upstream client's HTTP spans and carries
	// its retry events, which the client adds to the span in ctx.
	ctx, pt := p.obs.StartPage(ctx, f.tenant, f.plan.data.label, n)
	var res scheduler.Result
	defer func() { pt.End(ctx, res, len(pg.rows), pg.err) }()
	var err error
	// Follow-on pages of a stream are bulk. They are neither cached nor
	// coalesced: callers ask again for first pages (a UI reloading, two
	// services reading one target), and an export that cached every page
	// would evict those and hold memory growing with its length.
	class, key := scheduler.Interactive, pageKey(q, f.tenant, p.sharedCache)
	if f.bulkFrom > 0 && n >= f.bulkFrom {
		class, key = scheduler.Bulk, ""
	}
	var rows []upstream.Record
	call := scheduler.Call{
		Tenant: f.tenant, Label: f.plan.data.label, Class: class,
		Key:   key,
		Units: f.plan.price(limit),
		Send: func(ctx context.Context) (scheduler.Response, error) {
			if key == "" {
				ctx = upstream.WithoutBody(ctx)
			}
			rows = make([]upstream.Record, 0, limit)
			r, err := p.up.ListPage(ctx, q, func(r upstream.Record) error {
				rows = append(rows, r)
				return nil
			})
			return ResponseOf(r), err
		},
	}
	res, err = p.sched.Do(ctx, call)
	err = panicked(p.log, err)
	pg = page{charged: res.Charged, reserved: res.Reserved, requests: res.Requests, err: err,
		cached: res.Cached || res.Shared || res.UpstreamCached}
	pt.Scheduled(ctx, res, err)
	switch {
	case res.Cached || res.Shared:
		if err == nil {
			if _, derr := q.Decode(bytes.NewReader(res.Body), func(r upstream.Record) error {
				pg.rows = append(pg.rows, r)
				return nil
			}); derr != nil {
				pg.err = derr
			}
		}
	default:
		pg.rows = rows
	}
	pg.remaining = res.Remaining
	if !res.RemainingKnown {
		if u, uerr := p.ledger.Usage(context.WithoutCancel(ctx), f.tenant); uerr == nil {
			pg.remaining = u.Remaining()
		}
	}
	return pg
}

// advance checks a page against the order asked and the rows earlier pages
// returned (see reread and inOrder), drops the rows at its start that those
// pages returned, keeps at most want of the rest, and returns the cursor the
// next page starts from. When the page holds a row beyond those kept (the
// probe row that told rows follow), the cursor starts at that row rather
// than after the last row kept, so the next page's first row is the probe
// and no row is paid for twice.
//
// With align, a page whose probe row shares its first key with the last
// rows kept ends before them instead, when they are few (alignRows): the
// next page then starts at a run of its first key, from that value alone
// (Plan.aligned), and compares no text. Those rows are paid again.
func advance(keys []sortKey, cur cursor, rows []upstream.Record, want int, align bool) ([]upstream.Record, cursor, *OrderError) {
	if err := inOrder(keys, rows); err != nil {
		return nil, cur, err
	}
	skip, err := reread(keys, cur, rows)
	if err != nil {
		return nil, cur, err
	}
	rows = rows[skip:]
	var next upstream.Record
	if len(rows) > want {
		rows, next = rows[:want], rows[want]
	}
	if align && next != nil {
		s := len(rows)
		for s > 0 && rows[s-1][keys[0].col].Equal(next[keys[0].col]) {
			s--
		}
		if 0 < s && s < len(rows) && len(rows)-s <= alignRows(len(rows)) {
			rows, next = rows[:s], rows[s]
		}
	}
	cur = cur.afterAll(keys, rows)
	if next != nil {
		cur = cur.at(keys, next)
	}
	return rows, cur, nil
}

// alignRows is the most rows of a page of n that advance gives back to end
// it at a run of its first key: a sixteenth, so that aligning costs at most
// about as many units more, and usually none (a key that is nearly unique,
// such as a time, ends its runs at almost every row).
func alignRows(n int) int { return max(1, n/16) }

// marks cuts rows, which follow cur, into chunks of size rows (one chunk
// when size is 0) and returns the cursor after each chunk but the last,
// at the first row of the next chunk (checked to come first on resuming),
// and the cursor after the last chunk.
func marks(keys []sortKey, cur cursor, rows []upstream.Record, size int) ([]cursor, cursor) {
	if size <= 0 {
		size = max(1, len(rows))
	}
	var out []cursor
	for len(rows) > size {
		cur = cur.afterAll(keys, rows[:size]).at(keys, rows[size])
		out = append(out, cur)
		rows = rows[size:]
	}
	return out, cur.afterAll(keys, rows)
}

// at is the cursor c moved to row r, which follows it and is not yet
// returned: the next page must start with r, which the checks verify. It
// is at a run of r's first key when the row before it, c's, has another.
func (c cursor) at(keys []sortKey, r upstream.Record) cursor {
	k := keyOf(keys, r)
	if sameKey(k, c.Key) {
		return c
	}
	n := c.moved(k, 0)
	n.Run = c.Key == nil || !sameValue(c.Key[0], k[0])
	return n
}

// after is the cursor just after row r, which follows c.
func (c cursor) after(keys []sortKey, r upstream.Record) cursor {
	k := keyOf(keys, r)
	if c.Key != nil && sameKey(k, c.Key) {
		return cursor{Key: c.Key, Skip: c.Skip + 1, Tail: c.Tail}
	}
	return c.moved(k, 1)
}
