package upstream

import (
	"context"
	"errors"
	"fmt"
	"github.com/linkgate/linkgate/internal/clock"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

const testKey = "sk-TEST-0123456789abcdef"

// newFakeClock starts an hour in the future of the wall clock: deadlines set
// relative to it are checked by the client against the fake clock, while the
// real context timers never fire during a test. Sleeps advance it at once
// and are recorded, so tests assert the sequence of waits without sleeping.
func newFakeClock() *clock.Fake {
	return clock.NewFake(time.Now().Add(time.Hour).Truncate(time.Second))
}

// recorder is an Observer that remembers what it was told.
type recorder struct {
	mu        sync.Mutex
	retries   []time.Duration
	responses []int
}

func (r *recorder) Retry(_ context.Context, _ int, wait time.Duration, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retries = append(r.retries, wait)
}

func (r *recorder) Response(_ context.Context, _ string, status int, _ Cost, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.responses = append(r.responses, status)
}

type harness struct {
	c     *Client
	clock *clock.Fake
	obs   *recorder
	hits  *atomic.Int32
	srv   *httptest.Server
}

// newHarness serves h and returns a client on it with a fake clock, a
// deterministic jitter (the full ceiling) and a limiter generous enough not
// to interfere unless the test configures it.
func newHarness(t *testing.T, h http.HandlerFunc, mod ...func(*Config)) *harness {
	t.Helper()
	hits := new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	clk := newFakeClock()
	obs := &recorder{}
	cfg := Config{
		BaseURL:  srv.URL,
		Key:      testKey,
		Clock:    clk,
		Jitter:   func(d time.Duration) time.Duration { return d },
		Observer: obs,
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{c: c, clock: clk, obs: obs, hits: hits, srv: srv}
}

func backlinksQuery() *Query {
	return &Query{
		Endpoint: AllBacklinks,
		Target:   "example.com",
		Mode:     ModeDomain,
		Select:   []string{"url_from", "url_to", "domain_rating_source"},
		OrderBy:  []Order{{Field: "url_from"}},
		Limit:    10,
	}
}

func costHeaders(w http.ResponseWriter, rows, perRow int, actual int64, cache string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-api-rows", fmt.Sprint(rows))
	h.Set("x-api-units-cost-row", fmt.Sprint(perRow))
	h.Set("x-api-units-cost-total", fmt.Sprint(Units(perRow, rows)))
	h.Set("x-api-units-cost-total-actual", fmt.Sprint(actual))
	h.Set("x-api-cache", cache)
}

func okRows(n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		costHeaders(w, n, 3, Units(3, n), "miss")
		io.WriteString(w, `{"backlinks":[`)
		for i := range n {
			if i > 0 {
				io.WriteString(w, ",")
			}
			fmt.Fprintf(w, `{"url_from":"https://a.example/%d","url_to":"https://example.com/","domain_rating_source":%d.5}`, i, i)
		}
		io.WriteString(w, `]}`)
	}
}

// collect gathers the records of a list call on q as rows keyed by field
// name (see recordMap).
func collect(q *Query, rows *[]map[string]any) func(Record) error {
	return func(r Record) error { *rows = append(*rows, recordMap(r, q.Select)); return nil }
}

// recordMap is a record keyed by the names of its columns: absent fields
// are left out, null ones are nil.
func recordMap(r Record, names []string) map[string]any {
	row := make(map[string]any, len(r))
	for i, v := range r {
		if v.state != valueAbsent {
			row[names[i]] = v.Any()
		}
	}
	return row
}

func TestListRequestShape(t *testing.T) {
	var got *http.Request
	h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		okRows(2)(w, r)
	})
	var rows []map[string]any
	bq := backlinksQuery()
	res, err := h.c.ListRecords(context.Background(), bq, collect(bq, &rows))
	if err != nil {
		t.Fatal(err)
	}
	if got.URL.Path != "/v3/site-explorer/all-backlinks" {
		t.Errorf("path = %q", got.URL.Path)
	}
	if a := got.Header.Get("Authorization"); a != "Bearer "+testKey {
		t.Errorf("Authorization = %q", a)
	}
	if strings.Contains(got.URL.String(), testKey) {
		t.Errorf("the key is in the URL %q", got.URL)
	}
	q := got.URL.Query()
	for k, want := range map[string]string{
		"target": "example.com", "mode": "domain", "select": "url_from,url_to,domain_rating_source",
		"order_by": "url_from:asc", "limit": "10", "output": "json",
	} {
		if q.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, q.Get(k), want)
		}
	}
	if res.Rows != 2 || len(rows) != 2 || res.Attempts != 1 {
		t.Errorf("res = %+v, rows = %d", res, len(rows))
	}
	if rows[1]["url_from"] != "https://a.example/1" || rows[1]["domain_rating_source"] != 1.5 {
		t.Errorf("row = %v", rows[1])
	}
}

