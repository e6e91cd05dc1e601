package paging

import (
	"github.com/linkgate/linkgate/scheduler"
	"github.com/linkgate/linkgate/upstream"
)

// The cost model of paging, which the page loop, the merge of feeds and
// Estimate all use: a request of n rows costs max(50, per-row units × n)
// (upstream.Units), every page asks for one probe row more than it keeps,
// which the next page starts with, and a page continued by a where that
// compares text costs one one-row request more, which checks its boundary
// (unless Config.TrustCollation).

// Cost is what the pages behind a List page or a stream message cost.
type Cost struct {
	Units    int64 // charged
	Cached   bool  // a page came from a cache
	Requests int   // HTTP requests sent upstream, retries included
	// Remaining is what is left of the caller's budget after the pages.
	Remaining int64
}

func (c *Cost) add(pg page) {
	c.Units += pg.charged
	c.Cached = c.Cached || pg.cached
	c.Requests += pg.requests
	c.Remaining = pg.remaining
}

// price is what one request of rows rows of the plan costs.
func (pl *Plan) price(rows int) int64 { return upstream.Units(pl.perRowUnits, rows) }

// affordable is the most rows a request of the plan may ask within units,
// before the 50-unit floor (see price).
func (pl *Plan) affordable(units int64) int64 { return units / int64(pl.perRowUnits) }

// pagedCost is what reading rows rows costs and how many upstream requests
// it makes, in pages of size rows, by stream or by List. Every page asks for
// one row more than it keeps, which tells whether the data goes on (so the
// end never costs a request of its own); the next page, or the page a token
// resumes, starts at that row, so it is not paid twice. It is closed-form,
// so any rows costs the same few operations. checked: the pages' boundaries
// are checked (not Config.TrustCollation, nor pages aligned on a first key).
func (pl *Plan) pagedCost(rows int64, size int, checked bool) (units, pages int64) {
	if rows <= 0 || size <= 0 {
		return 0, 0
	}
	n := int64(size)
	pages = (rows + n - 1) / n
	last := rows - (pages-1)*n
	units = (pages-1)*pl.price(int(n+1)) + pl.price(int(last+1))
	if checked && pl.back != nil {
		// Every page after the first checks its boundary with a one-row
		// request after it (beforeCheck).
		units += (pages - 1) * pl.price(1)
	}
	return units, pages
}

// ResponseOf is what the scheduler needs to know of a paid upstream call,
// a page or stats alike: what it charged across its attempts, whether the
// upstream said so, and how many requests it took.
func ResponseOf(r upstream.Result) scheduler.Response {
	return scheduler.Response{
		Body: r.Body, Charged: r.Spent, Reported: r.Cost.Known || r.Spent > 0,
		Unanswered: r.Unanswered, UpstreamCached: r.Cost.CacheHit(), Requests: r.Attempts,
	}
}
