package paging

import (
	"context"
	"slices"

	"github.com/linkgate/linkgate/upstream"
)

// The new/lost dataset is a feed of events, one per change of a link: the
// upstream has no such list, so each kind of change is read as a feed of
// its own (upstream.ChangeFeeds) and the feeds are merged in the caller's
// order. Each feed is keyset-paged like any dataset, with its own cursor;
// a page token carries one cursor per feed, so a page boundary anywhere in
// the merged order neither skips nor repeats an event.

// eventKey is one key of the order of events: a backlink field, change or
// change_time.
type eventKey struct {
	name string
	desc bool
}

// feed is one kind of change with the plan that reads it.
type feed struct {
	cf   upstream.ChangeFeed
	plan *Plan
}

// Event is one row of the merged feed: a change of a link.
type Event struct {
	feed *feed
	// Row is laid out as Layout fetches it.
	Row upstream.Record
}

// Layout is the plan whose upstream query fetched the event's row: what
// its columns are.
func (e Event) Layout() *Plan { return e.feed.plan }

// Change is the kind of change.
func (e Event) Change() upstream.Change { return e.feed.cf.Change }

// Time is when the change happened, if the upstream says.
func (e Event) Time() upstream.Value { return e.value(upstream.ChangeTimeFieldName) }

// value is the event's value for an event key, as sort keys read it.
func (e Event) value(name string) upstream.Value {
	if name == upstream.ChangeFieldName {
		return upstream.IntValue(int64(e.feed.cf.Change))
	}
	field, _ := e.feed.cf.Field(name)
	col := slices.Index(e.feed.plan.query.Select, field)
	if col < 0 {
		return upstream.NullValue()
	}
	return e.Row[col]
}

// before reports whether a comes before b in the order keys.
func before(keys []eventKey, a, b Event) bool {
	for _, k := range keys {
		c := a.value(k.name).Compare(b.value(k.name))
		if k.desc {
			c = -c
		}
		if c != 0 {
			return c < 0
		}
	}
	return false
}

// feedState is where one feed of a run stands: the cursor after the last
// event taken from it, the rows fetched but not yet taken, and whether any
// row follows them.
type feedState struct {
	feed *feed
	cur  cursor
	buf  []upstream.Record
	// next is where the feed's last page goes on (page.next): the cursor
	// once buf is taken, at a run of the first key where the page was
	// aligned (Plan.aligned).
	next cursor
	done bool
	// fetched: a page of this feed was asked for already, so in a stream
	// its next pages are bulk work.
	fetched bool
	// suspect is the size of the feed's last page when the key's row cap
	// may have cut it short (page.suspect): its next request tells.
	suspect int
}

// eventRun merges the feeds of a plan. It fetches a feed only when its
// buffer is empty and the merge needs its next row, so that a run stopped
// after n events has read at most one page per feed beyond them.
type eventRun struct {
	e        *Engine
	pl       *Plan
	tenant   string
	feeds    []*feedState
	maxUnits int64 // 0: no limit
	spent    int64
	cost     Cost // since the last chunk
	// stopped: a feed could not be read within max_units.
	stopped bool
	// firstBulk numbers each feed's first page that is bulk work for the
	// scheduler (Request.firstBulk); 0: none is, as in a List.
	firstBulk int
}

func (e *Engine) newEventRun(r Request, maxUnits int64) *eventRun {
	run := &eventRun{e: e, pl: r.Plan, tenant: r.Tenant, maxUnits: maxUnits}
	for i, f := range r.Plan.feeds {
		fs := &feedState{feed: f}
		if r.From.feeds != nil {
			fs.cur, fs.done = r.From.feeds[i].cursor, r.From.feeds[i].Done
		}
		run.feeds = append(run.feeds, fs)
	}
	return run
}