func TestListRejectsInvalidQueryWithoutRequest(t *testing.T) {
	h := newHarness(t, okRows(1))
	q := backlinksQuery()
	q.Select = []string{"no_such_field"}
	_, err := h.c.ListRecords(context.Background(), q, func(Record) error { return nil })
	var inv *InvalidError
	if !errors.As(err, &inv) || inv.Param != "select" {
		t.Fatalf("err = %v, want an InvalidError on select", err)
	}
	if h.hits.Load() != 0 {
		t.Errorf("%d requests sent for an invalid query", h.hits.Load())
	}
}

func TestStatusMapping(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		ctype, body string
		want        error
		message     string
		retried     bool
	}{
		{"400", 400, "application/json", `{"error":"invalid select"}`, ErrBadRequest, "invalid select", false},
		{"401", 401, "application/json", `{"error":"invalid api key"}`, ErrUnauthorized, "invalid api key", false},
		{"403", 403, "application/json", `{"error": "Insufficient plan"}`, ErrForbidden, "Insufficient plan", false},
		{"404", 404, "application/json", `{"error":"target not found"}`, ErrNotFound, "target not found", false},
		{"other 4xx", 422, "application/json", `{"error":"nope"}`, ErrBadRequest, "nope", false},
		{"429 json", 429, "application/json", `{"error":"too many requests"}`, ErrRateLimited, "too many requests", true},
		{"429 html from a CDN", 429, "text/html", "<html>\n<head><title>429 Too Many Requests</title></head>\n<body>cloudflare</body></html>", ErrRateLimited, "<html> <head><title>429 Too Many Requests</title></head> <body>cloudflare</body></html>", true},
		{"500 json", 500, "application/json", `{"error":"internal"}`, ErrUpstreamUnavailable, "internal", true},
		{"500 not json", 500, "text/plain", "upstream connect error", ErrUpstreamUnavailable, "upstream connect error", true},
		{"502 empty", 502, "text/plain", "", ErrUpstreamUnavailable, "", true},
		{"503", 503, "application/json", `{"error":"maintenance"}`, ErrUpstreamUnavailable, "maintenance", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ctype)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("err %T is not an *APIError", err)
			}
			if apiErr.Status != tt.status || apiErr.Message != tt.message {
				t.Errorf("APIError = {%d %q}, want {%d %q}", apiErr.Status, apiErr.Message, tt.status, tt.message)
			}
			wantAttempts := 1
			if tt.retried {
				wantAttempts = DefaultMaxAttempts
			}
			if int(h.hits.Load()) != wantAttempts || res.Attempts != wantAttempts {
				t.Errorf("attempts = %d (server saw %d), want %d", res.Attempts, h.hits.Load(), wantAttempts)
			}
			if res.Cost.Known {
				t.Errorf("an error without cost headers has a known cost: %+v", res.Cost)
			}
			for _, s := range []error{ErrBadRequest, ErrUnauthorized, ErrForbidden, ErrNotFound, ErrRateLimited, ErrUpstreamUnavailable} {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("err also matches %v", s)
				}
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		header func(now time.Time) string
		want   time.Duration
	}{
		{"seconds", func(time.Time) string { return "7" }, 7 * time.Second},
		{"HTTP date", func(now time.Time) string { return now.Add(30 * time.Second).UTC().Format(http.TimeFormat) }, 30 * time.Second},
		{"capped", func(time.Time) string { return "3600" }, DefaultMaxRetryAfter},
		{"date in the past falls back to backoff", func(now time.Time) string { return now.Add(-time.Minute).UTC().Format(http.TimeFormat) }, DefaultBackoffBase},
		{"garbage falls back to backoff", func(time.Time) string { return "soon" }, DefaultBackoffBase},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h *harness
			var n atomic.Int32
			h = newHarness(t, func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 {
					w.Header().Set("Retry-After", tt.header(h.clock.Now()))
					w.WriteHeader(http.StatusTooManyRequests)
					return
				}
				okRows(1)(w, r)
			})
			res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			if got := h.clock.Sleeps(); len(got) != 1 || got[0] != tt.want {
				t.Errorf("waits = %v, want [%v]", got, tt.want)
			}
			if res.Attempts != 2 {
				t.Errorf("attempts = %d", res.Attempts)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"-5":                            0,
		"2":                             2 * time.Second,
		"99999999999999999":             time.Minute,
		"Sun, 01 Mar 2026 12:00:10 GMT": 10 * time.Second,
		"Sun, 01 Mar 2026 13:00:00 GMT": time.Minute,
		"tomorrow":                      0,
	} {
		if got := parseRetryAfter(h, now, time.Minute); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", h, got, want)
		}
	}
}

