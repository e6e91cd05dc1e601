package paging

import (
	"context"
	"testing"
	"time"
)

// TestNewLostStreamLooksAhead: while the caller's send holds the first
// message of a new/lost stream, the merge goes on and fetches the feeds'
// next pages, as a stream of any other dataset fetches its next page.
func TestNewLostStreamLooksAhead(t *testing.T) {
	h := newHarness(t)
	h.sim.SetCacheTTL(-1)
	h.engine.cfg.UpstreamPageRows = 100
	pl, err := Compile(NewLost, Params{Target: "sized-5000.example", Since: "2020-01-01"}, tenant)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := true
	_, err = h.engine.Stream(ctx, Request{Plan: pl, Tenant: tenant, PageSize: 100}, func(c Chunk) error {
		if !first {
			cancel()
			return context.Canceled
		}
		first = false
		// Two feeds, one page each, gave the first message.
		before := h.sim.Requests()
		for deadline := time.Now().Add(10 * time.Second); h.sim.Requests() == before; {
			if time.Now().After(deadline) {
				t.Fatalf("no upstream request while the first message was being sent (%d before it): no look-ahead", before)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	})
	if first {
		t.Fatalf("no message: %v", err)
	}
}