// fill fetches up to want rows for every feed whose buffer is empty and
// which has rows left: one upstream request each, which also tells whether
// rows follow (one probe row more), so no request is ever made only to
// learn that a feed has ended, unless the key's row cap may have cut the
// feed's last page short.
func (r *eventRun) fill(ctx context.Context, want int) error {
	for _, fs := range r.feeds {
		if len(fs.buf) > 0 || fs.done || r.stopped {
			continue
		}
		var left int64
		if r.maxUnits > 0 {
			if left = r.maxUnits - r.spent; left <= 0 {
				r.stopped = true
				return nil
			}
		}
		bulkFrom := r.firstBulk
		if bulkFrom > 0 && fs.fetched {
			bulkFrom = 1
		}
		fs.fetched = true
		pages, wait := r.e.pager.run(ctx, fetch{plan: fs.feed.plan, tenant: r.tenant, start: fs.cur,
			pageRows: want, maxRows: int64(want), maxUnits: left, bulkFrom: bulkFrom, single: true, short: true, suspect: fs.suspect})
		var err error
		for pg := range pages {
			r.cost.add(pg)
			r.spent += pg.charged
			fs.buf = append(fs.buf, pg.rows...)
			fs.suspect = pg.suspect
			if pg.err == nil {
				fs.next = pg.next
			}
			switch {
			case pg.err != nil:
				err = pg.err
			case pg.end:
				fs.done = true
			case pg.more && len(pg.rows) == 0:
				r.stopped = true // max_units leaves no room for this feed's next page
			}
		}
		wait()
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// next takes the next event in order; ok is false when the feeds have
// ended or a feed could not be read within max_units.
func (r *eventRun) next(ctx context.Context, want int) (ev Event, ok bool, err error) {
	if err := r.fill(ctx, want); err != nil {
		return Event{}, false, err
	}
	var best *feedState
	for _, fs := range r.feeds {
		if len(fs.buf) == 0 {
			if !fs.done {
				return Event{}, false, nil // stopped: its next row is unknown
			}
			continue
		}
		if best == nil || before(r.pl.events, Event{feed: fs.feed, Row: fs.buf[0]}, Event{feed: best.feed, Row: best.buf[0]}) {
			best = fs
		}
	}
	if best == nil {
		return Event{}, false, nil
	}
	row := best.buf[0]
	best.buf = best.buf[1:]
	best.cur = best.cur.after(best.feed.plan.keys, row)
	if len(best.buf) == 0 {
		best.cur = best.next // the same place, where the pager would go on
	}
	return Event{feed: best.feed, Row: row}, true, nil
}

// more reports whether events follow the ones taken.
func (r *eventRun) more() bool {
	for _, fs := range r.feeds {
		if len(fs.buf) > 0 || !fs.done {
			return true
		}
	}
	return false
}

// position is right after the events taken.
func (r *eventRun) position() Position {
	cs := make([]feedCursor, len(r.feeds))
	for i, fs := range r.feeds {
		cur := fs.cur
		if len(fs.buf) > 0 {
			cur = cur.at(fs.feed.plan.keys, fs.buf[0]) // checked to come first on resuming
		}
		cs[i] = feedCursor{cursor: cur, Done: fs.done && len(fs.buf) == 0}
	}
	return Position{feeds: cs}
}

// takeCost returns the cost since the last call, with what is left of the
// budget.
func (r *eventRun) takeCost() Cost {
	c := r.cost
	r.cost = Cost{Remaining: c.Remaining}
	return c
}

// listEvents serves one List page of a merged plan. Under a row cap a
// feed's rows may run out before the page is full: the page reads that
// feed on rather than ending there, as ending would throw away the other
// feeds' rows already paid for.
func (e *Engine) listEvents(ctx context.Context, r Request) (Chunk, error) {
	run := e.newEventRun(r, 0)
	var evs []Event
	for len(evs) < r.PageSize {
		ev, ok, err := run.next(ctx, r.PageSize)
		if err != nil {
			// No event of this call is returned: an order error resumes
			// where the call started.
			e.cfg.Observer.Charged(ctx, run.cost.Units)
			return Chunk{}, err
		}
		if !ok {
			break
		}
		evs = append(evs, ev)
	}
	out := Chunk{Events: evs, Cost: run.takeCost()}
	e.cfg.Observer.Charged(ctx, out.Cost.Units)
	if run.more() {
		out.Token = e.token(r.Plan, run.position())
	}
	return out, nil
}

// merge runs the merge of a stream's feeds in a goroutine and delivers its
// events on the returned channel, one message of PageSize events a batch:
// while the driver sends a message, the next is being merged and its
// pages fetched. The channel holds one batch, so memory stays bounded by
// a page per feed and a few messages. It is closed after the last batch;
// cancelling ctx stops the merge at once.
func (e *Engine) merge(ctx context.Context, r Request) (<-chan batch, func()) {
	return ahead(ctx, e.cfg.Logger, func(out chan<- batch) {
		run := e.newEventRun(r, r.MaxUnits)
		run.firstBulk = r.firstBulk()
		var taken int64
		produced := false
		for {
			var evs []Event
			ok := true
			for len(evs) < r.PageSize && (r.MaxRows == 0 || taken < r.MaxRows) {
				want := e.cfg.UpstreamPageRows
				if r.MaxRows > 0 {
					want = int(min(int64(want), r.MaxRows-taken))
				}
				var ev Event
				var err error
				if ev, ok, err = run.next(ctx, want); err != nil {
					b := batch{cost: run.takeCost(), err: err, resume: run.position(), resumed: true}
					if len(evs) > 0 {
						b.chunks = []chunkAt{{events: evs, pos: b.resume}}
					}
					send(ctx, out, b)
					return
				}
				if !ok {
					break
				}
				evs = append(evs, ev)
				taken++
			}
			last := !ok || (r.MaxRows > 0 && taken >= r.MaxRows) || !run.more()
			if len(evs) > 0 || !produced || last {
				// The message's token is where the merge stands: after
				// its events, at the next row of each feed.
				b := batch{cost: run.takeCost(), end: !run.more(), chunks: []chunkAt{{events: evs, pos: run.position()}}}
				if !send(ctx, out, b) {
					return
				}
				produced = true
			}
			if last {
				return
			}
		}
	}, func(err error) batch { return batch{err: err} })
}