// failing answers 500 for the first n requests, then rows.
func failing(n int32) http.HandlerFunc {
	var count atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		if count.Add(1) <= n {
			http.Error(w, `{"error":"internal"}`, http.StatusInternalServerError)
			return
		}
		okRows(3)(w, r)
	}
}

func TestRetryPolicy(t *testing.T) {
	t.Run("backoff doubles and then succeeds", func(t *testing.T) {
		h := newHarness(t, failing(2))
		res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		want := []time.Duration{500 * time.Millisecond, time.Second}
		if got := h.clock.Sleeps(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("waits = %v, want %v", got, want)
		}
		if fmt.Sprint(h.obs.retries) != fmt.Sprint(want) {
			t.Errorf("observer retries = %v, want %v", h.obs.retries, want)
		}
		if fmt.Sprint(h.obs.responses) != "[500 500 200]" {
			t.Errorf("observer responses = %v", h.obs.responses)
		}
		if res.Attempts != 3 || res.Rows != 3 {
			t.Errorf("res = %+v", res)
		}
	})
	t.Run("bounded attempts, capped backoff", func(t *testing.T) {
		h := newHarness(t, failing(100), func(c *Config) {
			c.MaxAttempts = 6
			c.BackoffMax = 3 * time.Second
		})
		res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
		if !errors.Is(err, ErrUpstreamUnavailable) {
			t.Fatalf("err = %v", err)
		}
		want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}
		if got := h.clock.Sleeps(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("waits = %v, want %v", got, want)
		}
		if res.Attempts != 6 || h.hits.Load() != 6 {
			t.Errorf("attempts = %d, server saw %d", res.Attempts, h.hits.Load())
		}
	})
	t.Run("full jitter draws below the ceiling", func(t *testing.T) {
		var ceilings []time.Duration
		h := newHarness(t, failing(2), func(c *Config) {
			c.Jitter = func(d time.Duration) time.Duration { ceilings = append(ceilings, d); return d / 4 }
		})
		if _, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ceilings) != "[500ms 1s]" || fmt.Sprint(h.clock.Sleeps()) != "[125ms 250ms]" {
			t.Errorf("ceilings = %v, waits = %v", ceilings, h.clock.Sleeps())
		}
	})
	t.Run("4xx is not retried", func(t *testing.T) {
		for _, status := range []int{400, 401, 403, 404} {
			h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"error":"no"}`, status)
			})
			res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
			if err == nil || res.Attempts != 1 || h.hits.Load() != 1 || len(h.clock.Sleeps()) != 0 {
				t.Errorf("%d: err = %v, attempts = %d, waits = %v", status, err, res.Attempts, h.clock.Sleeps())
			}
		}
	})
	t.Run("the deadline stops retries", func(t *testing.T) {
		h := newHarness(t, failing(100), func(c *Config) { c.MaxAttempts = 10 })
		ctx, cancel := context.WithDeadline(context.Background(), h.clock.Now().Add(1200*time.Millisecond))
		defer cancel()
		res, err := h.c.ListRecords(ctx, backlinksQuery(), func(Record) error { return nil })
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.Status != 500 {
			t.Fatalf("err = %v, want the last 500", err)
		}
		// 500ms fits, the next 1s would end at 1.5s, past the deadline.
		if got := h.clock.Sleeps(); fmt.Sprint(got) != "[500ms]" || res.Attempts != 2 {
			t.Errorf("waits = %v, attempts = %d", got, res.Attempts)
		}
	})
	t.Run("a Retry-After past the deadline is not waited for", func(t *testing.T) {
		h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
		})
		ctx, cancel := context.WithDeadline(context.Background(), h.clock.Now().Add(10*time.Second))
		defer cancel()
		_, err := h.c.ListRecords(ctx, backlinksQuery(), func(Record) error { return nil })
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.RetryAfter != 30*time.Second || !errors.Is(err, ErrRateLimited) {
			t.Fatalf("err = %#v", err)
		}
		if h.hits.Load() != 1 || len(h.clock.Sleeps()) != 0 {
			t.Errorf("hits = %d, waits = %v", h.hits.Load(), h.clock.Sleeps())
		}
	})
	t.Run("no retry once rows were emitted", func(t *testing.T) {
		h := newHarness(t, truncatedAfterRows(2))
		var rows []map[string]any
		q := backlinksQuery()
		res, err := h.c.ListRecords(context.Background(), q, collect(q, &rows))
		if !errors.Is(err, ErrUpstreamUnavailable) {
			t.Fatalf("err = %v", err)
		}
		if h.hits.Load() != 1 || res.Rows != 2 || len(rows) != 2 {
			t.Errorf("hits = %d, rows = %d/%d", h.hits.Load(), res.Rows, len(rows))
		}
		// The headers arrived: the charge must be settled by the caller.
		if !res.Cost.Known || res.Cost.Actual != 300 || res.Spent != 300 {
			t.Errorf("cost = %+v, spent = %d", res.Cost, res.Spent)
		}
	})
	t.Run("a body cut before the first row is retried and both charges count", func(t *testing.T) {
		var n atomic.Int32
		h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				truncatedAfterRows(0)(w, r)
				return
			}
			okRows(3)(w, r)
		})
		res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if res.Attempts != 2 || res.Rows != 3 || res.Spent != 300+Units(3, 3) {
			t.Errorf("res = %+v", res)
		}
	})
	t.Run("an error from fn is returned as is and not retried", func(t *testing.T) {
		h := newHarness(t, okRows(5))
		stop := errors.New("stop")
		res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return stop })
		if err != stop || res.Attempts != 1 || res.Rows != 0 || !res.Cost.Known {
			t.Errorf("err = %v, res = %+v", err, res)
		}
	})
	t.Run("cancellation is the caller's, not an outage", func(t *testing.T) {
		h := newHarness(t, failing(100))
		ctx, cancel := context.WithCancel(context.Background())
		h.c.cfg.Clock = cancelOnSleep{Clock: h.c.cfg.Clock, cancel: cancel}
		_, err := h.c.ListRecords(ctx, backlinksQuery(), func(Record) error { return nil })
		if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUpstreamUnavailable) || h.hits.Load() != 1 {
			t.Errorf("err = %v, hits = %d", err, h.hits.Load())
		}
	})
}

// truncatedAfterRows promises a long body, writes n rows and stops: the
// client sees the body end early.
func truncatedAfterRows(n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		costHeaders(w, 100, 3, 300, "miss")
		w.Header().Set("Content-Length", "100000")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"backlinks":[`)
		for i := range n {
			fmt.Fprintf(w, `{"url_from":"https://a.example/%d","url_to":"u","domain_rating_source":1},`, i)
		}
		io.WriteString(w, `{"url_from":"https://a.exa`)
	}
}

