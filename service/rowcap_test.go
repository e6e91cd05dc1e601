package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
)

// simCap is the rows per request the capped simulator serves: not a
// published plan's figure, so nothing can lean on knowing the plans.
const simCap = 300

// capCase is one request of one dataset, read whole.
type capCase struct {
	name string
	q    query       // the link datasets
	ev   *eventQuery // new/lost
}

var capCases = []capCase{
	{name: "backlinks", q: query{data: paging.Backlinks, p: paging.Params{Target: "sized-2500.example"}}},
	{name: "refdomains", q: query{data: paging.RefDomains, p: paging.Params{Target: "sized-3000.example", OrderBy: "domain_rating:desc"}}},
	{name: "broken_backlinks", q: query{data: paging.BrokenBacklinks, p: paging.Params{Target: "sized-10000.example"}}},
	{name: "new_lost", ev: &eventQuery{target: "sized-2500.example", since: "2014-01-01", order: "change_time:desc"}},
	// The data ends exactly at the cap, and exactly at two pages of it.
	{name: "backlinks_300", q: query{data: paging.Backlinks, p: paging.Params{Target: "sized-300.example"}}},
	{name: "backlinks_598", q: query{data: paging.Backlinks, p: paging.Params{Target: "sized-598.example", OrderBy: "domain_rating_source:desc"}}},
}

// newCapHarness is a harness whose every request reaches the upstream
// (no page cache, no upstream cache), so that units compare run to run.
func newCapHarness(t *testing.T, pageRows, rowCap int) *harness {
	h := newHarness(t, harnessOptions{pageRows: pageRows, rowCap: rowCap, noCache: true})
	h.sim.SetCacheTTL(-1)
	return h
}

// spend is what an operation cost upstream.
type spend struct{ units, requests int64 }

func (h *harness) spent(f func()) spend {
	u, r := h.sim.Usage(), h.sim.Requests()
	f()
	return spend{h.sim.Usage() - u, h.sim.Requests() - r}
}

// readStream reads a case by one Stream, or by streams bounded by max_rows
// or max_units, each resumed from the last one's token, to the end.
func (h *harness) readStream(t *testing.T, c capCase, maxRows, maxUnits int64) []string {
	t.Helper()
	var ids []string
	token := ""
	for range 1000 {
		var last string
		if c.ev != nil {
			q := *c.ev
			q.maxRows, q.maxUnits = maxRows, maxUnits
			msgs, tokens, err := h.streamEvents(q, token)
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			for _, m := range msgs {
				ids = append(ids, m...)
			}
			last = tokens[len(tokens)-1]
		} else {
			q := c.q.withIdentity()
			q.token, q.maxRows, q.maxUnits = token, maxRows, maxUnits
			pages, err := h.stream(context.Background(), q)
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			ids = append(ids, flatten(pages)...)
			last = pages[len(pages)-1].token
		}
		if last == "" {
			return ids
		}
		if maxRows == 0 && maxUnits == 0 {
			t.Fatal("a stream without bounds ended with a token")
		}
		token = last
	}
	t.Fatal("the stream never ended")
	return nil
}

// readList reads a case by List calls of size rows, following tokens.
func (h *harness) readList(t *testing.T, c capCase, size int32) []string {
	t.Helper()
	if c.ev != nil {
		q := *c.ev
		q.pageSize = size
		ids, _ := h.listEvents(t, q)
		return ids
	}
	q := c.q.withIdentity()
	q.pageSize = size
	return h.listAll(t, q)
}

