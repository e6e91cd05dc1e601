package service

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/upstream"
)

// Ledger is the part of the quota ledger the service spends through.
type Ledger interface {
	Reserve(ctx context.Context, tenant, label string, units int64) (quota.Reservation, error)
	Settle(ctx context.Context, r quota.Reservation, actual int64) error
	Release(ctx context.Context, r quota.Reservation) error
	Usage(ctx context.Context, tenant string) (quota.Usage, error)
}

// Upstream is the part of the upstream client the service calls.
type Upstream interface {
	ListRecords(ctx context.Context, q *upstream.Query, fn func(upstream.Record) error) (upstream.Result, error)
	BacklinksStats(ctx context.Context, q upstream.StatsQuery) (upstream.Stats, upstream.Cost, error)
}

// fetch is one run of the pager: where it starts and when it stops.
type fetch struct {
	plan   *plan
	tenant string
	start  cursor
	// pageRows is the number of new rows asked of the upstream per request.
	pageRows int
	// maxRows and maxUnits stop the run; 0 means no limit. When maxRows
	// stops it, one extra row is asked for to tell whether more remain.
	maxRows, maxUnits int64
}

// page is one upstream response, without the rows an earlier page returned.
type page struct {
	rows     []upstream.Record
	charged  int64 // units settled for this page
	cached   bool
	requests int // HTTP requests sent upstream, retries included
	// remaining is what is left of the caller's budget after this page.
	remaining int64
	// end: no row follows these. more: rows follow but the run stopped at
	// max_rows or max_units. Neither: the run goes on.
	end, more bool
	err       error
}

// pager fetches the pages of a run.
type pager struct {
	up     Upstream
	ledger Ledger
	cache  *pageCache // nil: no cache
	tel    *Telemetry
	log    *slog.Logger
}

// run fetches pages in a goroutine and delivers them on the returned
// channel, which holds one page: while the caller sends a page downstream
// the next one is fetched, and memory stays bounded by about three pages
// whatever the size of the result. The channel is closed after the last
// page; cancelling ctx stops the run at once. wait returns when the
// goroutine has finished, with every reservation settled or released.
func (p *pager) run(ctx context.Context, f fetch) (pages <-chan page, wait func()) {
	ch := make(chan page, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		// This goroutine is outside the handler's recovery: a panic here
		// would end the process. It ends the request instead.
		defer func() {
			if v := recover(); v != nil {
				send(ctx, ch, page{err: recovered(p.log, "pager", v)})
			}
		}()
		p.loop(ctx, f, ch)
	}()
	return ch, wg.Wait
}

func (p *pager) loop(ctx context.Context, f fetch, out chan<- page) {
	cur := f.start
	perRow := f.plan.perRow()
	var got, spent int64
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
		if f.maxUnits > 0 {
			// The page costs max(50, perRow × rows); shrink it to what is
			// left of max_units, and stop when even the floor is too much.
			affordable := (f.maxUnits-spent)/int64(perRow) - int64(cur.Skip) - int64(probe)
			if affordable < want {
				want, probe = affordable, 0
			}
			if upstream.Units(perRow, cur.Skip+int(want)+probe) > f.maxUnits-spent {
				want = 0
			}
		}
		if want <= 0 {
			send(ctx, out, page{more: true})
			return
		}
		limit := cur.Skip + int(want) + probe
		pg := p.fetchPage(ctx, f, cur, limit, n)
		spent += pg.charged
		if pg.err == nil || len(pg.rows) > 0 {
			pg.rows, cur = advance(f.plan.keys, cur, pg.rows, int(want))
			got += int64(len(pg.rows))
		}
		if pg.err == nil && !pg.end && probe == 1 && last {
			pg.more = true // the probe row came back: rows remain after max_rows
		}
		if !send(ctx, out, pg) || pg.err != nil || pg.end || pg.more {
			return
		}
	}
}

func send(ctx context.Context, out chan<- page, pg page) bool {
	select {
	case out <- pg:
		return true
	case <-ctx.Done():
		return false
	}
}