func TestTransportErrorIsRetried(t *testing.T) {
	var calls atomic.Int32
	h := newHarness(t, okRows(1), func(c *Config) {
		c.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if calls.Add(1) == 1 {
					return nil, errors.New("connection reset by peer")
				}
				return rt.RoundTrip(r)
			})
		}
	})
	res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
	if err != nil || res.Attempts != 2 || fmt.Sprint(h.clock.Sleeps()) != "[500ms]" {
		t.Errorf("err = %v, res = %+v, waits = %v", err, res, h.clock.Sleeps())
	}
	if fmt.Sprint(h.obs.responses) != "[0 200]" {
		t.Errorf("observer responses = %v", h.obs.responses)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// countingGate records the client's calls to its Gate.
type countingGate struct {
	mu        sync.Mutex
	waits     int
	throttled []time.Duration
	refuse    error
}

func (g *countingGate) Wait(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waits++
	return g.refuse
}

func (g *countingGate) Throttled(_ context.Context, d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.throttled = append(g.throttled, d)
}

func TestGate(t *testing.T) {
	t.Run("every attempt passes the gate, retries included", func(t *testing.T) {
		g := &countingGate{}
		h := newHarness(t, failing(2), func(c *Config) { c.Gate = g })
		res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if g.waits != 3 || res.Attempts != 3 || h.hits.Load() != 3 {
			t.Errorf("gate waits = %d, attempts = %d, hits = %d; want 3 each", g.waits, res.Attempts, h.hits.Load())
		}
	})
	t.Run("a 429 throttles the key with its Retry-After", func(t *testing.T) {
		g := &countingGate{}
		n := 0
		h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
			n++
			if n == 1 {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(http.StatusTooManyRequests)
				io.WriteString(w, `{"error":"slow down"}`)
				return
			}
			okRows(1)(w, r)
		}, func(c *Config) { c.Gate = g })
		if _, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(g.throttled) != "[7s]" || g.waits != 2 {
			t.Errorf("throttled = %v, waits = %d; want [7s], 2", g.throttled, g.waits)
		}
	})
	t.Run("a refusal sends nothing", func(t *testing.T) {
		refused := errors.New("queue deadline")
		g := &countingGate{refuse: refused}
		h := newHarness(t, okRows(1), func(c *Config) { c.Gate = g })
		res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
		if !errors.Is(err, refused) || res.Attempts != 0 || h.hits.Load() != 0 || res.Unanswered {
			t.Fatalf("err = %v, attempts = %d, hits = %d, unanswered = %v", err, res.Attempts, h.hits.Load(), res.Unanswered)
		}
	})
}