// TestRowCapLosesNoRow: a key whose plan serves at most 300 rows per
// request, whatever it is asked, still gets every row of every dataset
// exactly once and in order, by Stream (whole, and in pieces bounded by
// max_rows or max_units, resumed by token) and by List with tokens, with upstream pages below, at
// and above the cap. The rows are compared with the same reading of an
// uncapped key; so are the units, and the overhead is logged: the
// figures for the cap unknown (a fresh process) and learned.
func TestRowCapLosesNoRow(t *testing.T) {
	pageRows := []int{100, simCap - 1, simCap, simCap + 1, 1000}
	if testing.Short() {
		pageRows = []int{simCap, 1000}
	}
	var total [2]spend // uncapped, capped
	for _, pageRows := range pageRows {
		t.Run(fmt.Sprintf("page_rows=%d", pageRows), func(t *testing.T) {
			for _, c := range capCases {
				t.Run(c.name, func(t *testing.T) {
					free, capped := newCapHarness(t, pageRows, 0), newCapHarness(t, pageRows, simCap)
					var want []string
					wantSpend := free.spent(func() { want = free.readStream(t, c, 0, 0) })
					if len(want) == 0 {
						t.Fatal("no rows: the case tests nothing")
					}
					same := func(what string, got []string) {
						t.Helper()
						if !slices.Equal(got, want) {
							t.Fatalf("%s: %d rows, want %d; first difference at %d", what, len(got), len(want), firstDiff(got, want))
						}
					}
					// A capped page re-reads one row (its probe, or the
					// continuation's last key), and a short page as long as
					// the cap may take one confirming request: 50 units, the
					// floor, as it finds nothing new. Capped pages are more
					// pages, and each page continued by a where that compares
					// text has its boundary checked: every request more than
					// uncapped may cost the floor.
					perRow := int64(c.perRow(t))
					cost := func(what string, s, base spend) {
						t.Helper()
						t.Logf("%-26s %7d units in %3d requests, uncapped %7d in %3d: overhead %+5d units (%+.2f%%)",
							what, s.units, s.requests, base.units, base.requests, s.units-base.units,
							100*float64(s.units-base.units)/float64(base.units))
						total[0].units += base.units
						total[1].units += s.units
						if bound := base.units + perRow*s.requests + 50*max(1, s.requests-base.requests); s.units > bound {
							t.Errorf("%s cost %d units, more than %d: the uncapped %d, a row per request and the floor per request more", what, s.units, bound, base.units)
						}
					}
					var got []string
					s := capped.spent(func() { got = capped.readStream(t, c, 0, 0) })
					same("stream, cap unknown", got)
					cost("stream, cap unknown", s, wantSpend)
					// A stream that met the cap and had rows after it taught
					// the cap; one of pages below the cap never met it. A
					// page asks its rows and a probe row, which the next
					// page, of a dataset or of a new/lost feed, starts with.
					asked := pageRows + 1
					learned := 0
					if asked > simCap && len(want) > simCap {
						learned = simCap
					}
					if c := capped.server.cfg.RowCap.Cap(); c != learned {
						t.Errorf("after one stream the learned cap is %d, want %d", c, learned)
					}
					s = capped.spent(func() { got = capped.readStream(t, c, 0, 0) })
					same("stream, cap learned", got)
					cost("stream, cap learned", s, wantSpend)
					if pageRows < simCap && s != wantSpend {
						t.Errorf("pages of %d rows never meet the cap, yet the capped stream spent %+v, the uncapped %+v", pageRows, s, wantSpend)
					}
					same("streams of max_rows 450", capped.readStream(t, c, 450, 0))
					same("streams of max_units 2500", capped.readStream(t, c, 0, 2500))
					for _, size := range []int32{100, simCap, MaxPageSize} {
						what := fmt.Sprintf("List of page_size %d", size)
						base := free.spent(func() { got = free.readList(t, c, size) })
						same(what+", uncapped", got)
						s := capped.spent(func() { got = capped.readList(t, c, size) })
						same(what, got)
						cost(what, s, base)
					}
				})
			}
		})
	}
	t.Logf("all readings: uncapped %d units, capped %d: overhead %+.2f%%",
		total[0].units, total[1].units, 100*float64(total[1].units-total[0].units)/float64(total[0].units))
}