// fetchPage reserves the most a page can cost, fetches it and settles what
// the upstream says it cost. Ledger calls run without the caller's
// cancellation so that a caller who goes away never leaves units reserved.
// n numbers the page within its run for its span.
func (p *pager) fetchPage(ctx context.Context, f fetch, cur cursor, limit, n int) (pg page) {
	// The page's span parents the upstream client's HTTP spans and carries
	// its retry and rate-limit events, which the client adds to the span
	// in ctx.
	ctx, pt := p.tel.startPage(ctx, f, n)
	var result upstream.Result
	defer func() { pt.end(ctx, pg, result) }()
	q := f.plan.pageQuery(cur, limit)
	ledgerCtx := context.WithoutCancel(ctx)
	key, cacheable := pageKey(q)
	if rows, ok := p.cache.get(key); cacheable && ok {
		pt.servedFromCache()
		pg = page{rows: rows, cached: true, end: len(rows) < limit}
		if u, err := p.ledger.Usage(ledgerCtx, f.tenant); err == nil {
			pg.remaining = remaining(u)
		}
		return pg
	}
	estimate := upstream.Units(f.plan.perRow(), limit)
	res, err := p.ledger.Reserve(ledgerCtx, f.tenant, f.plan.data.label, estimate)
	if err != nil {
		pt.denied(ctx, estimate, err)
		return page{err: err}
	}
	pt.reserved(ctx, res.Units)
	defer func() {
		if v := recover(); v != nil {
			// A panic after the reservation: the request may have left, so
			// it is charged in full now, as its lease would, never under-
			// counted; the pager goroutine's recovery ends the request.
			p.ledger.Settle(ledgerCtx, res, res.Units)
			panic(v)
		}
	}()
	rows := make([]upstream.Record, 0, limit)
	result, err = p.up.ListRecords(ctx, q, func(r upstream.Record) error {
		rows = append(rows, r)
		return nil
	})
	pg = page{rows: rows, err: err, end: err == nil && len(rows) < limit, requests: result.Attempts}
	var finish error
	released := false
	switch {
	case result.Cost.Known || result.Spent > 0:
		pg.charged = result.Spent
		pg.cached = result.Cost.Cache == "hit"
		finish = p.ledger.Settle(ledgerCtx, res, pg.charged)
	case result.Attempts > 0 && !answered(err):
		// The request left but no answer came back (the caller went away,
		// or the connection broke): the upstream may have charged it.
		// Charge the reservation in full, as its lease would, so that spend
		// is never under-counted.
		pg.charged = res.Units
		finish = p.ledger.Settle(ledgerCtx, res, res.Units)
	default:
		finish = p.ledger.Release(ledgerCtx, res)
		released = true
	}
	if finish == nil {
		pt.settled(ctx, res.Units, pg.charged, released)
	} else if pg.err == nil {
		pg.err = finish
	}
	if pg.err == nil && cacheable {
		p.cache.put(key, rows)
	}
	if u, uerr := p.ledger.Usage(ledgerCtx, f.tenant); uerr == nil {
		pg.remaining = remaining(u)
	}
	return pg
}

// answered reports whether a failed call got an HTTP status back: an
// upstream that answers with an error charges nothing.
func answered(err error) bool {
	var apiErr *upstream.APIError
	return errors.As(err, &apiErr) && apiErr.Status != 0
}

// advance drops the rows at the start of a page that earlier pages already
// returned (the first cur.Skip rows at key cur.Key), keeps at most want of
// the rest, and returns the cursor the next page starts from. When the page
// holds a row beyond those kept (the probe row that told rows follow), the
// cursor starts at that row rather than after the last row kept, so the
// next page's first row is the probe and no row is paid for twice.
func advance(keys []sortKey, cur cursor, rows []upstream.Record, want int) ([]upstream.Record, cursor) {
	skip := 0
	for skip < len(rows) && skip < cur.Skip && sameKey(keyOf(keys, rows[skip]), cur.Key) {
		skip++
	}
	rows = rows[skip:]
	var next upstream.Record
	if len(rows) > want {
		rows, next = rows[:want], rows[want]
	}
	cur = cur.afterAll(keys, rows)
	if next != nil {
		if k := keyOf(keys, next); !sameKey(k, cur.Key) {
			cur = cursor{Key: k}
		}
	}
	return rows, cur
}

// after is the cursor just after row r, which follows c.
func (c cursor) after(keys []sortKey, r upstream.Record) cursor {
	k := keyOf(keys, r)
	if c.Key != nil && sameKey(k, c.Key) {
		return cursor{Key: c.Key, Skip: c.Skip + 1}
	}
	return cursor{Key: k, Skip: 1}
}