func TestCostHeaders(t *testing.T) {
	t.Run("all five headers", func(t *testing.T) {
		h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
			costHeaders(w, 2, 7, 0, "hit")
			io.WriteString(w, `{"backlinks":[{"url_from":"a"},{"url_from":"b"}]}`)
		})
		res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		want := Cost{Rows: 2, PerRow: 7, Total: 50, Actual: 0, Cache: "hit", Known: true}
		if res.Cost != want || res.Spent != 0 {
			t.Errorf("cost = %+v, want %+v", res.Cost, want)
		}
	})
	t.Run("missing headers fall back to the catalog price", func(t *testing.T) {
		h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"backlinks":[`+strings.Repeat(`{"url_from":"a"},`, 29)+`{"url_from":"a"}]}`)
		})
		res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		// url_from, url_to, domain_rating_source: 3 units × 30 rows.
		want := Cost{Rows: 30, PerRow: 3, Total: 90, Actual: 90, Known: true, Estimated: true}
		if res.Cost != want || res.Spent != 90 {
			t.Errorf("cost = %+v, want %+v", res.Cost, want)
		}
	})
	t.Run("only actual missing: actual = total", func(t *testing.T) {
		h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
			costHeaders(w, 0, 3, 0, "miss")
			w.Header().Del("x-api-units-cost-total-actual")
			io.WriteString(w, `{"backlinks":[]}`)
		})
		res, _ := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
		if res.Cost.Actual != 50 || !res.Cost.Estimated {
			t.Errorf("cost = %+v", res.Cost)
		}
	})
	t.Run("cost is returned when decoding fails", func(t *testing.T) {
		h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
			costHeaders(w, 2, 3, 50, "miss")
			io.WriteString(w, `{"backlinks":[{"url_from":1}]}`)
		})
		res, err := h.c.ListRecords(context.Background(), backlinksQuery(), func(Record) error { return nil })
		if !errors.Is(err, ErrUpstreamUnavailable) {
			t.Fatalf("err = %v", err)
		}
		if !res.Cost.Known || res.Cost.Actual != 50 || res.Spent != 50 || res.Attempts != 1 {
			t.Errorf("res = %+v (a malformed body is not retried: it would be charged again)", res)
		}
	})
}

// TestRowsNormalised: every kind of field is decoded into its Go type
// (dates and times in UTC), null is nil, and the members and keys the query
// does not select are skipped.
func TestRowsNormalised(t *testing.T) {
	h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"stats":{"ignored":[1,{"x":2}]},"backlinks":[{
			"url_from":"https://a.example/","http_code":200,"domain_rating_source":71,
			"is_dofollow":true,"first_seen":"2025-03-02T11:04:00Z","first_seen_link":"2025-03-02T13:04:00+02:00",
			"source_page_publish_date":"2024-12-31","languages":["en","de"],"redirect_kind":[301,302],
			"last_seen":null,"brand_new_field":3.5,"another":7}],"extra":true}`)
	})
	want := map[string]any{
		"url_from":                 "https://a.example/",
		"http_code":                int64(200),
		"domain_rating_source":     71.0,
		"is_dofollow":              true,
		"first_seen":               time.Date(2025, 3, 2, 11, 4, 0, 0, time.UTC),
		"first_seen_link":          time.Date(2025, 3, 2, 11, 4, 0, 0, time.UTC),
		"source_page_publish_date": time.Date(2024, 12, 31, 0, 0, 0, 0, time.UTC),
		"languages":                []string{"en", "de"},
		"redirect_kind":            []int64{301, 302},
		"last_seen":                nil,
	}
	q := backlinksQuery()
	q.Select = slices.Sorted(maps.Keys(want))
	var rows []map[string]any
	if _, err := h.c.ListRecords(context.Background(), q, collect(q, &rows)); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || len(rows[0]) != len(want) {
		t.Fatalf("rows = %v", rows)
	}
	for k, v := range want {
		got, ok := rows[0][k]
		if !ok || fmt.Sprintf("%T %v", got, got) != fmt.Sprintf("%T %v", v, v) {
			t.Errorf("%s = %T %v, want %T %v", k, got, got, v, v)
		}
		if tm, isTime := got.(time.Time); isTime && tm.Location() != time.UTC {
			t.Errorf("%s is not in UTC", k)
		}
	}
}

