package ahrefssim

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/upstream"
)

// TestRowCap: a plan's cap serves fewer rows than asked, silently: 200, the
// cost of the rows served, and no hint that more would follow. A window
// shorter than a minute scales the rate limit.
func TestRowCap(t *testing.T) {
	s := New(Config{RowCap: 250})
	w := do(t, s, blPath, vals("target", "sized-2000.example", "select", "url_from", "limit", "1000"), DefaultKey)
	if w.Code != 200 || w.Header().Get("x-api-rows") != "250" {
		t.Fatalf("code %d, x-api-rows %q; want 200 with 250 rows", w.Code, w.Header().Get("x-api-rows"))
	}
	w = do(t, s, blPath, vals("target", "sized-2000.example", "select", "url_from", "limit", "100"), DefaultKey)
	if w.Header().Get("x-api-rows") != "100" {
		t.Fatalf("below the cap: x-api-rows %q, want 100", w.Header().Get("x-api-rows"))
	}

	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := New(Config{Clock: clk, RequestsPerMinute: 2, RateWindow: time.Second})
	p := vals("target", "x.com", "select", "url_from")
	for range 2 {
		if w := do(t, r, blPath, p, DefaultKey); w.Code != 200 {
			t.Fatalf("code %d", w.Code)
		}
	}
	if w := do(t, r, blPath, p, DefaultKey); w.Code != 429 || r.RateLimited() != 1 {
		t.Fatalf("third in a window: code %d, 429s %d", w.Code, r.RateLimited())
	}
	clk.Advance(1100 * time.Millisecond)
	if w := do(t, r, blPath, p, DefaultKey); w.Code != 200 {
		t.Fatalf("after the window: code %d", w.Code)
	}
	if r.Requests() != 4 {
		t.Fatalf("Requests() = %d, want 4", r.Requests())
	}
}

// TestSetPlan: a plan changed while serving names itself in
// limits-and-usage and caps the next requests at its rows.
func TestSetPlan(t *testing.T) {
	s := New(Config{CacheTTL: -1})
	p := vals("target", "sized-2000.example", "select", "url_from", "limit", "1000")
	plan := func() (name, rows string) {
		var lu struct {
			L struct {
				Subscription string `json:"subscription"`
			} `json:"limits_and_usage"`
		}
		w := do(t, s, upstream.LimitsAndUsagePath, nil, DefaultKey)
		if err := json.Unmarshal(w.Body.Bytes(), &lu); err != nil {
			t.Fatal(err)
		}
		return lu.L.Subscription, do(t, s, blPath, p, DefaultKey).Header().Get("x-api-rows")
	}
	if name, rows := plan(); name != "Enterprise" || rows != "1000" {
		t.Fatalf("before: plan %q serving %s rows, want Enterprise serving 1000", name, rows)
	}
	s.SetPlan("Advanced", 300)
	if name, rows := plan(); name != "Advanced" || rows != "300" {
		t.Fatalf("after SetPlan: plan %q serving %s rows, want Advanced serving 300", name, rows)
	}
}

// TestFreeTargets: Ahrefs' free test targets, and URLs on them, cost no
// unit and are served at most 100 rows; other targets are charged.
func TestFreeTargets(t *testing.T) {
	s := New(Config{CacheTTL: -1})
	for _, target := range []string{"ahrefs.com", "https://yep.com/blog", "firehose.com"} {
		w := do(t, s, blPath, vals("target", target, "select", "url_from", "limit", "1000"), DefaultKey)
		if w.Code != 200 || w.Header().Get("x-api-rows") != "100" || w.Header().Get("x-api-units-cost-total-actual") != "0" {
			t.Fatalf("%s: code %d, rows %q, units %q; want 200, 100 rows, 0 units", target, w.Code,
				w.Header().Get("x-api-rows"), w.Header().Get("x-api-units-cost-total-actual"))
		}
	}
	if s.Usage() != 0 {
		t.Fatalf("usage %d after free requests, want 0", s.Usage())
	}
	w := do(t, s, blPath, vals("target", "sized-2000.example", "select", "url_from", "limit", "1000"), DefaultKey)
	if w.Header().Get("x-api-rows") != "1000" || s.Usage() != 1000 {
		t.Fatalf("a paid target: %s rows, usage %d; want 1000 and 1000", w.Header().Get("x-api-rows"), s.Usage())
	}
}