// perRow is the per-row cost of the case's upstream pages (the largest of
// new/lost's two feeds).
func (c capCase) perRow(t *testing.T) int {
	t.Helper()
	if c.ev == nil {
		pl, err := paging.Compile(c.q.data, c.q.withIdentity().p, DefaultTenant)
		if err != nil {
			t.Fatal(err)
		}
		q := pl.Query()
		return q.PerRowCost()
	}
	pl, err := paging.Compile(paging.NewLost, paging.Params{Target: c.ev.target, Since: c.ev.since, OrderBy: c.ev.order,
		Select: []string{"url_from", "url_to"}}, DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range pl.Layouts() {
		q := f.Query()
		n = max(n, q.PerRowCost())
	}
	return n
}

// TestRowCapListPage: a List page under a cap is what one upstream request
// served, with a token for the rest, never the end; once a stream has
// learned the cap, pages are asked at it and a full one still carries its
// probe row, so the page after the last needs no request of its own.
func TestRowCapListPage(t *testing.T) {
	h := newCapHarness(t, 1000, simCap)
	list := func(token string) (*v1.ListBacklinksResponse, int64) {
		before := h.sim.Requests()
		r, err := h.backlinks.ListBacklinks(context.Background(), &v1.ListBacklinksRequest{Target: "sized-2500.example",
			PageSize: MaxPageSize, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		return r, h.sim.Requests() - before
	}
	r, n := list("")
	if len(r.GetBacklinks()) != simCap || r.GetNextPageToken() == "" || n != 1 {
		t.Fatalf("List of %d under a %d cap, the cap unknown: %d rows, token %q, %d requests; want %d rows, a token, 1 request",
			MaxPageSize, simCap, len(r.GetBacklinks()), r.GetNextPageToken(), n, simCap)
	}
	if c := h.server.cfg.RowCap.Cap(); c != 0 {
		t.Fatalf("one short page taught the cap %d: it may have been the end", c)
	}
	st, err := h.backlinks.StreamBacklinks(context.Background(), &v1.StreamBacklinksRequest{Target: "sized-700.example"})
	if err != nil {
		t.Fatal(err)
	}
	if rows, _, err := streamToEnd(st); rows != 700 || !errors.Is(err, io.EOF) {
		t.Fatalf("stream of 700 rows under the cap: %d rows, %v", rows, err)
	}
	if c := h.server.cfg.RowCap.Cap(); c != simCap {
		t.Fatalf("after a stream, the learned cap is %d, want %d", c, simCap)
	}
	r, n = list(r.GetNextPageToken())
	// The request re-reads the token's last row and asks one probe row. The
	// token stands right after a row the cap cut the page at, not at a run
	// of the order's first key (paging.Plan.aligned): its where compares
	// text, and its boundary is checked, a request more.
	if len(r.GetBacklinks()) != simCap-2 || r.GetNextPageToken() == "" || n != 2 {
		t.Fatalf("List of %d under a learned %d cap: %d rows, token %q, %d requests; want %d rows, a token, 2 requests",
			MaxPageSize, simCap, len(r.GetBacklinks()), r.GetNextPageToken(), n, simCap-2)
	}
}

// TestRowCapEstimate: once the cap is learned, EstimateCost prices pages
// of the rows the cap leaves, as the stream then runs them.
func TestRowCapEstimate(t *testing.T) {
	h := newCapHarness(t, 1000, simCap)
	ctx := context.Background()
	c := capCase{q: query{data: paging.Backlinks, p: paging.Params{Target: "sized-2500.example"}}}
	c.q.p = c.q.withIdentity().p
	h.readStream(t, c, 0, 0)
	if h.server.cfg.RowCap.Cap() != simCap {
		t.Fatalf("the stream did not teach the cap: %d", h.server.cfg.RowCap.Cap())
	}
	e, err := h.backlinks.EstimateCost(ctx, &v1.EstimateCostRequest{Rows: 2500, Request: &v1.EstimateCostRequest_Backlinks{
		Backlinks: &v1.ListBacklinksRequest{Target: c.q.p.Target, Select: c.q.p.Select}}})
	if err != nil {
		t.Fatal(err)
	}
	s := h.spent(func() { h.readStream(t, c, 0, 0) })
	// The estimate prices the probe row of the last page, which the end
	// of the data does not return.
	if e.GetStreamPageRows() != simCap-1 || e.GetPages() != s.requests || e.GetUnitsForRows() < s.units ||
		e.GetUnitsForRows()-s.units > int64(c.perRow(t)) {
		t.Errorf("estimated %d units in %d pages of %d; the stream spent %d in %d requests",
			e.GetUnitsForRows(), e.GetPages(), e.GetStreamPageRows(), s.units, s.requests)
	}
}
