package service

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/service/filter"
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

// eventTieBreakers make the event order total: a link is unique by
// (url_from, url_to), and has at most one event of each change.
var eventTieBreakers = []string{"url_from", "url_to", upstream.ChangeFieldName}

// feed is one kind of change with the plan that reads it.
type feed struct {
	cf   upstream.ChangeFeed
	plan *plan
}

// compileNewLost checks a new/lost request and plans one upstream reading
// per kind of change that the request (changes, filter) can match.
func compileNewLost(p params, tenant string) (*plan, error) {
	d := newLostData
	events := upstream.NewLostSchema()
	links := upstream.MustSchema(d.endpoint)
	pl := &plan{data: d}
	if strings.TrimSpace(p.Target) == "" {
		return nil, badField("target", "is required: a domain or URL")
	}
	// change and change_time are in every row; naming them selects nothing.
	var names []string
	for _, item := range p.Select {
		for _, name := range strings.Split(item, ",") {
			if n := strings.TrimSpace(name); n != upstream.ChangeFieldName && n != upstream.ChangeTimeFieldName {
				names = append(names, n)
			}
		}
	}
	sel, err := selection(links, names, d.defaultSelect)
	if err != nil {
		return nil, err
	}
	pl.selected = sel
	if pl.filter, err = filter.Compile(p.Filter, events); err != nil {
		return nil, err
	}
	order, err := upstream.ParseOrder(p.OrderBy)
	if err != nil {
		return nil, upstreamInvalid(err)
	}
	for _, o := range order {
		f, ok := events.Field(o.Field)
		if !ok {
			return nil, badField("order_by", "field %q: %s", o.Field, unknownFieldHint(events, o.Field, d.label))
		}
		if !f.Order {
			return nil, badField("order_by", "field %q: cannot be used to order %s", o.Field, d.label)
		}
		if slices.ContainsFunc(pl.events, func(k eventKey) bool { return k.name == o.Field }) {
			return nil, badField("order_by", "field %q: appears twice", o.Field)
		}
		pl.events = append(pl.events, eventKey{name: o.Field, desc: o.Desc})
	}
	ties := eventTieBreakers
	if p.Aggregation == upstream.AggregationOnePerDomain {
		ties = append([]string{upstream.DomainKeyField}, ties...)
	}
	for _, name := range ties {
		if !slices.ContainsFunc(pl.events, func(k eventKey) bool { return k.name == name }) {
			pl.events = append(pl.events, eventKey{name: name})
			if name != upstream.ChangeFieldName {
				pl.tieBreakerFields = append(pl.tieBreakerFields, name)
			}
		}
	}
	since, err := time.Parse(time.DateOnly, p.Since)
	if err != nil {
		return nil, badField("since", "needs a date YYYY-MM-DD, got %q", p.Since)
	}
	var until time.Time
	if p.Until != "" {
		if until, err = time.Parse(time.DateOnly, p.Until); err != nil {
			return nil, badField("until", "needs a date YYYY-MM-DD, got %q", p.Until)
		}
		if !until.After(since) {
			return nil, badField("until", "must be after since (%s), got %s: the window is [since, until)", p.Since, p.Until)
		}
	}
	for _, cf := range upstream.ChangeFeeds {
		if (p.Changes == ChangesNew && cf.Change != upstream.ChangeNew) || (p.Changes == ChangesLost && cf.Change != upstream.ChangeLost) {
			continue
		}
		where, matches, err := cf.Bind(pl.filter)
		if err != nil {
			return nil, upstreamInvalid(err)
		}
		if !matches {
			continue // the filter excludes this kind of change: nothing to read
		}
		fp := &plan{data: d, selected: sel}
		for _, k := range pl.events {
			name, ok := cf.Field(k.name)
			if !ok {
				continue
			}
			f, _ := links.Field(name)
			if !slices.ContainsFunc(fp.keys, func(s sortKey) bool { return s.field == f }) {
				fp.keys = append(fp.keys, sortKey{field: f, desc: k.desc})
			}
		}
		fp.query = upstream.Query{
			Endpoint:    d.endpoint,
			Target:      strings.TrimSpace(p.Target),
			Mode:        p.Mode,
			Protocol:    p.Protocol,
			Select:      fetched(fp, cf.Fields()...),
			Where:       andWhere(where, cf.Window(since, until)),
			Aggregation: p.Aggregation,
			History:     cf.History(since),
		}
		for i, k := range fp.keys {
			fp.query.OrderBy = append(fp.query.OrderBy, upstream.Order{Field: k.field.Name, Desc: k.desc})
			fp.keys[i].col = slices.Index(fp.query.Select, k.field.Name)
		}
		if err := checkAggregation(fp, p.Aggregation); err != nil {
			return nil, err
		}
		if err := fp.query.Validate(); err != nil {
			return nil, upstreamInvalid(err)
		}
		pl.feeds = append(pl.feeds, &feed{cf: cf, plan: fp})
	}
	pl.fingerprint = fingerprint(d, p, sel, tenant)
	for _, f := range pl.feeds {
		f.plan.fingerprint = pl.fingerprint
	}
	return pl, nil
}

