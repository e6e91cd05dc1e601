package paging

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/linkgate/linkgate/upstream"
)

// field reads a field of a page's record by name, as the simulator's rows
// are read.
func field(pl *Plan, r upstream.Record, name string) any {
	i := slices.Index(pl.query.Select, name)
	if i < 0 {
		return nil
	}
	return r[i].Any()
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestPagingInsideRunsOfEqualKeys takes the tie-breakers away, so the sort
// key is not unique and page boundaries fall inside long runs of equal keys:
// the pager must skip exactly the rows of the run it already returned.
func TestPagingInsideRunsOfEqualKeys(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		order string
		size  int
	}{{"is_dofollow", 3}, {"is_dofollow", 50}, {"domain_rating_source:desc", 3}, {"last_seen:desc", 7}, {"last_seen:desc", 50}, {"http_code", 50}} {
		order, size := tc.order, tc.size
		{
			t.Run(fmt.Sprintf("%s/%d", order, size), func(t *testing.T) {
				pl, err := Compile(Backlinks, Params{Target: "sized-400.example", OrderBy: order, Select: []string{"url_from", "url_to"}}, tenant)
				if err != nil {
					t.Fatal(err)
				}
				pl.keys, pl.seek = pl.keys[:1], pl.seek[:1] // the caller's key only: runs of equal keys
				pl.query.OrderBy = pl.query.OrderBy[:1]
				if pl.prep, err = upstream.Prepare(pl.query); err != nil {
					t.Fatal(err)
				}
				all, err := h.sim.All(&pl.query)
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for _, r := range all {
					want = append(want, fmt.Sprint(r["url_from"])+" → "+fmt.Sprint(r["url_to"]))
				}
				var got []string
				cur, maxSkip := cursor{}, 0
				for range 1000 {
					pages, wait := h.engine.pager.run(context.Background(), fetch{plan: pl, tenant: tenant, start: cur,
						pageRows: size, maxRows: int64(size)})
					for pg := range pages {
						if pg.err != nil {
							t.Fatal(pg.err)
						}
						for _, r := range pg.rows {
							got = append(got, fmt.Sprint(field(pl, r, "url_from"))+" → "+fmt.Sprint(field(pl, r, "url_to")))
							cur = cur.after(pl.keys, r)
							maxSkip = max(maxSkip, cur.Skip)
						}
						if pg.end || (!pg.more && len(pg.rows) == 0) {
							cur = cursor{Skip: -1}
						}
					}
					wait()
					if cur.Skip == -1 {
						break
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%d rows, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
				}
				if maxSkip <= size {
					t.Errorf("no run of equal keys was longer than a page (longest %d): the test did not test runs", maxSkip)
				}
			})
		}
	}
}

// TestAfterAllIsAfterRowByRow: the cursor read from the run of equal keys
// that ends a page is the one c.after gives row by row, whatever the runs.
func TestAfterAllIsAfterRowByRow(t *testing.T) {
	keys := []sortKey{{field: &upstream.Field{Name: "a", Kind: upstream.KindInt}, col: 0},
		{field: &upstream.Field{Name: "b", Kind: upstream.KindString}, col: 1}}
	rec := func(a int64, b string) upstream.Record {
		return upstream.Record{upstream.IntValue(a), upstream.StringValue(b)}
	}
	pages := [][]upstream.Record{
		{},
		{rec(1, "x")},
		{rec(1, "x"), rec(1, "x"), rec(1, "x")},
		{rec(1, "x"), rec(2, "y"), rec(2, "y")},
		{rec(2, "y"), rec(1, "x"), rec(2, "y")},
		{rec(1, "x"), {upstream.NullValue(), upstream.StringValue("z")}, {{}, upstream.StringValue("z")}},
	}
	for _, start := range []cursor{{}, {Key: []any{int64(1), "x"}, Skip: 4}, {Key: []any{int64(2), "y"}, Skip: 1}} {
		for i, rows := range pages {
			want := start
			for _, r := range rows {
				want = want.after(keys, r)
			}
			got := start.afterAll(keys, rows)
			if got.Skip != want.Skip || !sameKey(got.Key, want.Key) {
				t.Errorf("start %v, page %d: afterAll = %v, after row by row = %v", start, i, got, want)
			}
		}
	}
}

// costByPages walks the pages one iteration at a time: the reference the
// closed form must match. Every page asks for one probe row more than it
// keeps, and the next page (or a token's) starts at that row.
func costByPages(perRow int, rows int64, size int) (units, pages int64) {
	for left := rows; left > 0; {
		want := min(int64(size), left)
		units += upstream.Units(perRow, int(want+1))
		pages++
		left -= want
	}
	return units, pages
}

func TestCostClosedFormsMatchThePages(t *testing.T) {
	for _, perRow := range []int{1, 6, 25} {
		for _, size := range []int{1, 7, 1000} {
			for _, rows := range []int64{0, 1, 2, 6, 7, 8, 49, 50, 999, 1000, 1001, 1999, 2000, 2001, 12345} {
				gu, gp := (&Plan{perRowUnits: perRow}).pagedCost(rows, size, false)
				wu, wp := costByPages(perRow, rows, size)
				if gu != wu || gp != wp {
					t.Errorf("perRow %d, rows %d, pages of %d: %d units in %d pages, want %d in %d", perRow, rows, size, gu, gp, wu, wp)
				}
			}
		}
	}
}

// TestSlowReaderBoundsThePager: a reader that takes one page and stalls
// leaves the pager blocked after three upstream pages (the one taken, the
// one waiting in the channel, the one it cannot hand over), however long
// the result: memory stays bounded and no units are spent ahead.
func TestSlowReaderBoundsThePager(t *testing.T) {
	h := newHarness(t)
	h.sim.SetCacheTTL(-1)
	pl, err := Compile(Backlinks, Params{Target: "sized-100000.example"}, tenant)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pages, wait := h.engine.pager.run(ctx, fetch{plan: pl, tenant: tenant, pageRows: 500})
	if pg := <-pages; len(pg.rows) != 500 {
		t.Fatalf("first page: %d rows, %v", len(pg.rows), pg.err)
	}
	// 6 units a row, 501 rows a page: 500 kept and the one that tells that
	// more follow, which is the first row of the next page.
	const threePages = 3 * 3006
	for h.sim.Usage() < threePages {
		time.Sleep(5 * time.Millisecond)
	}
	// Give a runaway pager the time to fetch a fourth page; it must not.
	time.Sleep(300 * time.Millisecond)
	if got := h.sim.Usage(); got != threePages {
		t.Fatalf("with the reader stalled the pager fetched %d units, want exactly three pages (%d)", got, threePages)
	}
	cancel()
	for range pages {
	}
	wait()
	if used, reserved := h.used(t); used != threePages || reserved != 0 {
		t.Fatalf("ledger used %d reserved %d after the reader left, want %d and 0", used, reserved, threePages)
	}
}

// TestFreeTargetDoesNotTeachTheKeysCap: a free target is served 100 rows a
// request, and a run over it pages at that size to the end; the key's own
// cap, which sizes the pages of every other target, stays unknown.
func TestFreeTargetDoesNotTeachTheKeysCap(t *testing.T) {
	h := newHarness(t)
	pl, err := Compile(Backlinks, Params{Target: "ahrefs.com", Select: []string{"url_from"}}, tenant)
	if err != nil {
		t.Fatal(err)
	}
	all, err := h.sim.All(&pl.query)
	if err != nil {
		t.Fatal(err)
	}
	pages, wait := h.engine.pager.run(context.Background(), fetch{plan: pl, tenant: tenant, pageRows: 1000})
	got, n := 0, 0
	for pg := range pages {
		if pg.err != nil {
			t.Fatal(pg.err)
		}
		got, n = got+len(pg.rows), n+1
	}
	wait()
	if got != len(all) || len(all) <= upstream.FreeRows {
		t.Fatalf("%d rows of %d (the free target must hold more than one request's %d)", got, len(all), upstream.FreeRows)
	}
	if want := (len(all) + upstream.FreeRows - 2) / (upstream.FreeRows - 1); n != want {
		t.Errorf("%d pages, want %d of %d rows and the probe row", n, want, upstream.FreeRows-1)
	}
	if c := h.engine.pager.caps.Cap(); c != 0 {
		t.Errorf("the key's cap was learned as %d from a free target", c)
	}
	if h.sim.Usage() != 0 {
		t.Errorf("a free target cost %d units", h.sim.Usage())
	}
}