// allColumns lays records out over every field of an endpoint, so that a
// decoding test checks the kind of every field it writes.
func allColumns(s *Schema) *columns {
	c := &columns{responseKey: s.ResponseKey, index: make(map[string]int, len(s.fields))}
	for i := range s.fields {
		c.fields = append(c.fields, &s.fields[i])
		c.index[s.fields[i].Name] = i
	}
	return c
}

func TestDecodeRecordsErrors(t *testing.T) {
	cols := allColumns(MustSchema(AllBacklinks))
	tests := map[string]struct {
		body      string
		malformed bool
	}{
		"not json":             {"<html>oops</html>", true},
		"array":                {`[]`, true},
		"no key":               {`{"refdomains":[]}`, true},
		"rows not an array":    {`{"backlinks":{}}`, true},
		"row not an object":    {`{"backlinks":[1]}`, true},
		"null row":             {`{"backlinks":[null]}`, true},
		"wrong kind":           {`{"backlinks":[{"http_code":"200"}]}`, true},
		"fractional int":       {`{"backlinks":[{"http_code":2.5}]}`, true},
		"bad date":             {`{"backlinks":[{"first_seen":"yesterday"}]}`, true},
		"bad list element":     {`{"backlinks":[{"languages":["en",1]}]}`, true},
		"trailing data":        {`{"backlinks":[]} {}`, true},
		"empty body":           {``, false},
		"cut in a row":         {`{"backlinks":[{"url_from":"a`, false},
		"cut between rows":     {`{"backlinks":[{"url_from":"a"},`, false},
		"cut after the array":  {`{"backlinks":[]`, false},
		"cut in a skipped key": {`{"x":[1,2`, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := decodeRecords(strings.NewReader(tt.body), cols, func(Record) error { return nil })
			var mal *malformedError
			if err == nil || errors.As(err, &mal) != tt.malformed {
				t.Errorf("err = %v (%T), malformed want %v", err, err, tt.malformed)
			}
			if !tt.malformed && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("err = %v, want io.ErrUnexpectedEOF", err)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	c, err := New(Config{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	got := c.Config()
	if got.BaseURL != DefaultBaseURL ||
		got.MaxAttempts != 3 || got.BackoffBase != 500*time.Millisecond || got.BackoffMax != 8*time.Second ||
		got.MaxRetryAfter != time.Minute {
		t.Errorf("defaults = %v", got)
	}
	for name, cfg := range map[string]Config{
		"no key":          {},
		"key with space":  {Key: "a b"},
		"key with CRLF":   {Key: "a\r\nX-Evil: 1"},
		"relative URL":    {Key: "k", BaseURL: "api.ahrefs.com"},
		"ftp":             {Key: "k", BaseURL: "ftp://api.ahrefs.com"},
		"user info":       {Key: "k", BaseURL: "https://u:p@api.ahrefs.com"},
		"query":           {Key: "k", BaseURL: "https://api.ahrefs.com?token=x"},
		"negative tries":  {Key: "k", MaxAttempts: -1},
		"backoff min>max": {Key: "k", BackoffBase: time.Minute, BackoffMax: time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %v", name, cfg)
		} else if cfg.Key != "" && strings.Contains(err.Error(), cfg.Key) && len(cfg.Key) > 1 {
			t.Errorf("%s: error %q shows the key", name, err)
		}
	}
}

// eventSpan records the events the client adds to the caller's span.
type eventSpan struct {
	noop.Span
	mu     sync.Mutex
	events []string
}

func (s *eventSpan) IsRecording() bool { return true }

func (s *eventSpan) AddEvent(name string, _ ...trace.EventOption) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, name)
}

func TestSpanEvents(t *testing.T) {
	h := newHarness(t, failing(1))
	span := &eventSpan{}
	ctx := trace.ContextWithSpan(context.Background(), span)
	for range 2 {
		if _, err := h.c.ListRecords(ctx, backlinksQuery(), func(Record) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	// First call: 500, then a retry; the second call succeeds at once.
	want := "[ahrefs.retry]"
	if got := fmt.Sprint(span.events); got != want {
		t.Errorf("span events = %s, want %s", got, want)
	}
}

// cancelOnSleep is a clock whose Sleep cancels the call that sleeps, as
// a caller that goes away during a backoff does.
type cancelOnSleep struct {
	clock.Clock
	cancel func()
}

func (c cancelOnSleep) Sleep(context.Context, time.Duration) error {
	c.cancel()
	return context.Canceled
}