// event is one row of the merged feed.
type event struct {
	feed *feed
	row  upstream.Record // laid out as the feed's plan fetches it
}

// value is the event's value for an event key, as sort keys read it.
func (e event) value(name string) upstream.Value {
	if name == upstream.ChangeFieldName {
		return upstream.IntValue(int64(e.feed.cf.Change))
	}
	field, _ := e.feed.cf.Field(name)
	col := slices.Index(e.feed.plan.query.Select, field)
	if col < 0 {
		return upstream.NullValue()
	}
	return e.row[col]
}

// before reports whether a comes before b in the order keys.
func before(keys []eventKey, a, b event) bool {
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
	s        *BacklinksServer
	pl       *plan
	tenant   string
	feeds    []*feedState
	maxUnits int64 // 0: no limit
	spent    int64
	cost     *v1.PageCost // since the last message
	// stopped: a feed could not be read within max_units.
	stopped bool
	// stream: the run serves a stream, whose pages after each feed's first
	// are bulk work for the scheduler.
	stream bool
}

func (s *BacklinksServer) newEventRun(pl *plan, tenant string, start []feedCursor, maxUnits int64) *eventRun {
	r := &eventRun{s: s, pl: pl, tenant: tenant, maxUnits: maxUnits, cost: &v1.PageCost{}}
	for i, f := range pl.feeds {
		fs := &feedState{feed: f}
		if start != nil {
			fs.cur, fs.done = start[i].cursor, start[i].Done
		}
		r.feeds = append(r.feeds, fs)
	}
	return r
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
		bulkFrom := 0
		if r.stream {
			bulkFrom = 2
			if fs.fetched {
				bulkFrom = 1
			}
		}
		fs.fetched = true
		pages, wait := r.s.pager.run(ctx, fetch{plan: fs.feed.plan, tenant: r.tenant, start: fs.cur,
			pageRows: want, maxRows: int64(want), maxUnits: left, bulkFrom: bulkFrom, single: true, suspect: fs.suspect})
		var err error
		for pg := range pages {
			addCost(r.cost, pg)
			r.spent += pg.charged
			r.s.cfg.Telemetry.sent(ctx, r.tenant, r.pl.data.label, 0, pg.charged)
			fs.buf = append(fs.buf, pg.rows...)
			fs.suspect = pg.suspect
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
func (r *eventRun) next(ctx context.Context, want int) (ev event, ok bool, err error) {
	if err := r.fill(ctx, want); err != nil {
		return event{}, false, err
	}
	var best *feedState
	for _, fs := range r.feeds {
		if len(fs.buf) == 0 {
			if !fs.done {
				return event{}, false, nil // stopped: its next row is unknown
			}
			continue
		}
		if best == nil || before(r.pl.events, event{feed: fs.feed, row: fs.buf[0]}, event{feed: best.feed, row: best.buf[0]}) {
			best = fs
		}
	}
	if best == nil {
		return event{}, false, nil
	}
	row := best.buf[0]
	best.buf = best.buf[1:]
	best.cur = best.cur.after(best.feed.plan.keys, row)
	return event{feed: best.feed, row: row}, true, nil
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

// token resumes right after the events taken.
func (r *eventRun) token() string {
	cs := make([]feedCursor, len(r.feeds))
	for i, fs := range r.feeds {
		cur := fs.cur
		if len(fs.buf) > 0 {
			cur = cur.at(fs.feed.plan.keys, fs.buf[0]) // checked to come first on resuming
		}
		cs[i] = feedCursor{cursor: cur, Done: fs.done && len(fs.buf) == 0}
	}
	t, _ := r.s.cfg.Tokens.EncodeFeeds(r.pl.fingerprint, cs)
	return t
}

// takeCost returns the cost since the last call, with what is left of the
// budget.
func (r *eventRun) takeCost() *v1.PageCost {
	c := r.cost
	r.cost = &v1.PageCost{RemainingUnits: c.RemainingUnits}
	return c
}

// prepareEvents validates a new/lost request and decodes its token.
func (s *BacklinksServer) prepareEvents(ctx context.Context, req listRequest, defaultSize int) (*prepared, []feedCursor, error) {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return nil, nil, status.Error(codes.Unauthenticated, "no caller")
	}
	pl, err := compile(newLostData, paramsOf(req), caller.Tenant)
	if err != nil {
		return nil, nil, toStatus(err, "")
	}
	size, err := pageSize(req.GetPageSize(), defaultSize)
	if err != nil {
		return nil, nil, toStatus(err, "")
	}
	var start []feedCursor
	if tok := req.GetPageToken(); tok != "" {
		keys := make([][]sortKey, len(pl.feeds))
		for i, f := range pl.feeds {
			keys[i] = f.plan.keys
		}
		if start, err = s.cfg.Tokens.DecodeFeeds(tok, pl.fingerprint, keys); err != nil {
			return nil, nil, toStatus(err, "")
		}
	}
	return &prepared{plan: pl, tenant: caller.Tenant, pageSize: size}, start, nil
}

// eventRows converts events to rows with the caller's fields.
func eventRows(pl *plan, evs []event) ([]*v1.NewLostBacklink, error) {
	out := make([]*v1.NewLostBacklink, len(evs))
	for i, ev := range evs {
		// The feed's plan: its records are laid out as it fetched them.
		links, err := rowsOf[v1.Backlink](ev.feed.plan, []upstream.Record{ev.row})
		if err != nil {
			return nil, err
		}
		nl := &v1.NewLostBacklink{Backlink: links[0], Change: v1.Change_CHANGE_NEW}
		if ev.feed.cf.Change == upstream.ChangeLost {
			nl.Change = v1.Change_CHANGE_LOST
		}
		if t := ev.value(upstream.ChangeTimeFieldName); t.Valid() {
			nl.ChangeTime = timestamppb.New(t.Time())
		}
		out[i] = nl
	}
	return out, nil
}

// ListNewLostBacklinks returns one page of the changes of backlinks in a
// window.
func (s *BacklinksServer) ListNewLostBacklinks(ctx context.Context, req *v1.ListNewLostBacklinksRequest) (*v1.ListNewLostBacklinksResponse, error) {
	pr, start, err := s.prepareEvents(ctx, req, DefaultListPageSize)
	if err != nil {
		return nil, err
	}
	// Under a row cap a feed's rows may run out before the page is full:
	// the page reads that feed on rather than ending there, as ending
	// would throw away the other feeds' rows already paid for.
	run := s.newEventRun(pr.plan, pr.tenant, start, 0)
	var evs []event
	for len(evs) < pr.pageSize {
		ev, ok, err := run.next(ctx, pr.pageSize)
		if err != nil {
			// No event of this call is returned: an order error resumes
			// where the call started.
			var oerr *orderError
			if errors.As(err, &oerr) {
				return nil, toStatus(err, req.GetPageToken())
			}
			return nil, toStatus(err, "")
		}
		if !ok {
			break
		}
		evs = append(evs, ev)
	}
	rows, err := eventRows(pr.plan, evs)
	if err != nil {
		return nil, err
	}
	s.cfg.Telemetry.sent(ctx, pr.tenant, pr.plan.data.label, len(rows), 0)
	resp := &v1.ListNewLostBacklinksResponse{NewLostBacklinks: rows, Cost: run.takeCost()}
	if run.more() {
		resp.NextPageToken = run.token()
	}
	return resp, nil
}

// StreamNewLostBacklinks streams the changes of backlinks in a window.
func (s *BacklinksServer) StreamNewLostBacklinks(req *v1.StreamNewLostBacklinksRequest, srv grpc.ServerStreamingServer[v1.StreamNewLostBacklinksResponse]) error {
	ctx := srv.Context()
	pr, start, err := s.prepareEvents(ctx, req, DefaultStreamPageSize)
	if err != nil {
		return err
	}
	if err := checkStreamBounds(req); err != nil {
		return err
	}
	defer s.cfg.Telemetry.streamStarted(ctx, pr.plan.data.label)()
	runCtx, ended, stop := s.streamRun(ctx)
	defer stop()
	run := s.newEventRun(pr.plan, pr.tenant, start, req.GetMaxUnits())
	run.stream = true
	maxRows := req.GetMaxRows()
	var taken int64
	sent := false
	for {
		var evs []event
		ok := true
		for len(evs) < pr.pageSize && (maxRows == 0 || taken < maxRows) {
			want := s.cfg.UpstreamPageRows
			if maxRows > 0 {
				want = int(min(int64(want), maxRows-taken))
			}
			var ev event
			ev, ok, err = run.next(runCtx, want)
			if err != nil {
				return s.sendEvents(srv, pr.plan, evs, run, &sent, ended(err, sent || len(evs) > 0))
			}
			if !ok {
				break
			}
			evs = append(evs, ev)
			taken++
		}
		last := !ok || (maxRows > 0 && taken >= maxRows) || !run.more()
		if len(evs) > 0 || !sent || last {
			if err := s.sendEvents(srv, pr.plan, evs, run, &sent, nil); err != nil {
				return err
			}
		}
		if last {
			return nil
		}
	}
}

// sendEvents sends one stream message with its token (none at the end of
// the data); with cause, it sends what was taken and ends the stream with
// that error and the token to resume after the last event sent.
func (s *BacklinksServer) sendEvents(srv grpc.ServerStreamingServer[v1.StreamNewLostBacklinksResponse], pl *plan, evs []event, run *eventRun, sent *bool, cause error) error {
	if len(evs) > 0 || cause == nil {
		rows, err := eventRows(pl, evs)
		if err != nil {
			return err
		}
		msg := &v1.StreamNewLostBacklinksResponse{NewLostBacklinks: rows, Cost: run.takeCost()}
		if run.more() {
			msg.NextPageToken = run.token()
		}
		if err := srv.Send(msg); err != nil {
			return err
		}
		s.cfg.Telemetry.sent(srv.Context(), run.tenant, pl.data.label, len(rows), 0)
		*sent = true
	}
	if cause != nil {
		return toStatus(cause, run.token())
	}
	return nil
}
