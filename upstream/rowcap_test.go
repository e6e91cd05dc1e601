package upstream

import (
	"sync"
	"testing"
)

// TestRowCapTellsTheEndFromTheCap: a short page is the end only below the
// most rows ever served; a short page at or above it may be the cap until
// the next request says; once learned, the cap bounds every request.
func TestRowCapTellsTheEndFromTheCap(t *testing.T) {
	type step struct {
		asked, got int
		maybe      bool // what Served must report
		continued  int  // then call Continued with it (0: not)
		cap        int  // Cap afterwards
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a fresh key cannot tell a short page from the cap", []step{
			{asked: 1001, got: 300, maybe: true},
		}},
		{"rows after it: the short page was the cap", []step{
			{asked: 1001, got: 300, maybe: true, continued: 300, cap: 300},
			{asked: 300, got: 300, cap: 300},
			{asked: 300, got: 299, cap: 300},
		}},
		{"below the most ever served is the end", []step{
			{asked: 101, got: 101},
			{asked: 1001, got: 40},
			{asked: 1001, got: 100},
		}},
		{"as long as the most ever served may be the cap", []step{
			{asked: 1001, got: 300, maybe: true},
			{asked: 1001, got: 300, maybe: true},
			{asked: 1001, got: 299},
		}},
		{"a full page proves no cap up to its size", []step{
			{asked: 1001, got: 1001},
			{asked: 1001, got: 1000},
			{asked: 301, got: 300},
		}},
		{"a page larger than a suspected cap: the rows after it were new data", []step{
			{asked: 1001, got: 300, maybe: true},
			{asked: 1001, got: 500, maybe: true, continued: 300},
		}},
		{"nothing served", []step{
			{asked: 1001, got: 0},
			{asked: 10, got: 10},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c RowCap
			for i, s := range tc.steps {
				if maybe := c.Served(s.asked, s.got); maybe != s.maybe {
					t.Fatalf("step %d: %d of %d rows: may be capped %v, want %v", i, s.got, s.asked, maybe, s.maybe)
				}
				if s.continued > 0 {
					c.Continued(s.continued)
				}
				if c.Cap() != s.cap {
					t.Fatalf("step %d: cap %d, want %d", i, c.Cap(), s.cap)
				}
			}
		})
	}
}

// TestRowCapConcurrent: readings of one key share what it taught.
func TestRowCapConcurrent(t *testing.T) {
	var c RowCap
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() { c.Served(1001, 100+i) })
	}
	wg.Wait()
	if c.Served(1001, 114) || !c.Served(1001, 115) {
		t.Fatal("the most rows served is not the largest of the concurrent pages")
	}
}

// TestRowCapForgetsAPlan: what a key taught under one plan would take every
// page of a lower cap for the end of the data; forgotten, the next short
// page may be the cap again, and rows after it teach the new one.
func TestRowCapForgetsAPlan(t *testing.T) {
	for _, tc := range []struct {
		name  string
		teach func(*RowCap)
	}{
		{"a key without a cap", func(c *RowCap) { c.Served(1001, 1001) }},
		{"a learned cap of 500", func(c *RowCap) {
			c.Served(1001, 500)
			c.Continued(500)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c RowCap
			tc.teach(&c)
			if c.Served(1001, 300) {
				t.Fatal("a page of the lower cap may be capped before the plan is forgotten: the test shows nothing")
			}
			c.Forget()
			if c.Cap() != 0 {
				t.Fatalf("cap %d after Forget, want 0", c.Cap())
			}
			if !c.Served(1001, 300) {
				t.Fatal("after Forget, a page of the lower cap is taken for the end of the data")
			}
			c.Continued(300)
			if c.Cap() != 300 {
				t.Fatalf("cap %d after rows followed a page of 300, want 300", c.Cap())
			}
		})
	}
}
