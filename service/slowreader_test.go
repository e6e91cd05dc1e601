package service

import (
	"context"
	"testing"
	"time"
)

// TestSlowReaderBoundsThePager: a reader that takes one page and stalls
// leaves the pager blocked after three upstream pages (the one taken, the
// one waiting in the channel, the one it cannot hand over), however long
// the result: memory stays bounded and no units are spent ahead.
func TestSlowReaderBoundsThePager(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.sim.SetCacheTTL(-1)
	pl, err := compile(backlinksData, params{Target: "sized-100000.example"}, DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pages, wait := h.server.pager.run(ctx, fetch{plan: pl, tenant: DefaultTenant, pageRows: 500})
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
